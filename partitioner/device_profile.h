#pragma once
// What the planner knows about one device: memory, speeds, fixed overheads.
// Figures are measured by the self-profiler or read from profiles/devices/*.json.

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "partitioner/link.h"

namespace hearth::partitioner {

// Fraction of the peak streaming bandwidth a decode matvec reaches when the profile
// has no measured rate for a weight type (design note §4.1: eta^B ~ 0.7).
inline constexpr double kDefaultBandwidthEfficiency = 0.7;

// A GPU that takes the first layers of the device's stage (runtime/gpu): what it holds and how
// fast it reads. In this slice the GPU runs a layer's matrix products; attention and its KV
// cache stay on the device's CPU, and each layer pays the products' submissions and copies.
struct GpuProfile {
  std::string name;
  // Weight bytes the GPU may hold: its device-local memory less the runtime's margin
  // (max(10%, 512 MiB): runtime/gpu's default budget).
  double memory_bytes = 0;
  // True where the GPU shares the device's RAM (a Jetson, a phone): its weights count against
  // usable_memory_bytes as well. A graphics card's do not.
  bool unified_memory = false;
  double memory_bandwidth_bytes_per_s = 0;
  std::map<std::string, double> decode_bytes_per_s;  // as DeviceProfile's, for the GPU's shaders
  double prefill_flop_s = 0;
  double layer_overhead_s = 0;  // per layer and step: submissions, activations copied in and out
};

struct DeviceProfile {
  std::string name;
  double usable_memory_bytes = 0;           // bytes the runtime may fill: free RAM minus a safety margin
  double memory_bandwidth_bytes_per_s = 0;  // bytes/s, multi-threaded streaming read
  // bytes/s of weights a single-token decode matvec streams, keyed by GGUF type
  // name ("f32", "f16", "q4_0", ...). Already includes the efficiency factor.
  std::map<std::string, double> decode_bytes_per_s;
  double prefill_flop_s = 0;   // FLOP/s of a batched (prefill) matmul in the model's format
  double step_overhead_s = 0;  // seconds per stage step: graph build, dispatch, thread wake-up
  // The storage of the device's data directory, where paged layers would be read from (issue 19):
  // its sequential read rate with nothing cached, bytes/s, and its free bytes. 0: not measured.
  double storage_read_bytes_per_s = 0;
  double storage_free_bytes = 0;
  std::optional<Link> link;    // access link to the home network (to the switch / AP)
  std::optional<GpuProfile> gpu;  // a GPU the device's stage uses (`hearthd --gpu`)
};

// bytes/s at which `device` streams weights of `weight_type` in decode; falls back
// to kDefaultBandwidthEfficiency x memory bandwidth for an unmeasured type.
double weight_read_rate(const DeviceProfile& device, std::string_view weight_type);

// bytes/s at which `device` reads the KV cache (f16 rows, like an f16 matvec).
double kv_read_rate(const DeviceProfile& device);

// The same for a GPU's shaders.
double weight_read_rate(const GpuProfile& gpu, std::string_view weight_type);

// The device computing `speed` times as fast as `device` says (a busy laptop: 0.3), as measured
// while it runs a stage: its compute figures scaled, its memory, storage and link as they were.
DeviceProfile at_speed(const DeviceProfile& device, double speed);

// True when the two profiles give the same figures (names may differ), so the
// planner may treat the devices as interchangeable.
bool same_figures(const DeviceProfile& a, const DeviceProfile& b);

}  // namespace hearth::partitioner
