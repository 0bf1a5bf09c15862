#include "partitioner/explain.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>

#include "partitioner/metrics.h"

namespace hearth::partitioner {

namespace {

std::string printf_string(const char* format, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, format, value);
  return buffer;
}

std::string quoted(const CostModel& cm, int d) { return "'" + cm.devices()[d].name + "'"; }

// Seconds per block of device d in one stream's decode pass (its token, and a draft's tokens
// when the launch drafts), averaged over the model.
double block_time(const CostModel& cm, int d) {
  const int n = cm.n_layers();
  return (cm.decode_time(d, 0, n, false, cm.latency_rows()) - cm.devices()[d].step_overhead_s) / n;
}

// Blocks device d can hold as a middle stage (no embedding, no LM head).
int block_capacity(const CostModel& cm, int d) {
  int j = 0;
  while (j < cm.n_layers() && cm.fits(d, 0, j + 1, false, false)) ++j;
  return j;
}

// Extra seconds per pass of inserting device d, with no blocks yet, at the cheapest place in
// the ring: two hops replace one, and d pays its step overhead. Rows are priced at their
// narrowest (no per-layer inputs left): a lower bound. A pass carries one token, or a draft's
// tokens behind it.
double insertion_cost(const CostModel& cm, std::span<const StageRange> ranges, int d) {
  double best = std::numeric_limits<double>::infinity();
  const double rows = cm.latency_rows();
  for (size_t s = 0; s < ranges.size(); ++s) {
    const int u = ranges[s].device;
    const bool to_head = s + 1 == ranges.size();
    const int v = to_head ? ranges[0].device : ranges[s + 1].device;
    // Out of a stage: one token's activations, or its id back to the head.
    const auto out = [&](int from, int to) {
      return to_head ? cm.hop_time(from, to, kTokenIdBytes) : cm.activation_hop_time(from, to, rows, cm.n_layers());
    };
    const double added = cm.activation_hop_time(u, d, rows, cm.n_layers()) + out(d, v) - out(u, v);
    best = std::min(best, added);
  }
  return best + cm.devices()[d].step_overhead_s;
}

std::string baseline_reason(const CostModel& cm, int d) {
  const std::string what = cm.options().algorithm == Algorithm::memory ? "memory-proportional" : "equal";
  return quoted(cm, d) + ": the " + what + " split gives it no blocks";
}

std::string searched_reason(const CostModel& cm, std::span<const StageRange> ranges, int d) {
  const int capacity = block_capacity(cm, d);
  if (capacity == 0) {
    const double need = cm.memory(d, 0, 1, false, false).total();
    return quoted(cm, d) + ": too little memory for one block (needs " + format_bytes(need) + ", has " +
           format_bytes(cm.devices()[d].usable_memory_bytes) + " usable)";
  }
  double slowest = 0;
  for (const StageRange& r : ranges)
    if (r.last_layer > r.first_layer) slowest = std::max(slowest, block_time(cm, r.device));
  const double own = block_time(cm, d);
  const double cost = insertion_cost(cm, ranges, d);
  const double saving = std::min(capacity, cm.n_layers()) * std::max(0.0, slowest - own);
  const std::string facts =
      " (its blocks take " + format_ms(own) + " each, the slowest used device's " + format_ms(slowest) + ")";
  // For latency (a pure sum) this bound proves the device useless; for the other
  // objectives only the search itself does.
  if (cm.options().objective == Objective::latency && saving <= cost)
    return quoted(cm, d) + ": joining costs at least " + format_ms(cost) + (cm.latency_rows() > 1 ? " per pass" : " per token") +
           " in hops and step overhead, more than the at most " + format_ms(saving) + " its blocks could save" + facts;
  return quoted(cm, d) + ": no plan using it predicts a better " + std::string(to_string(cm.options().objective)) + facts;
}

}  // namespace

std::string format_bytes(double bytes) {
  const double a = std::fabs(bytes);
  if (a >= 1e9) return printf_string("%.1f GB", bytes / 1e9);
  if (a >= 1e6) return printf_string("%.1f MB", bytes / 1e6);
  if (a >= 1e3) return printf_string("%.1f kB", bytes / 1e3);
  return printf_string("%.0f B", bytes);
}

