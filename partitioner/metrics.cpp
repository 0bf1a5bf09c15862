#include "partitioner/metrics.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace hearth::partitioner {

RingTimes ring_times(const CostModel& cm, std::span<const StageRange> stages, int mi) {
  const int m = cm.micro_batches()[mi];
  const int n = static_cast<int>(stages.size());
  const int head = stages[0].device;
  RingTimes r;
  double period_link = 0;
  for (int s = 0; s < n; ++s) {
    const StageRange& st = stages[s];
    const bool is_last = s == n - 1;
    // Same summation order as the DP (stage, then hop + next stage) so values match bit for bit.
    const double hop = s == 0 ? 0.0 : cm.activation_hop_time(stages[s - 1].device, st.device, m, st.first_layer);
    const double t = cm.decode_time_at(mi, st.device, st.first_layer, st.last_layer, is_last);
    r.ring_s = s == 0 ? t : r.ring_s + hop + t;
    period_link = std::max(period_link, hop);
    if (t > r.period_s) {
      r.period_s = t;
      r.bottleneck_stage = s;
    }
  }
  const double back = cm.hop_time(stages[n - 1].device, head, m * kTokenIdBytes);
  r.ring_s += back;
  period_link = std::max(period_link, back);
  if (period_link > r.period_s) {
    r.period_s = period_link;
    r.bottleneck_stage = -1;
  }
  return r;
}

ThroughputPoint best_throughput(const CostModel& cm, std::span<const StageRange> stages) {
  const double b = std::max(1, cm.options().streams);
  // A drafting pass gives each stream tokens_per_pass tokens (1 when not known: passes).
  const double per_pass = cm.options().tokens_per_pass > 0 ? cm.options().tokens_per_pass : 1.0;
  ThroughputPoint best;
  best.tokens_per_s = -1;
  for (int mi = 0; mi < static_cast<int>(cm.micro_batches().size()); ++mi) {
    const int s = cm.throughput_streams(mi);
    if (s == 0) continue;
    const double g = std::ceil(b / s);
    const RingTimes r = ring_times(cm, stages, mi);
    const double x = per_pass * std::min(b / r.ring_s, b / (g * r.period_s));
    if (x > best.tokens_per_s) {
      best = {x, std::max(r.ring_s, g * r.period_s) / per_pass, s, r};
    }
  }
  return best;
}

void prefill_head(const CostModel& cm, int schedule, int head, int last, std::span<double> done) {
  double t = 0;
  for (size_t k = 0; k < done.size(); ++k) {
    t += cm.prefill_time(head, 0, last, schedule, static_cast<int>(k));
    done[k] = t;
  }
}

void prefill_hop(const CostModel& cm, int schedule, int from, int to, int boundary, std::span<const double> done,
                 std::span<double> arrived) {
  const std::vector<PromptChunk>& chunks = cm.chunk_schedules()[schedule];
  double link_free = 0;
  for (size_t k = 0; k < done.size(); ++k) {
    link_free = std::max(done[k], link_free) + cm.activation_hop_time(from, to, chunks[k].tokens, boundary);
    arrived[k] = link_free;
  }
}

void prefill_stage(const CostModel& cm, int schedule, int to, int first, int last, std::span<const double> arrived,
                   std::span<double> done) {
  double stage_free = 0;
  for (size_t k = 0; k < arrived.size(); ++k) {
    stage_free = std::max(arrived[k], stage_free) + cm.prefill_time(to, first, last, schedule, static_cast<int>(k));
    done[k] = stage_free;
  }
}

double ttft_seconds(const CostModel& cm, std::span<const StageRange> stages, int schedule) {
  const size_t k = cm.chunk_schedules()[schedule].size();
  std::vector<double> done(k), arrived(k);
  const int head = stages[0].device;
  prefill_head(cm, schedule, head, stages[0].last_layer, done);
  for (size_t s = 1; s < stages.size(); ++s) {
    prefill_hop(cm, schedule, stages[s - 1].device, stages[s].device, stages[s].first_layer, done, arrived);
    prefill_stage(cm, schedule, stages[s].device, stages[s].first_layer, stages[s].last_layer, arrived, done);
  }
  return done.back() + ttft_tail(cm, stages.back().device, stages.back().first_layer, head);
}

TtftPoint best_ttft(const CostModel& cm, std::span<const StageRange> stages) {
  TtftPoint best;
  for (int s = 0; s < static_cast<int>(cm.chunk_schedules().size()); ++s) {
    const double t = ttft_seconds(cm, stages, s);
    if (t < best.seconds) best = {t, s};
  }
  return best;
}

Prediction predict(const CostModel& cm, std::span<const StageRange> stages) {
  Prediction p;
  p.ms_per_token = ring_times(cm, stages, cm.micro_batch_index(1)).ring_s * 1e3;
  const ThroughputPoint x = best_throughput(cm, stages);
  p.tokens_per_s = x.tokens_per_s;
  p.stream_ms_per_token = x.stream_s_per_token * 1e3;
  p.micro_batch = x.micro_batch;
  p.period_ms = x.ring.period_s * 1e3;
  p.bottleneck_stage = x.ring.bottleneck_stage;
  const TtftPoint t = best_ttft(cm, stages);
  p.ttft_ms = t.seconds * 1e3;
  p.prefill_chunks = static_cast<int>(cm.chunk_schedules()[t.schedule].size());
  p.batched_rows = cm.batched_rows(static_cast<int>(stages.size()));
  if (cm.latency_rows() > 1) {
    p.draft_pass_ms = ring_times(cm, stages, cm.micro_batch_index(cm.latency_rows())).ring_s * 1e3;
    if (cm.options().tokens_per_pass > 0) p.draft_ms_per_token = p.draft_pass_ms / cm.options().tokens_per_pass;
  }
  return p;
}

PlanScore score(const CostModel& cm, std::span<const StageRange> stages, Objective objective) {
  const double ring = ring_times(cm, stages, cm.micro_batch_index(cm.latency_rows())).ring_s;
  switch (objective) {
    case Objective::latency: return {ring, 0.0};
    case Objective::throughput: return {-best_throughput(cm, stages).tokens_per_s, ring};
    case Objective::ttft: return {best_ttft(cm, stages).seconds, ring};
  }
  return {};
}

}  // namespace hearth::partitioner
