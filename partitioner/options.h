#pragma once
// What to optimise and under which workload: the knobs of plan_partition().

#include <optional>
#include <string_view>

namespace hearth::partitioner {

enum class Objective {
  latency,     // one stream's time per token around the ring (§4.5)
  throughput,  // tokens/s summed over `streams` concurrent streams (§4.6)
  ttft,        // time to first token for a `prompt_tokens` prompt (§4.7)
};

enum class Algorithm {
  dp,          // exact DP over device subsets, orders and splits (fast path when large)
  exhaustive,  // brute force over every plan; small instances only
  memory,      // all devices in the given order, layers in proportion to usable memory
  equal,       // all devices in the given order, equal layer counts
};

struct PartitionOptions {
  Objective objective = Objective::latency;
  Algorithm algorithm = Algorithm::dp;
  int ctx = 4096;                        // tokens of KV cache reserved per stream
  int decode_ctx = 0;                    // tokens of context assumed when timing decode; 0 = ctx / 2
  int streams = 1;                       // concurrent streams B; every stage keeps KV for all of them
  int max_batch = 256;                   // tokens per step: a sliding-window layer's ring holds window + max_batch
  int prompt_tokens = 512;               // prompt length P for ttft
  int prefill_chunk = 0;                 // tokens per prefill chunk; 0 = best of 1..16 equal-FLOP chunks
  double kv_bytes_per_elem = 2;          // bytes per cached K/V element (f16 = 2, q8_0 = 34/32)
  double activation_bytes_per_elem = 4;  // bytes per hidden-state element on the wire (f32)
  // Wire type `auto`: hops over links slower than this (bytes/s) carry activations at
  // compressed_bytes_per_elem instead (f16); 0 = every hop at activation_bytes_per_elem.
  double compress_below_bytes_per_s = 0;
  double compressed_bytes_per_elem = 2;
  double exact_work_limit = 2e9;         // estimated DP relaxations before dp switches to its fast path
  // Devices whose profile has a storage read rate may hold more weights than their memory and
  // read the rest from storage every step (issue 19), when that is faster or nothing else fits.
  bool allow_paging = true;
  // The launch drafts (speculative decoding): a recurrent layer keeps its state twice per stream,
  // the second being the checkpoint before a draft.
  bool drafts = false;
  // Speculative decoding's passes carry a draft of this many tokens behind their token (0: none):
  // the latency objective then minimises the time of a pass of draft_tokens + 1 rows, which costs
  // compute-bound devices more than memory-bound ones. A pass gives tokens_per_pass tokens on
  // average (1 + the accepted part; 0: not known), which only the prediction uses.
  int draft_tokens = 0;
  double tokens_per_pass = 0;
};

std::string_view to_string(Objective objective);
std::string_view to_string(Algorithm algorithm);
std::optional<Objective> objective_from_string(std::string_view text);
std::optional<Algorithm> algorithm_from_string(std::string_view text);

}  // namespace hearth::partitioner