std::string format_ms(double seconds) { return printf_string("%.1f ms", seconds * 1e3); }

Infeasible diagnose_infeasible(const CostModel& cm) {
  const int n = cm.n_layers();
  const int head = 0;
  const MemoryUse whole = cm.memory(head, 0, n, true, true);
  // Everything the model needs, against every device's RAM and graphics card (a unified GPU's
  // memory is its RAM, already counted).
  const double need = whole.weight_bytes + whole.kv_bytes + whole.work_bytes;
  double offer = 0;
  bool cards = false;
  for (const DeviceProfile& d : cm.devices()) {
    offer += d.usable_memory_bytes;
    if (d.gpu && !d.gpu->unified_memory) {
      offer += d.gpu->memory_bytes;
      cards = true;
    }
  }
  Infeasible e;
  e.kind = Infeasibility::insufficient_memory;
  if (offer < need) {
    e.missing_bytes = need - offer;
    const PartitionOptions& o = cm.options();
    e.message = "model needs " + format_bytes(need) + " (weights " + format_bytes(whole.weight_bytes) + ", KV cache " +
                format_bytes(whole.kv_bytes) + " for " + std::to_string(o.streams) + " stream(s) x " + std::to_string(o.ctx) +
                " tokens, buffers " + format_bytes(whole.work_bytes) + "), the " + std::to_string(cm.n_devices()) +
                " device(s) offer " + format_bytes(offer) + " usable" + (cards ? " (graphics cards included)" : "") + ": " +
                format_bytes(e.missing_bytes) + " missing";
    return e;
  }
  const MemoryUse thin = cm.memory(head, 0, 0, true, false);
  if (thin.total() > cm.devices()[head].usable_memory_bytes) {
    e.missing_bytes = thin.total() - cm.devices()[head].usable_memory_bytes;
    e.message = "the head " + quoted(cm, head) + " cannot hold the embedding table and buffers: needs " +
                format_bytes(thin.total()) + ", has " + format_bytes(cm.devices()[head].usable_memory_bytes) +
                " usable: " + format_bytes(e.missing_bytes) + " missing";
    return e;
  }
  // Greedy fill, head first then the roomiest devices: what is left over is what's missing.
  int start = 0;
  while (start < n && cm.fits(head, 0, start + 1, true, false)) ++start;
  std::vector<int> others(cm.n_devices() - 1);
  std::iota(others.begin(), others.end(), 1);
  std::stable_sort(others.begin(), others.end(),
                   [&](int a, int b) { return cm.devices()[a].usable_memory_bytes > cm.devices()[b].usable_memory_bytes; });
  for (int d : others) {
    if (start < n && cm.fits(d, start, n, false, true)) start = n;
    while (start < n && cm.fits(d, start, start + 1, false, false)) ++start;
  }
  const MemoryUse rest = cm.memory(head, start, n, false, true);
  e.missing_bytes = rest.total();
  e.message = "no split fits: after filling every device, blocks " + std::to_string(start) + "-" + std::to_string(n - 1) +
              " and the LM head find no room: about " + format_bytes(rest.total()) +
              " missing (each stage also needs its own scratch buffers)";
  return e;
}

std::vector<Infeasible> memory_overflows(const CostModel& cm, std::span<const StageRange> ranges, std::string_view what) {
  std::vector<Infeasible> out;
  for (size_t s = 0; s < ranges.size(); ++s) {
    const StageRange& r = ranges[s];
    const double need = cm.memory(r.device, r.first_layer, r.last_layer, s == 0, s + 1 == ranges.size()).total();
    const double have = cm.devices()[r.device].usable_memory_bytes;
    if (need <= have || cm.fits(r.device, r.first_layer, r.last_layer, s == 0, s + 1 == ranges.size())) continue;  // or it pages
    Infeasible e;
    e.kind = Infeasibility::insufficient_memory;
    e.missing_bytes = need - have;
    e.message = "the " + std::string(what) + " puts " + format_bytes(need) + " on " + quoted(cm, r.device) + " (stage " +
                std::to_string(s) + "), which has " + format_bytes(have) + " usable: " + format_bytes(e.missing_bytes) +
                " missing";
    out.push_back(e);
  }
  return out;
}

