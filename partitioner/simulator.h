#pragma once
// Discrete-event replay of a plan (§6.1), to check the closed-form predictions.
// Every stage and every link is a FIFO server that handles one message at a time;
// micro-batches circulate head -> stages -> back to the head, and prompt chunks
// flow through once. Service times come from the same CostModel as the planner's,
// so the simulator checks the pipeline algebra (R, Phi, X, the TTFT recurrence),
// not the roofline itself.

#include <span>
#include <vector>

#include "partitioner/cost_model.h"
#include "partitioner/plan.h"

namespace hearth::partitioner {

struct SimulationOptions {
  int micro_batch = 0;     // streams per micro-batch m; 0 = the plan's predicted m (1 for bare ranges)
  int prefill_chunks = 0;  // chunk count K of a candidate schedule; 0 = the plan's predicted K
                           // (for bare ranges: the schedule with the best predicted TTFT)
  int trips = 400;         // ring trips per micro-batch; the first quarter is warm-up
};

struct SimulationResult {
  double ms_per_token = 0;         // ms per token, one stream alone
  double tokens_per_s = 0;         // tokens/s over all streams, steady state
  double stream_ms_per_token = 0;  // ms between one stream's tokens under that load
  double ttft_ms = 0;              // ms from prompt arrival to first token at the head
  std::vector<double> stage_busy;  // fraction of time each stage computes under load
};

// REQUIRES: the stage ranges are valid (validate_ranges is empty).
SimulationResult simulate_plan(const CostModel& cm, std::span<const StageRange> ranges, const SimulationOptions& options = {});
SimulationResult simulate_plan(const ModelSpec& spec, std::span<const DeviceProfile> devices, const LinkTable& links,
                               const PartitionOptions& options, const PartitionPlan& plan, SimulationOptions sim = {});

}  // namespace hearth::partitioner
