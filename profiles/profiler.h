// Measures what this device can do, with the runtime's own kernels: the figures the planner
// needs (partitioner::DeviceProfile) plus facts for display.
#pragma once

#include <cstdint>
#include <string>

#include "partitioner/device_profile.h"
#include "profiles/storage.h"
#include "runtime/gpu/gpu.h"

namespace hearth::profiles {

struct SystemInfo {
  std::string cpu;   // /proc/cpuinfo model name
  std::string os;    // uname sysname + release
  std::string arch;  // uname machine: x86_64, aarch64
  int cores = 1;
  uint64_t total_memory_bytes = 0;
  uint64_t available_memory_bytes = 0;  // MemAvailable
  uint64_t cgroup_limit_bytes = 0;      // 0 = none (v1 memory.limit_in_bytes or v2 memory.max)
};

SystemInfo read_system_info();

// MemoryBudget::basis when the device's own --memory-limit sets it (one that could be raised).
inline constexpr const char* kMemoryLimitBasis = "--memory-limit";

// The memory a device offers the planner, and what it holds back and why: shown by
// `hearth devices`, since "usable: 23 MB" for `--memory-limit 60M` needs its reason.
struct MemoryBudget {
  std::string basis;            // "--memory-limit", "the cgroup's limit" or "available memory"
  uint64_t basis_bytes = 0;     // the smallest of MemAvailable, the cgroup limit and --memory-limit
  uint64_t held_back_bytes = 0;
  std::string held_back_why;    // whom it is held back for, and the rule
  uint64_t usable_bytes = 0;    // basis - held back: what the planner may fill
};

// The smallest of MemAvailable, the cgroup limit and `limit` (0 = none), minus a safety margin
// of max(256 MiB, 8%) (for an explicit limit: 32 MiB + 5%, since the user chose it knowingly).
MemoryBudget memory_budget(const SystemInfo& info, uint64_t limit);
inline uint64_t usable_memory(const SystemInfo& info, uint64_t limit) { return memory_budget(info, limit).usable_bytes; }

struct ProfileOptions {
  std::string name;
  int threads = 0;            // 0 = all cores
  uint64_t memory_limit = 0;  // 0 = none
  bool quick = true;          // ~1-2 s instead of ~10 s
  std::string storage_dir;    // the data directory, whose storage is measured (storage.h); empty = not
  std::string gpu = "none";   // the GPU its stages use (`--gpu`), measured too; "auto": none when there is none
};

struct Profile {
  partitioner::DeviceProfile device;
  SystemInfo system;
  int threads = 1;
  MemoryBudget memory;  // behind device.usable_memory_bytes
  StorageProfile storage;  // behind device.storage_*; read_bytes_per_s 0 when not measured
  std::string gpu_error;   // why no GPU was measured, when one was asked for
  std::string gpu_choice;  // the --gpu choice device.gpu was measured for ("auto", "0"...); "" = none
};

// The planner's view of a measured GPU: the weights a stage would put on it, its rates, and a
// dense layer's products as four submissions (q/k/v, output, gate/up, down: runtime/model/stage).
// An integrated GPU (or a CPU device such as lavapipe) shares the device's RAM.
partitioner::GpuProfile gpu_profile(const runtime::GpuSpeeds& speeds);

// A GpuProfile alone, as JSON (the "gpu" object of a profile), and back; throws
// std::runtime_error naming the missing or wrong field.
std::string gpu_profile_to_json(const partitioner::GpuProfile& gpu);
partitioner::GpuProfile gpu_profile_from_json(const std::string& text);
// The --gpu choice a cached profile's GPU was measured for; "" when none is said.
std::string gpu_choice_of(const std::string& text);

Profile measure_profile(const ProfileOptions& options);

// JSON in the format of profiles/devices/*.json (documented in docs/partitioner.md).
std::string profile_to_json(const Profile& p);
// Reads that format; throws std::runtime_error naming the missing or wrong field.
partitioner::DeviceProfile device_profile_from_json(const std::string& text);

}  // namespace hearth::profiles
