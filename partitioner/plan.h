#pragma once
// The planner's output: which device runs which layers, what that is predicted to
// cost, and why devices were left out; or why no plan exists.

#include <optional>
#include <string>
#include <vector>

#include "partitioner/options.h"

namespace hearth::partitioner {

// A stage before annotation: a device and its layer range. Used for hand-written
// splits (`--split`) and inside the planner.
struct StageRange {
  int device = 0;       // index into the device list
  int first_layer = 0;  // first block, inclusive
  int last_layer = 0;   // one past the last block
};

struct StageAssignment {
  int device = 0;  // index into the device list
  std::string device_name;
  int first_layer = 0;         // inclusive
  int last_layer = 0;          // exclusive; first == last only for a thin head stage
  bool has_embedding = false;  // the first stage (head) embeds tokens
  bool has_output = false;     // the last stage runs final norm + LM head and samples
  double weight_bytes = 0;     // bytes: blocks + embedding/LM head it holds
  double kv_bytes = 0;         // bytes: KV cache for ctx tokens x streams over its blocks
  double memory_bytes = 0;     // bytes: weights + KV + scratch and message buffers
  double headroom_bytes = 0;   // bytes: usable memory left over (negative = does not fit, or paged)
  double paged_bytes = 0;      // bytes read from storage every step (paging, issue 19); 0 = all in memory
  double paged_time_s = 0;     // seconds that read takes; the step takes the longer of it and the compute
  double stage_time_s = 0;     // seconds per decode step of one stream, LM head included
  // Seconds per step of one stream's pass carrying a draft (CostModel::latency_rows() rows), 0
  // without drafts; and of Prediction::batched_rows rows, 0 when that is no more. The head's
  // drift watch judges steps of several rows against them (cluster/drift.h).
  double draft_step_time_s = 0;
  double batched_step_time_s = 0;
  double compute_time_s = 0;   // of which the compute (and fixed overhead): the step if nothing were paged
  double hop_time_s = 0;       // seconds to send one token's output on (or back to the head)
  bool compressed_hop = false;  // its output hop carries compressed activations (wire type auto, slow link)
  // The device's GPU: the stage's first gpu_layers blocks run there (their weights copied to it,
  // gpu_weight_bytes with the LM head's when gpu_output), the rest on its CPU. 0: none.
  int gpu_layers = 0;
  bool gpu_output = false;
  double gpu_weight_bytes = 0;
};

struct Prediction {
  double ms_per_token = 0;         // ms per token for one stream decoding alone (ring trip R(1))
  double tokens_per_s = 0;         // tokens/s over all `streams` streams at the best micro-batch
  double stream_ms_per_token = 0;  // ms between tokens of one stream at that load
  int micro_batch = 1;             // streams per micro-batch m behind tokens_per_s
  double period_ms = 0;            // ms, pipeline period Phi(m): the busiest stage or link
  int bottleneck_stage = -1;       // stage whose compute sets period_ms; -1 = a link does
  double ttft_ms = 0;              // ms from prompt arrival at the head to its first token
  int prefill_chunks = 1;          // prompt chunks K behind ttft_ms
  // With drafts (PartitionOptions::draft_tokens): ms of one stream's pass carrying a draft, and
  // that per token at PartitionOptions::tokens_per_pass (0: no drafts, or not known).
  double draft_pass_ms = 0;
  double draft_ms_per_token = 0;
  // Rows of a decode step with every stream decoding (CostModel::batched_rows).
  int batched_rows = 1;
};

struct PartitionPlan {
  std::vector<StageAssignment> stages;  // in pipeline order; stages[0] is on the head
  Prediction predicted;
  std::vector<std::string> left_out_reasons;  // one line per device that holds no stage
  Objective objective = Objective::latency;
  Algorithm algorithm = Algorithm::dp;
  bool exact = true;  // false when dp used its fast path and the optimum is not guaranteed
};

enum class Infeasibility {
  invalid_input,        // empty device list, non-positive sizes or rates
  insufficient_memory,  // no split fits the devices' memory
  too_large,            // the instance is too big for the exhaustive algorithm
};

struct Infeasible {
  Infeasibility kind = Infeasibility::invalid_input;
  std::string message;       // one sentence for the user, with byte counts where relevant
  double missing_bytes = 0;  // bytes short, when kind == insufficient_memory and it is known
};

// Either a plan or the reason there is none (no exceptions for expected failures).
struct PlanResult {
  std::optional<PartitionPlan> plan;
  Infeasible error;  // meaningful only when !plan
  bool ok() const { return plan.has_value(); }
};

}  // namespace hearth::partitioner
