#include "partitioner/simulator.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <queue>
#include <tuple>

#include "partitioner/evaluate.h"
#include "partitioner/metrics.h"

namespace hearth::partitioner {

namespace {

// A job visits stations 0..n-1 in order, `passes` times, taking service[s] at station s.
struct Job {
  std::vector<double> service;  // seconds per station
  int passes = 1;
};

struct Trace {
  std::vector<std::vector<double>> pass_done;  // per job: time each pass completed
  std::vector<double> busy;                    // per station: seconds spent serving
  double end = 0;                              // seconds: last completion
};

// Event-driven ring of FIFO servers. All jobs are queued at station 0 at time 0 in
// index order; simultaneous events run in the order they were scheduled.
Trace run_ring(int n_stations, const std::vector<Job>& jobs) {
  using Completion = std::tuple<double, long, int, int>;  // time, sequence, job, station
  std::priority_queue<Completion, std::vector<Completion>, std::greater<>> completions;
  std::vector<std::deque<int>> waiting(n_stations);
  std::vector<char> serving(n_stations, 0);
  std::vector<int> passes_left(jobs.size());
  Trace trace;
  trace.pass_done.resize(jobs.size());
  trace.busy.assign(n_stations, 0.0);
  long sequence = 0;
  auto start_next = [&](int s, double now) {
    if (serving[s] || waiting[s].empty()) return;
    const int j = waiting[s].front();
    waiting[s].pop_front();
    serving[s] = 1;
    trace.busy[s] += jobs[j].service[s];
    completions.emplace(now + jobs[j].service[s], sequence++, j, s);
  };
  for (size_t j = 0; j < jobs.size(); ++j) {
    passes_left[j] = jobs[j].passes;
    waiting[0].push_back(static_cast<int>(j));
  }
  start_next(0, 0.0);
  while (!completions.empty()) {
    const auto [now, seq, j, s] = completions.top();
    completions.pop();
    serving[s] = 0;
    trace.end = now;
    const bool wraps = s + 1 == n_stations;
    const int next = wraps ? 0 : s + 1;
    if (wraps) trace.pass_done[j].push_back(now);
    const bool moves_on = !wraps || --passes_left[j] > 0;
    if (moves_on) waiting[next].push_back(j);
    start_next(s, now);
    if (moves_on) start_next(next, now);
  }
  return trace;
}

// Stations: 2s = compute of stage s, 2s + 1 = its outgoing link (the last one back to the head).
Job decode_job(const CostModel& cm, std::span<const StageRange> r, int m, int passes) {
  Job job;
  job.passes = passes;
  const int n = static_cast<int>(r.size());
  for (int s = 0; s < n; ++s) {
    const bool last = s + 1 == n;
    job.service.push_back(cm.decode_time(r[s].device, r[s].first_layer, r[s].last_layer, last, m));
    job.service.push_back(last ? cm.hop_time(r[s].device, r[0].device, m * kTokenIdBytes)
                               : cm.activation_hop_time(r[s].device, r[s + 1].device, m, r[s + 1].first_layer));
  }
  return job;
}

// Chunk k of a prompt; the last chunk also runs the LM head and returns the token.
Job prefill_job(const CostModel& cm, std::span<const StageRange> r, int schedule, int k) {
  const std::vector<PromptChunk>& chunks = cm.chunk_schedules()[schedule];
  const bool final_chunk = k + 1 == static_cast<int>(chunks.size());
  Job job;
  const int n = static_cast<int>(r.size());
  for (int s = 0; s < n; ++s) {
    const bool last = s + 1 == n;
    double t = cm.prefill_time(r[s].device, r[s].first_layer, r[s].last_layer, schedule, k);
    if (last && final_chunk) t += cm.stage_output_time(r[s].device, r[s].first_layer, 1);
    job.service.push_back(t);
    const double hop = last ? cm.hop_time(r[s].device, r[0].device, kTokenIdBytes)
                            : cm.activation_hop_time(r[s].device, r[s + 1].device, chunks[k].tokens, r[s + 1].first_layer);
    // Only the final chunk's token goes back to the head; earlier chunks leave the ring.
    job.service.push_back(last && !final_chunk ? 0.0 : hop);
  }
  return job;
}

// Schedule with k chunks, or the one with the best predicted TTFT when k matches none.
int schedule_with_chunks(const CostModel& cm, std::span<const StageRange> ranges, int k) {
  for (size_t s = 0; s < cm.chunk_schedules().size(); ++s)
    if (static_cast<int>(cm.chunk_schedules()[s].size()) == k) return static_cast<int>(s);
  return best_ttft(cm, ranges).schedule;
}

}  // namespace

SimulationResult simulate_plan(const CostModel& cm, std::span<const StageRange> ranges, const SimulationOptions& options) {
  SimulationResult out;
  const int n_stations = 2 * static_cast<int>(ranges.size());
  const int trips = std::max(8, options.trips);

  // One stream alone: a few trips of a single micro-batch of one.
  const Trace alone = run_ring(n_stations, {decode_job(cm, ranges, 1, 4)});
  out.ms_per_token = (alone.pass_done[0][3] - alone.pass_done[0][2]) * 1e3;

  // All streams in G micro-batches of m (the last one may be smaller), each stream's pass
  // latency_rows() rows that give it tokens_per_pass tokens (1 without drafts, or not known).
  const int b = cm.options().streams;
  const int m = std::clamp(options.micro_batch > 0 ? options.micro_batch : 1, 1, b);
  const double per_pass = cm.options().tokens_per_pass > 0 ? cm.options().tokens_per_pass : 1.0;
  std::vector<Job> jobs;
  for (int left = b; left > 0; left -= m) jobs.push_back(decode_job(cm, ranges, std::min(m, left) * cm.latency_rows(), trips));
  const Trace load = run_ring(n_stations, jobs);
  const int p0 = trips / 4, p1 = trips - 1;
  const double window = load.pass_done[0][p1] - load.pass_done[0][p0];
  out.tokens_per_s = per_pass * b * double(p1 - p0) / window;
  out.stream_ms_per_token = window / (p1 - p0) * 1e3 / per_pass;
  for (int s = 0; s < n_stations; s += 2) out.stage_busy.push_back(load.busy[s] / load.end);

  // The prompt, chunk by chunk.
  const int schedule = schedule_with_chunks(cm, ranges, options.prefill_chunks);
  std::vector<Job> chunks;
  for (int k = 0; k < static_cast<int>(cm.chunk_schedules()[schedule].size()); ++k)
    chunks.push_back(prefill_job(cm, ranges, schedule, k));
  const Trace prompt = run_ring(n_stations, chunks);
  out.ttft_ms = prompt.pass_done.back().back() * 1e3;
  return out;
}

SimulationResult simulate_plan(const ModelSpec& spec, std::span<const DeviceProfile> devices, const LinkTable& links,
                               const PartitionOptions& options, const PartitionPlan& plan, SimulationOptions sim) {
  if (sim.micro_batch == 0) sim.micro_batch = plan.predicted.micro_batch;
  if (sim.prefill_chunks == 0) sim.prefill_chunks = plan.predicted.prefill_chunks;
  return simulate_plan(CostModel(spec, devices, links, options), ranges_of(plan), sim);
}

}  // namespace hearth::partitioner
