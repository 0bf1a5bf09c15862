#include "partitioner/device_profile.h"

namespace hearth::partitioner {

namespace {

double read_rate(const std::map<std::string, double>& measured, double bandwidth, std::string_view weight_type) {
  auto it = measured.find(std::string(weight_type));
  if (it != measured.end() && it->second > 0) return it->second;
  return kDefaultBandwidthEfficiency * bandwidth;
}

bool same_gpu(const std::optional<GpuProfile>& a, const std::optional<GpuProfile>& b) {
  if (a.has_value() != b.has_value()) return false;
  return !a ||
         (a->memory_bytes == b->memory_bytes && a->unified_memory == b->unified_memory &&
          a->memory_bandwidth_bytes_per_s == b->memory_bandwidth_bytes_per_s && a->decode_bytes_per_s == b->decode_bytes_per_s &&
          a->prefill_flop_s == b->prefill_flop_s && a->layer_overhead_s == b->layer_overhead_s);
}

}  // namespace

double weight_read_rate(const DeviceProfile& device, std::string_view weight_type) {
  return read_rate(device.decode_bytes_per_s, device.memory_bandwidth_bytes_per_s, weight_type);
}

double weight_read_rate(const GpuProfile& gpu, std::string_view weight_type) {
  return read_rate(gpu.decode_bytes_per_s, gpu.memory_bandwidth_bytes_per_s, weight_type);
}

double kv_read_rate(const DeviceProfile& device) { return weight_read_rate(device, "f16"); }

DeviceProfile at_speed(const DeviceProfile& device, double speed) {
  DeviceProfile d = device;
  if (!(speed > 0) || speed == 1) return d;
  d.memory_bandwidth_bytes_per_s *= speed;
  for (auto& [type, rate] : d.decode_bytes_per_s) rate *= speed;
  d.prefill_flop_s *= speed;
  d.step_overhead_s /= speed;
  if (d.gpu) {  // what was measured is the stage as a whole, GPU part included
    d.gpu->memory_bandwidth_bytes_per_s *= speed;
    for (auto& [type, rate] : d.gpu->decode_bytes_per_s) rate *= speed;
    d.gpu->prefill_flop_s *= speed;
    d.gpu->layer_overhead_s /= speed;
  }
  return d;
}

static bool same_link(const std::optional<Link>& a, const std::optional<Link>& b) {
  if (a.has_value() != b.has_value()) return false;
  return !a || (a->bandwidth_bytes_per_s == b->bandwidth_bytes_per_s && a->latency_s == b->latency_s);
}

bool same_figures(const DeviceProfile& a, const DeviceProfile& b) {
  return a.usable_memory_bytes == b.usable_memory_bytes && a.memory_bandwidth_bytes_per_s == b.memory_bandwidth_bytes_per_s &&
         a.decode_bytes_per_s == b.decode_bytes_per_s && a.prefill_flop_s == b.prefill_flop_s &&
         a.step_overhead_s == b.step_overhead_s && a.storage_read_bytes_per_s == b.storage_read_bytes_per_s &&
         a.storage_free_bytes == b.storage_free_bytes && same_link(a.link, b.link) && same_gpu(a.gpu, b.gpu);
}

}  // namespace hearth::partitioner
