#include "partitioner/evaluate.h"

#include "partitioner/explain.h"
#include "partitioner/metrics.h"

namespace hearth::partitioner {

namespace {

constexpr int kMaxDevices = 64;  // far above any home; bounds the fast path's O(N^2 L^2) orders

void check_positive(std::vector<std::string>& out, const std::string& what, double value) {
  if (!(value > 0)) out.push_back(what + " must be positive");
}

void check_not_negative(std::vector<std::string>& out, const std::string& what, double value) {
  if (!(value >= 0)) out.push_back(what + " must not be negative");
}

void check_spec(std::vector<std::string>& out, const ModelSpec& spec) {
  check_positive(out, "model n_layers", spec.n_layers);
  if (static_cast<int>(spec.layer_weight_bytes.size()) != spec.n_layers ||
      static_cast<int>(spec.layer_flops_per_token.size()) != spec.n_layers)
    out.push_back("model per-layer vectors must have n_layers entries");
  for (double w : spec.layer_weight_bytes) check_not_negative(out, "model layer_weight_bytes", w);
  if (!spec.layer_expert_bytes.empty()) {
    if (static_cast<int>(spec.layer_expert_bytes.size()) != spec.n_layers || spec.n_expert <= 0 || spec.n_expert_used <= 0 ||
        spec.n_expert_used > spec.n_expert)
      out.push_back("model expert sizes are inconsistent (need one expert byte count per layer and 1 <= used <= experts)");
    else
      for (int l = 0; l < spec.n_layers; ++l)
        if (spec.layer_expert_bytes[static_cast<size_t>(l)] > spec.layer_weight_bytes[static_cast<size_t>(l)])
          out.push_back("model layer " + std::to_string(l) + " has more expert bytes than bytes");
  }
  if (!spec.layer_state_bytes.empty() && static_cast<int>(spec.layer_state_bytes.size()) != spec.n_layers)
    out.push_back("model recurrent state sizes must have n_layers entries");
  for (double b : spec.layer_state_bytes) check_not_negative(out, "model layer_state_bytes", b);
  if (!spec.no_cut_at.empty() && static_cast<int>(spec.no_cut_at.size()) != spec.n_layers + 1)
    out.push_back("model no_cut_at must have n_layers + 1 entries");
  if (!spec.layer_shares_kv.empty() && static_cast<int>(spec.layer_shares_kv.size()) != spec.n_layers)
    out.push_back("model layer_shares_kv must have n_layers entries");
  if (!spec.layer_window.empty() && static_cast<int>(spec.layer_window.size()) != spec.n_layers)
    out.push_back("model layer_window must have n_layers entries");
  for (int w : spec.layer_window) check_not_negative(out, "model layer_window", w);
  for (double f : spec.layer_flops_per_token) check_not_negative(out, "model layer_flops_per_token", f);
  check_not_negative(out, "model embedding_bytes", spec.embedding_bytes);
  check_not_negative(out, "model per_layer_input_bytes", spec.per_layer_input_bytes);
  check_not_negative(out, "model output_bytes", spec.output_bytes);
  check_not_negative(out, "model output_flops_per_token", spec.output_flops_per_token);
  check_positive(out, "model n_head", spec.n_head);
  check_positive(out, "model n_kv_head", spec.n_kv_head);
  check_positive(out, "model head_dim", spec.head_dim);
  check_positive(out, "model n_embd", spec.n_embd);
  check_positive(out, "model n_vocab", spec.n_vocab);
}

void check_device(std::vector<std::string>& out, const ModelSpec& spec, const DeviceProfile& d, int index) {
  const std::string who = "device " + std::to_string(index) + " '" + d.name + "' ";
  check_not_negative(out, who + "usable_memory_bytes", d.usable_memory_bytes);
  check_positive(out, who + "decode rate for " + spec.weight_type, weight_read_rate(d, spec.weight_type));
  check_positive(out, who + "KV read rate (f16 decode rate or memory bandwidth)", kv_read_rate(d));
  check_positive(out, who + "prefill_flop_s", d.prefill_flop_s);
  check_not_negative(out, who + "step_overhead_s", d.step_overhead_s);
  if (d.gpu) {
    check_not_negative(out, who + "gpu.memory_bytes", d.gpu->memory_bytes);
    check_positive(out, who + "gpu decode rate for " + spec.weight_type, weight_read_rate(*d.gpu, spec.weight_type));
    check_positive(out, who + "gpu.prefill_flop_s", d.gpu->prefill_flop_s);
    check_not_negative(out, who + "gpu.layer_overhead_s", d.gpu->layer_overhead_s);
  }
}

void check_link(std::vector<std::string>& out, const std::string& who, const Link& link) {
  check_positive(out, who + " bandwidth_bytes_per_s", link.bandwidth_bytes_per_s);
  check_not_negative(out, who + " latency_s", link.latency_s);
}

void check_options(std::vector<std::string>& out, const PartitionOptions& o) {
  check_positive(out, "ctx", o.ctx);
  check_not_negative(out, "decode_ctx", o.decode_ctx);
  check_positive(out, "streams", o.streams);
  check_positive(out, "max_batch", o.max_batch);
  check_positive(out, "prompt_tokens", o.prompt_tokens);
  check_not_negative(out, "prefill_chunk", o.prefill_chunk);
  check_positive(out, "kv_bytes_per_elem", o.kv_bytes_per_elem);
  check_positive(out, "activation_bytes_per_elem", o.activation_bytes_per_elem);
  check_positive(out, "compressed_bytes_per_elem", o.compressed_bytes_per_elem);
  check_not_negative(out, "compress_below_bytes_per_s", o.compress_below_bytes_per_s);
  check_not_negative(out, "draft_tokens", o.draft_tokens);
  if (o.draft_tokens >= o.max_batch) out.push_back("draft_tokens must be below max_batch (a pass is one step)");
  check_not_negative(out, "tokens_per_pass", o.tokens_per_pass);
  if (o.tokens_per_pass != 0 && !(o.tokens_per_pass >= 1 && o.tokens_per_pass <= o.draft_tokens + 1))
    out.push_back("tokens_per_pass must be 0 (not known) or from 1 to draft_tokens + 1");
}

}  // namespace

std::vector<std::string> validate_inputs(const ModelSpec& spec, std::span<const DeviceProfile> devices, const LinkTable& links,
                                         const PartitionOptions& options) {
  std::vector<std::string> out;
  check_spec(out, spec);
  const int n = static_cast<int>(devices.size());
  if (n == 0) out.push_back("no devices: the head device must be listed first");
  if (n > kMaxDevices) out.push_back("more than " + std::to_string(kMaxDevices) + " devices");
  for (int d = 0; d < n; ++d) check_device(out, spec, devices[d], d);
  check_link(out, "default link", links.fallback);
  for (const auto& [pair, link] : links.links) {
    const std::string who = "link " + std::to_string(pair.first) + "->" + std::to_string(pair.second);
    if (pair.first < 0 || pair.first >= n || pair.second < 0 || pair.second >= n) out.push_back(who + " names an unknown device");
    check_link(out, who, link);
  }
  check_options(out, options);
  return out;
}

std::vector<std::string> validate_ranges(int n_layers, int n_devices, std::span<const StageRange> ranges) {
  std::vector<std::string> out;
  if (ranges.empty()) return {"plan has no stages"};
  if (ranges[0].device != 0) out.push_back("stage 0 must run on the head (device 0)");
  std::vector<char> seen(std::max(0, n_devices), 0);
  int expected_first = 0;
  for (size_t s = 0; s < ranges.size(); ++s) {
    const StageRange& r = ranges[s];
    const std::string who = "stage " + std::to_string(s);
    if (r.device < 0 || r.device >= n_devices) {
      out.push_back(who + " names unknown device " + std::to_string(r.device));
    } else if (seen[r.device]++) {
      out.push_back(who + " reuses device " + std::to_string(r.device));
    }
    if (r.first_layer != expected_first)
      out.push_back(who + " starts at block " + std::to_string(r.first_layer) + ", expected " + std::to_string(expected_first));
    if (r.last_layer < r.first_layer || (r.last_layer == r.first_layer && s > 0))
      out.push_back(who + " has an empty or reversed block range");
    expected_first = r.last_layer;
  }
  if (expected_first != n_layers)
    out.push_back("stages end at block " + std::to_string(expected_first) + ", model has " + std::to_string(n_layers));
  return out;
}

std::vector<StageRange> ranges_of(const PartitionPlan& plan) {
  std::vector<StageRange> ranges;
  for (const StageAssignment& a : plan.stages) ranges.push_back({a.device, a.first_layer, a.last_layer});
  return ranges;
}

PartitionPlan assemble_plan(const CostModel& cm, std::span<const StageRange> ranges) {
  PartitionPlan plan;
  plan.objective = cm.options().objective;
  plan.algorithm = cm.options().algorithm;
  const int head = ranges[0].device;
  for (size_t s = 0; s < ranges.size(); ++s) {
    const StageRange& r = ranges[s];
    const bool first = s == 0, last = s + 1 == ranges.size();
    const MemoryUse use = cm.memory(r.device, r.first_layer, r.last_layer, first, last);
    StageAssignment a;
    a.device = r.device;
    a.device_name = cm.devices()[r.device].name;
    a.first_layer = r.first_layer;
    a.last_layer = r.last_layer;
    a.has_embedding = first;
    a.has_output = last;
    a.weight_bytes = use.weight_bytes;
    a.kv_bytes = use.kv_bytes;
    a.memory_bytes = use.total();
    a.headroom_bytes = cm.devices()[r.device].usable_memory_bytes - use.total();
    a.paged_bytes = cm.paged_bytes(r.device, r.first_layer, r.last_layer, first, last);
    a.paged_time_s = a.paged_bytes > 0 ? a.paged_bytes / cm.devices()[r.device].storage_read_bytes_per_s : 0.0;
    a.stage_time_s = cm.decode_time(r.device, r.first_layer, r.last_layer, last, 1);
    if (cm.latency_rows() > 1)
      a.draft_step_time_s = cm.decode_time(r.device, r.first_layer, r.last_layer, last, cm.latency_rows());
    if (const int rows = cm.batched_rows(static_cast<int>(ranges.size())); rows > cm.latency_rows())
      a.batched_step_time_s = cm.decode_time(r.device, r.first_layer, r.last_layer, last, rows);
    a.compute_time_s = cm.devices()[r.device].step_overhead_s + cm.decode_compute_time(r.device, r.first_layer, r.last_layer, last, 1);
    a.hop_time_s = last ? cm.hop_time(r.device, head, kTokenIdBytes)
                        : cm.activation_hop_time(r.device, ranges[s + 1].device, 1, r.last_layer);
    a.compressed_hop = !last && cm.compressed_hop(r.device, ranges[s + 1].device);
    const CostModel::GpuShare share = cm.gpu_share(r.device, r.first_layer, r.last_layer, last);
    a.gpu_layers = share.end - r.first_layer;
    a.gpu_output = share.output;
    a.gpu_weight_bytes = use.gpu_weight_bytes;
    plan.stages.push_back(a);
  }
  plan.predicted = predict(cm, ranges);
  plan.left_out_reasons = left_out_reasons(cm, ranges);
  return plan;
}

PartitionPlan assemble_plan(const ModelSpec& spec, std::span<const DeviceProfile> devices, const LinkTable& links,
                            const PartitionOptions& options, std::span<const StageRange> ranges) {
  return assemble_plan(CostModel(spec, devices, links, options), ranges);
}

Prediction evaluate_plan(const ModelSpec& spec, std::span<const DeviceProfile> devices, const LinkTable& links,
                         const PartitionOptions& options, const PartitionPlan& plan) {
  const std::vector<StageRange> ranges = ranges_of(plan);
  if (!validate_ranges(spec.n_layers, static_cast<int>(devices.size()), ranges).empty()) return {};
  return predict(CostModel(spec, devices, links, options), ranges);
}

std::vector<std::string> validate_plan(const ModelSpec& spec, std::span<const DeviceProfile> devices,
                                       const PartitionOptions& options, const PartitionPlan& plan) {
  const std::vector<StageRange> ranges = ranges_of(plan);
  std::vector<std::string> out = validate_ranges(spec.n_layers, static_cast<int>(devices.size()), ranges);
  if (!out.empty()) return out;
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    const StageAssignment& a = plan.stages[s];
    if (a.has_embedding != (s == 0)) out.push_back("stage " + std::to_string(s) + " has the wrong embedding flag");
    if (a.has_output != (s + 1 == plan.stages.size()))
      out.push_back("stage " + std::to_string(s) + " has the wrong LM head flag");
    if (!can_cut(spec, a.first_layer))
      out.push_back("stage " + std::to_string(s) + " starts at layer " + std::to_string(a.first_layer) +
                    ", whose layers read the KV cache of an earlier layer on another stage");
  }
  const CostModel cm(spec, devices, LinkTable{}, options);
  for (const Infeasible& overflow : memory_overflows(cm, ranges, "plan")) out.push_back(overflow.message);
  return out;
}

}  // namespace hearth::partitioner
