#pragma once
// Closed-form pipeline metrics of a stage sequence (docs/partitioner.md §3):
// ring time R(m) and period Phi(m) of the decode pipeline, throughput X(m), and
// the chunked-prefill flow-shop recurrence behind TTFT. Shared by the DP, the
// baselines and evaluate_plan(), so every algorithm is judged by the same numbers.

#include <limits>
#include <span>

#include "partitioner/cost_model.h"
#include "partitioner/plan.h"

namespace hearth::partitioner {

struct RingTimes {
  double ring_s = 0;          // R(m): one micro-batch's trip through every stage and hop, seconds
  double period_s = 0;        // Phi(m): busiest stage or link per micro-batch, seconds
  int bottleneck_stage = -1;  // stage that sets period_s, -1 when a link does
};

// R(m) and Phi(m) for micro-batch m = micro_batches()[mi] (§4.5, §4.6).
RingTimes ring_times(const CostModel& cm, std::span<const StageRange> stages, int mi);

struct ThroughputPoint {
  double tokens_per_s = 0;        // over all streams
  double stream_s_per_token = 0;  // seconds between one stream's tokens: max(R, G x Phi) / tokens per pass
  int micro_batch = 1;            // streams per micro-batch, s
  RingTimes ring;                 // at m
};

// Best X(m) = t x min(B / R(m), B / (G x Phi(m))), G = ceil(B / s), over the candidate
// micro-batches (§4.6) of s streams' passes, m = s x latency_rows() rows, each pass giving a
// stream t = PartitionOptions::tokens_per_pass tokens (1 without drafts, or when not known);
// ties go to the smaller m.
ThroughputPoint best_throughput(const CostModel& cm, std::span<const StageRange> stages);

// ---- chunked prefill (§4.7): every stage and every link serves chunks in order ----
// Completion times of the chunks of `schedule` on the head stage over blocks [0, last).
void prefill_head(const CostModel& cm, int schedule, int head, int last, std::span<double> done);
// Arrival times at device `to`, whose stage starts at block `boundary`, after the link from
// `from`, given completions upstream.
void prefill_hop(const CostModel& cm, int schedule, int from, int to, int boundary, std::span<const double> done,
                 std::span<double> arrived);
// Completion times on device `to` over blocks [first, last), given arrival times.
void prefill_stage(const CostModel& cm, int schedule, int to, int first, int last, std::span<const double> arrived,
                   std::span<double> done);
// From the last chunk's completion to the first token at the head: LM head + return hop. The
// last stage starts at block `first` (whether its GPU holds the LM head depends on its blocks).
inline double ttft_tail(const CostModel& cm, int last_device, int first, int head) {
  return cm.stage_output_time(last_device, first, 1) + cm.hop_time(last_device, head, kTokenIdBytes);
}

// TTFT in seconds for one chunk schedule.
double ttft_seconds(const CostModel& cm, std::span<const StageRange> stages, int schedule);

struct TtftPoint {
  double seconds = std::numeric_limits<double>::infinity();
  int schedule = 0;  // index into chunk_schedules()
};
TtftPoint best_ttft(const CostModel& cm, std::span<const StageRange> stages);

// All predicted figures for a stage sequence.
Prediction predict(const CostModel& cm, std::span<const StageRange> stages);

// Lower is better, compared lexicographically: latency (R(1), 0); throughput
// (-tokens/s, R(1)); ttft (TTFT, R(1)). The second figure breaks ties.
struct PlanScore {
  double primary = std::numeric_limits<double>::infinity();
  double secondary = std::numeric_limits<double>::infinity();
};
PlanScore score(const CostModel& cm, std::span<const StageRange> stages, Objective objective);
inline bool better(const PlanScore& a, const PlanScore& b) {
  return a.primary < b.primary || (a.primary == b.primary && a.secondary < b.secondary);
}

}  // namespace hearth::partitioner
