#include "cluster/wire_convert.h"

#include "transport/printable.h"

#include <cmath>
#include <stdexcept>

namespace hearth::cluster {

void to_wire(const profiles::Profile& p, wire::DeviceProfile::Builder out) {
  out.setName(p.device.name);
  out.setUsableMemoryBytes(static_cast<uint64_t>(p.device.usable_memory_bytes));
  out.setMemoryBandwidthBytesPerS(p.device.memory_bandwidth_bytes_per_s);
  auto list = out.initDecode(static_cast<unsigned>(p.device.decode_bytes_per_s.size()));
  unsigned i = 0;
  for (const auto& [type, rate] : p.device.decode_bytes_per_s) {
    list[i].setType(type);
    list[i].setBytesPerS(rate);
    ++i;
  }
  out.setPrefillFlopS(p.device.prefill_flop_s);
  out.setStepOverheadS(p.device.step_overhead_s);
  out.setCores(static_cast<uint32_t>(p.system.cores));
  out.setCpu(p.system.cpu);
  out.setOs(p.system.os);
  out.setArch(p.system.arch);
  out.setMemoryBasis(p.memory.basis);
  out.setMemoryBasisBytes(p.memory.basis_bytes);
  out.setMemoryHeldBackBytes(p.memory.held_back_bytes);
  out.setMemoryHeldBackWhy(p.memory.held_back_why);
  out.setStorageReadBytesPerS(p.device.storage_read_bytes_per_s);
  out.setStorageFreeBytes(static_cast<uint64_t>(p.device.storage_free_bytes));
  if (const auto& g = p.device.gpu) {
    auto gpu = out.initGpu();
    gpu.setName(g->name);
    gpu.setMemoryBytes(static_cast<uint64_t>(g->memory_bytes));
    gpu.setUnifiedMemory(g->unified_memory);
    gpu.setMemoryBandwidthBytesPerS(g->memory_bandwidth_bytes_per_s);
    auto rates = gpu.initDecode(static_cast<unsigned>(g->decode_bytes_per_s.size()));
    unsigned k = 0;
    for (const auto& [type, rate] : g->decode_bytes_per_s) {
      rates[k].setType(type);
      rates[k].setBytesPerS(rate);
      ++k;
    }
    gpu.setPrefillFlopS(g->prefill_flop_s);
    gpu.setLayerOverheadS(g->layer_overhead_s);
  }
}

profiles::MemoryBudget memory_from_wire(wire::DeviceProfile::Reader in) {
  // Texts from a peer reach terminals: escaped, and short.
  return {.basis = transport::printable(in.getMemoryBasis().cStr(), 64),
          .basis_bytes = in.getMemoryBasisBytes(),
          .held_back_bytes = in.getMemoryHeldBackBytes(),
          .held_back_why = transport::printable(in.getMemoryHeldBackWhy().cStr(), 200),
          .usable_bytes = in.getUsableMemoryBytes()};
}

partitioner::DeviceProfile from_wire(wire::DeviceProfile::Reader in) {
  // A profile from the network feeds the planner: refuse values that would break its arithmetic.
  const auto positive = [](double v, const char* what) {
    if (!std::isfinite(v) || v <= 0) throw std::invalid_argument(std::string("profile ") + what + " must be positive");
    return v;
  };
  partitioner::DeviceProfile d;
  d.name = in.getName().cStr();
  if (d.name.empty() || d.name.size() > 64) throw std::invalid_argument("profile name must have 1 to 64 characters");
  d.usable_memory_bytes = static_cast<double>(in.getUsableMemoryBytes());
  d.memory_bandwidth_bytes_per_s = positive(in.getMemoryBandwidthBytesPerS(), "memory bandwidth");
  for (auto t : in.getDecode()) d.decode_bytes_per_s[t.getType().cStr()] = positive(t.getBytesPerS(), "decode rate");
  d.prefill_flop_s = positive(in.getPrefillFlopS(), "prefill FLOP/s");
  d.step_overhead_s = in.getStepOverheadS();
  if (!std::isfinite(d.step_overhead_s) || d.step_overhead_s < 0)
    throw std::invalid_argument("profile step overhead must be >= 0");
  d.storage_read_bytes_per_s = in.getStorageReadBytesPerS();
  if (!std::isfinite(d.storage_read_bytes_per_s) || d.storage_read_bytes_per_s < 0)
    throw std::invalid_argument("profile storage read rate must be >= 0");
  d.storage_free_bytes = static_cast<double>(in.getStorageFreeBytes());
  if (in.hasGpu()) {
    const auto g = in.getGpu();
    partitioner::GpuProfile gpu;
    gpu.name = transport::printable(g.getName().cStr(), 64);
    gpu.memory_bytes = static_cast<double>(g.getMemoryBytes());
    gpu.unified_memory = g.getUnifiedMemory();
    gpu.memory_bandwidth_bytes_per_s = positive(g.getMemoryBandwidthBytesPerS(), "GPU memory bandwidth");
    for (auto t : g.getDecode()) gpu.decode_bytes_per_s[t.getType().cStr()] = positive(t.getBytesPerS(), "GPU decode rate");
    gpu.prefill_flop_s = positive(g.getPrefillFlopS(), "GPU FLOP/s");
    gpu.layer_overhead_s = g.getLayerOverheadS();
    if (!std::isfinite(gpu.layer_overhead_s) || gpu.layer_overhead_s < 0)
      throw std::invalid_argument("profile GPU layer overhead must be >= 0");
    d.gpu = gpu;
  }
  return d;
}

void to_wire(const runtime::SamplingParams& p, wire::SamplingParams::Builder out) {
  out.setTemperature(p.temperature);
  out.setTopK(p.top_k);
  out.setTopP(p.top_p);
  out.setMinP(p.min_p);
  out.setRepeatPenalty(p.repeat_penalty);
  out.setRepeatLastN(p.repeat_last_n);
  out.setSeed(p.seed);
  out.setDrawsDone(p.draws_done);
}

runtime::SamplingParams from_wire(wire::SamplingParams::Reader in) {
  runtime::SamplingParams p;
  p.temperature = in.getTemperature();
  p.top_k = in.getTopK();
  p.top_p = in.getTopP();
  p.min_p = in.getMinP();
  p.repeat_penalty = in.getRepeatPenalty();
  p.repeat_last_n = in.getRepeatLastN();
  p.seed = in.getSeed();
  p.draws_done = in.getDrawsDone();
  if (p.draws_done > (uint64_t{1} << 24)) throw std::invalid_argument("sampling parameters out of range");
  if (!std::isfinite(p.temperature) || p.temperature < 0 || !std::isfinite(p.top_p) || p.top_p < 0 || p.top_p > 1 ||
      !std::isfinite(p.min_p) || p.min_p < 0 || p.min_p > 1 || !std::isfinite(p.repeat_penalty) || p.repeat_penalty <= 0 ||
      p.top_k < 0 || p.repeat_last_n < 0 || p.repeat_last_n > 4096)
    throw std::invalid_argument("sampling parameters out of range");
  return p;
}

wire::KvType kv_type_to_wire(runtime::TensorType t) {
  switch (t) {
    case runtime::TensorType::F32: return wire::KvType::F32;
    case runtime::TensorType::F16: return wire::KvType::F16;
    case runtime::TensorType::Q8_0: return wire::KvType::Q80;
    default: throw std::invalid_argument("a KV cache holds f32, f16 or q8_0");
  }
}

std::optional<runtime::TensorType> kv_type_from_wire(wire::KvType t) {
  switch (t) {
    case wire::KvType::F32: return runtime::TensorType::F32;
    case wire::KvType::F16: return runtime::TensorType::F16;
    case wire::KvType::Q80: return runtime::TensorType::Q8_0;
    default: return std::nullopt;
  }
}

std::optional<wire::WireType> wire_choice_from_name(std::string_view name) {
  if (name == "f32") return wire::WireType::F32;
  if (name == "f16") return wire::WireType::F16;
  if (name == "q8_0") return wire::WireType::Q80;
  if (name == "auto") return wire::WireType::AUTO;
  return std::nullopt;
}

}  // namespace hearth::cluster
