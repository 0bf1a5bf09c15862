#include "partitioner/device_profile.h"

namespace hearth::partitioner {

double weight_read_rate(const DeviceProfile& device, std::string_view weight_type) {
  auto it = device.decode_bytes_per_s.find(std::string(weight_type));
  if (it != device.decode_bytes_per_s.end() && it->second > 0) return it->second;
  return kDefaultBandwidthEfficiency * device.memory_bandwidth_bytes_per_s;
}

double kv_read_rate(const DeviceProfile& device) { return weight_read_rate(device, "f16"); }

DeviceProfile at_speed(const DeviceProfile& device, double speed) {
  DeviceProfile d = device;
  if (!(speed > 0) || speed == 1) return d;
  d.memory_bandwidth_bytes_per_s *= speed;
  for (auto& [type, rate] : d.decode_bytes_per_s) rate *= speed;
  d.prefill_flop_s *= speed;
  d.step_overhead_s /= speed;
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
         a.storage_free_bytes == b.storage_free_bytes && same_link(a.link, b.link);
}

}  // namespace hearth::partitioner