std::vector<std::string> left_out_reasons(const CostModel& cm, std::span<const StageRange> ranges) {
  std::vector<char> used(cm.n_devices(), 0);
  for (const StageRange& r : ranges) used[r.device] = 1;
  const bool baseline = cm.options().algorithm == Algorithm::memory || cm.options().algorithm == Algorithm::equal;
  std::vector<std::string> reasons;
  for (int d = 0; d < cm.n_devices(); ++d) {
    if (used[d]) continue;
    reasons.push_back(baseline ? baseline_reason(cm, d) : searched_reason(cm, ranges, d));
  }
  return reasons;
}

namespace {

// "GPU: blocks 0-19 + LM head (3.9 GB), CPU: blocks 20-31" for a stage a GPU shares.
std::string gpu_share(const StageAssignment& a) {
  const int split = a.first_layer + a.gpu_layers;
  std::string on_gpu = a.gpu_layers > 0 ? "blocks " + std::to_string(a.first_layer) + "-" + std::to_string(split - 1) : "";
  if (a.gpu_output) on_gpu += on_gpu.empty() ? "LM head" : " + LM head";
  std::string text = "GPU: " + on_gpu + " (" + format_bytes(a.gpu_weight_bytes) + ")";
  if (split < a.last_layer) text += ", CPU: blocks " + std::to_string(split) + "-" + std::to_string(a.last_layer - 1);
  return text;
}

}  // namespace

std::vector<std::string> describe_plan(const PartitionPlan& plan) {
  std::vector<std::string> lines;
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    const StageAssignment& a = plan.stages[s];
    std::string line = "stage " + std::to_string(s) + ": " + a.device_name + ", blocks " + std::to_string(a.first_layer) + "-" +
                       std::to_string(a.last_layer - 1) + " (" + std::to_string(a.last_layer - a.first_layer) + ")";
    if (a.last_layer == a.first_layer) line = "stage " + std::to_string(s) + ": " + a.device_name + ", no blocks";
    if (a.has_embedding) line += " + embedding";
    if (a.has_output) line += " + LM head";
    if (a.gpu_layers > 0 || a.gpu_output) line += "; " + gpu_share(a);
    if (a.paged_bytes > 0)
      line += "; memory " + format_bytes(a.memory_bytes) + ", " + format_bytes(a.paged_bytes) +
              " of its layers read from storage every step (" + format_ms(a.paged_time_s) + ", behind the compute)";
    else
      line += "; memory " + format_bytes(a.memory_bytes) + " (" + format_bytes(a.headroom_bytes) + " free)";
    line += "; step " + format_ms(a.stage_time_s) + ", hop " + format_ms(a.hop_time_s);
    if (a.compressed_hop) line += " (slow link: activations compressed)";
    if (static_cast<int>(s) == plan.predicted.bottleneck_stage) line += "  <- bottleneck";
    lines.push_back(line);
  }
  const Prediction& p = plan.predicted;
  lines.push_back(printf_string("predicted: %.1f ms/token for one stream", p.ms_per_token) +
                  printf_string(", %.2f tokens/s", p.tokens_per_s) + " at micro-batch " + std::to_string(p.micro_batch) +
                  printf_string(", TTFT %.0f ms", p.ttft_ms) + " (" + std::to_string(p.prefill_chunks) + " prefill chunk(s))");
  if (p.draft_pass_ms > 0) lines.push_back(printf_string("predicted: %.1f ms per pass with a draft", p.draft_pass_ms));
  for (const std::string& r : plan.left_out_reasons) lines.push_back("left out: " + r);
  if (!plan.exact) lines.push_back("note: searched with the fast path; the optimum is not guaranteed");
  return lines;
}

}  // namespace hearth::partitioner
