#include "profiles/profiler.h"

#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "runtime/model/matmul.h"
#include "runtime/model/sampler.h"
#include "runtime/format/tensor_type.h"
#include "runtime/kernels/huge_pages.h"
#include "runtime/kernels/membw.h"
#include "runtime/kernels/thread_pool.h"

namespace hearth::profiles {

namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

uint64_t meminfo_bytes(const std::string& key) {
  std::ifstream f("/proc/meminfo");
  std::string k;
  uint64_t kb = 0;
  std::string unit;
  while (f >> k >> kb >> unit)
    if (k == key + ":") return kb * 1024;
  return 0;
}

uint64_t read_number_file(const std::string& path) {
  std::ifstream f(path);
  std::string s;
  if (!(f >> s) || s == "max") return 0;
  try {
    return std::stoull(s);
  } catch (...) {
    return 0;
  }
}

// The memory limit of our own cgroup, v2 (memory.max) or v1 (memory.limit_in_bytes).
uint64_t cgroup_limit() {
  std::ifstream f("/proc/self/cgroup");
  for (std::string line; std::getline(f, line);) {
    const auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (controllers.empty()) {
      if (uint64_t v = read_number_file("/sys/fs/cgroup" + path + "/memory.max")) return v;
    } else if (controllers.find("memory") != std::string::npos) {
      const uint64_t v = read_number_file("/sys/fs/cgroup/memory" + path + "/memory.limit_in_bytes");
      if (v > 0 && v < (uint64_t{1} << 60)) return v;  // v1 reports "no limit" as a huge number
    }
  }
  return 0;
}

std::string cpu_name() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("model name", 0) == 0 || line.rfind("Model", 0) == 0) {
      const auto c = line.find(':');
      if (c != std::string::npos) return line.substr(line.find_first_not_of(' ', c + 1));
    }
  }
  return "unknown";
}

// Multi-threaded streaming read of a buffer much larger than the caches, on 2 MiB pages as a
// stage's weights are; best of a few passes.
double measure_bandwidth(runtime::ThreadPool& pool, size_t bytes, int passes) {
  runtime::ReadBandwidthProbe probe(bytes);
  return probe.measure(pool, passes);
}

// Weights to stream, on 2 MiB pages as a stage holds them (StageWeights::hold_in_memory).
runtime::HugePageBuffer random_bytes(size_t n, uint64_t seed) {
  runtime::HugePageBuffer v(n);
  runtime::Rng rng(seed);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x = rng.next() & 0x3bff3bff3bff3bffull;  // keeps f16/bf16 values finite and small
    std::memcpy(v.data() + i, &x, 8);
  }
  std::memset(v.data() + i, 0, n - i);
  return v;
}

// Decode matvec throughput for one weight type: bytes of weights streamed per second.
double measure_decode(runtime::ThreadPool& pool, runtime::TensorType type, size_t bytes, int reps) {
  const int64_t n_in = 4096;
  const uint64_t rb = runtime::row_bytes(type, n_in);
  const int64_t rows = static_cast<int64_t>(bytes / rb);
  const auto data = random_bytes(static_cast<size_t>(rows) * rb, 7);
  const runtime::WeightMatrix w{type, data.data(), n_in, rows, rb};
  std::vector<float> x(static_cast<size_t>(n_in), 0.01f), y(static_cast<size_t>(rows));
  runtime::MatmulScratch scratch(1, n_in);
  const auto& k = runtime::best_kernels();
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    runtime::matmul(w, x.data(), 1, y.data(), scratch, pool, k);
    best = std::max(best, static_cast<double>(w.bytes()) / seconds(t0, Clock::now()));
  }
  return best;
}

// Batched (prefill) matmul throughput in FLOP/s, Q8_0 weights.
double measure_prefill(runtime::ThreadPool& pool, int tokens, int reps) {
  const int64_t n_in = 2048, rows = 2048;
  const auto type = runtime::TensorType::Q8_0;
  const uint64_t rb = runtime::row_bytes(type, n_in);
  const auto data = random_bytes(static_cast<size_t>(rows) * rb, 9);
  const runtime::WeightMatrix w{type, data.data(), n_in, rows, rb};
  std::vector<float> x(static_cast<size_t>(n_in * tokens), 0.01f), y(static_cast<size_t>(rows * tokens));
  runtime::MatmulScratch scratch(tokens, n_in);
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    runtime::matmul(w, x.data(), tokens, y.data(), scratch, pool, runtime::best_kernels());
    best = std::max(best, 2.0 * n_in * rows * tokens / seconds(t0, Clock::now()));
  }
  return best;
}

// Fixed cost of one stage step: ~10 parallel loops per layer-free step (norms, matmul dispatch,
// attention) plus message handling. An estimate from the pool's own dispatch cost. The best of
// several short batches, not one long average: on a busy machine a batch that another process
// preempts can cost 100x more, and the planner wants what the device does when hearth runs.
double measure_step_overhead(runtime::ThreadPool& pool, int batches) {
  constexpr int kRunsPerBatch = 50;
  double best = 1e9;
  for (int b = 0; b < batches; ++b) {
    const auto t0 = Clock::now();
    for (int i = 0; i < kRunsPerBatch; ++i) pool.run(pool.size(), [](int) {});
    best = std::min(best, seconds(t0, Clock::now()) / kRunsPerBatch);
  }
  return 10 * best + 50e-6;
}

}  // namespace

SystemInfo read_system_info() {
  SystemInfo s;
  struct utsname u {};
  if (::uname(&u) == 0) {
    s.os = std::string(u.sysname) + " " + u.release;
    s.arch = u.machine;
  }
  s.cpu = cpu_name();
  s.cores = runtime::hardware_threads();
  s.total_memory_bytes = meminfo_bytes("MemTotal");
  s.available_memory_bytes = meminfo_bytes("MemAvailable");
  s.cgroup_limit_bytes = cgroup_limit();
  return s;
}

MemoryBudget memory_budget(const SystemInfo& info, uint64_t limit) {
  MemoryBudget b{.basis = "available memory", .basis_bytes = info.available_memory_bytes};
  if (info.cgroup_limit_bytes > 0 && info.cgroup_limit_bytes < b.basis_bytes)
    b = {.basis = "the cgroup's limit", .basis_bytes = info.cgroup_limit_bytes};
  if (limit > 0 && limit <= b.basis_bytes) {
    b = {.basis = kMemoryLimitBasis, .basis_bytes = limit};
    b.held_back_bytes = std::min<uint64_t>(limit, (32ull << 20) + limit / 20);
    b.held_back_why = "the daemon's own code, buffers and messages (32 MiB + 5% of the limit)";
  } else {
    b.held_back_bytes = std::min(b.basis_bytes, std::max<uint64_t>(256ull << 20, b.basis_bytes / 100 * 8));
    b.held_back_why = "the system and its other programs (8%, at least 256 MiB)";
  }
  b.usable_bytes = b.basis_bytes - b.held_back_bytes;
  return b;
}

Profile measure_profile(const ProfileOptions& o) {
  Profile p;
  p.system = read_system_info();
  p.threads = o.threads > 0 ? o.threads : p.system.cores;
  runtime::ThreadPool pool(p.threads);
  const size_t big = o.quick ? (64u << 20) : (256u << 20);
  const int reps = o.quick ? 3 : 8;
  auto& d = p.device;
  d.name = o.name;
  p.memory = memory_budget(p.system, o.memory_limit);
  d.usable_memory_bytes = static_cast<double>(p.memory.usable_bytes);
  d.memory_bandwidth_bytes_per_s = measure_bandwidth(pool, big, reps);
  for (uint32_t id = 0; id < 64; ++id) {
    const auto info = runtime::tensor_type_info(id);
    if (!info || !info->computable) continue;
    if (runtime::row_bytes(static_cast<runtime::TensorType>(id), 4096) == 0) continue;
    d.decode_bytes_per_s[std::string(info->name)] = measure_decode(pool, static_cast<runtime::TensorType>(id), big / 2, reps);
  }
  d.prefill_flop_s = measure_prefill(pool, 64, o.quick ? 2 : 5);
  d.step_overhead_s = measure_step_overhead(pool, o.quick ? 10 : 40);
  if (o.gpu != "none") {
    try {
      d.gpu = gpu_profile(runtime::measure_gpu(o.gpu, o.quick ? (32u << 20) : (128u << 20)));
      p.gpu_choice = o.gpu;
    } catch (const runtime::GpuError& e) {
      p.gpu_error = e.what();
    }
  }
  if (!o.storage_dir.empty()) {
    try {  // a device whose disk is full still computes: it says so, and offers no paging
      p.storage = measure_storage(o.storage_dir, o.quick ? (32u << 20) : (128u << 20));
      d.storage_read_bytes_per_s = p.storage.read_bytes_per_s;
      d.storage_free_bytes = static_cast<double>(p.storage.free_bytes);
    } catch (const std::runtime_error& e) {
      p.storage = {.path = o.storage_dir, .error = e.what()};
    }
  }
  return p;
}

namespace {

nlohmann::json gpu_json(const partitioner::GpuProfile& g) {
  return {{"name", g.name},
          {"memory_bytes", g.memory_bytes},
          {"unified_memory", g.unified_memory},
          {"memory_bandwidth_bytes_per_s", g.memory_bandwidth_bytes_per_s},
          {"decode_bytes_per_s", g.decode_bytes_per_s},
          {"prefill_flop_s", g.prefill_flop_s},
          {"layer_overhead_s", g.layer_overhead_s}};
}

}  // namespace

std::string gpu_profile_to_json(const partitioner::GpuProfile& gpu) { return gpu_json(gpu).dump(); }

partitioner::GpuProfile gpu_profile(const runtime::GpuSpeeds& speeds) {
  partitioner::GpuProfile g;
  g.name = speeds.info.name;
  g.memory_bytes = static_cast<double>(speeds.budget_bytes);
  g.unified_memory = speeds.info.kind == "integrated" || speeds.info.kind == "cpu";
  g.decode_bytes_per_s = speeds.decode_bytes_per_s;
  for (const auto& [type, rate] : speeds.decode_bytes_per_s)
    g.memory_bandwidth_bytes_per_s = std::max(g.memory_bandwidth_bytes_per_s, rate);  // at least what its best product read
  g.prefill_flop_s = speeds.prefill_flop_s;
  g.layer_overhead_s = 4 * speeds.submission_s;
  return g;
}

std::string profile_to_json(const Profile& p) {
  nlohmann::json j;
  j["name"] = p.device.name;
  j["usable_memory_bytes"] = p.device.usable_memory_bytes;
  j["memory_bandwidth_bytes_per_s"] = p.device.memory_bandwidth_bytes_per_s;
  j["decode_bytes_per_s"] = p.device.decode_bytes_per_s;
  j["prefill_flop_s"] = p.device.prefill_flop_s;
  j["step_overhead_s"] = p.device.step_overhead_s;
  if (p.device.storage_read_bytes_per_s > 0) {
    j["storage_read_bytes_per_s"] = p.device.storage_read_bytes_per_s;
    j["storage_free_bytes"] = p.device.storage_free_bytes;
    j["storage"] = {{"path", p.storage.path}, {"total_bytes", p.storage.total_bytes}, {"direct_io", p.storage.direct}};
  }
  if (p.device.link)
    j["link"] = {{"bandwidth_bytes_per_s", p.device.link->bandwidth_bytes_per_s}, {"latency_s", p.device.link->latency_s}};
  if (p.device.gpu) j["gpu"] = gpu_json(*p.device.gpu);
  if (!p.gpu_choice.empty()) j["gpu_choice"] = p.gpu_choice;
  j["system"] = {{"cpu", p.system.cpu},
                 {"os", p.system.os},
                 {"arch", p.system.arch},
                 {"cores", p.system.cores},
                 {"threads", p.threads},
                 {"total_memory_bytes", p.system.total_memory_bytes},
                 {"available_memory_bytes", p.system.available_memory_bytes},
                 {"cgroup_limit_bytes", p.system.cgroup_limit_bytes}};
  j["sources"] = {"measured by hearth profile on this device"};
  return j.dump(2);
}

namespace {

// A figure the planner computes with: a finite number (JSON's 1e400 reads as infinity).
double number_of(const nlohmann::json& j, const std::string& key, const std::string& where) {
  if (!j.contains(key) || !j[key].is_number()) throw std::runtime_error(where + " lacks the number '" + key + "'");
  const double v = j[key].get<double>();
  if (!std::isfinite(v)) throw std::runtime_error(where + " field '" + key + "' must be a finite number");
  return v;
}

std::map<std::string, double> rates_of(const nlohmann::json& j, const std::string& where) {
  std::map<std::string, double> rates;
  if (!j.contains("decode_bytes_per_s")) return rates;
  if (!j["decode_bytes_per_s"].is_object()) throw std::runtime_error(where + " field 'decode_bytes_per_s' must be an object");
  for (const auto& [k, v] : j["decode_bytes_per_s"].items()) {
    if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < 0)
      throw std::runtime_error(where + " decode_bytes_per_s." + k + " must be a finite number >= 0");
    rates[k] = v.get<double>();
  }
  return rates;
}

partitioner::GpuProfile gpu_from_json(const nlohmann::json& g) {
  const std::string where = "profile's gpu";
  if (!g.is_object()) throw std::runtime_error("profile field 'gpu' must be an object");
  partitioner::GpuProfile gpu;
  if (!g.contains("name") || !g["name"].is_string()) throw std::runtime_error(where + " lacks the string 'name'");
  gpu.name = g["name"].get<std::string>();
  gpu.memory_bytes = number_of(g, "memory_bytes", where);
  if (g.contains("unified_memory")) {
    if (!g["unified_memory"].is_boolean()) throw std::runtime_error(where + " field 'unified_memory' must be true or false");
    gpu.unified_memory = g["unified_memory"].get<bool>();
  }
  gpu.memory_bandwidth_bytes_per_s = number_of(g, "memory_bandwidth_bytes_per_s", where);
  gpu.decode_bytes_per_s = rates_of(g, where);
  gpu.prefill_flop_s = number_of(g, "prefill_flop_s", where);
  gpu.layer_overhead_s = g.contains("layer_overhead_s") ? number_of(g, "layer_overhead_s", where) : 0.0;
  if (gpu.memory_bytes < 0 || gpu.memory_bandwidth_bytes_per_s <= 0 || gpu.prefill_flop_s <= 0 || gpu.layer_overhead_s < 0)
    throw std::runtime_error(where + ": memory and overhead must be >= 0, bandwidth and FLOP/s > 0");
  return gpu;
}

}  // namespace

partitioner::DeviceProfile device_profile_from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(std::string("profile is not valid JSON: ") + e.what());
  }
  const auto number = [&](const char* key) { return number_of(j, key, "profile"); };
  partitioner::DeviceProfile d;
  if (!j.contains("name") || !j["name"].is_string()) throw std::runtime_error("profile lacks the string 'name'");
  d.name = j["name"].get<std::string>();
  d.usable_memory_bytes = number("usable_memory_bytes");
  d.memory_bandwidth_bytes_per_s = number("memory_bandwidth_bytes_per_s");
  d.decode_bytes_per_s = rates_of(j, "profile");
  d.prefill_flop_s = number("prefill_flop_s");
  d.step_overhead_s = j.contains("step_overhead_s") ? number("step_overhead_s") : 0.0;
  d.storage_read_bytes_per_s = j.contains("storage_read_bytes_per_s") ? number("storage_read_bytes_per_s") : 0.0;
  d.storage_free_bytes = j.contains("storage_free_bytes") ? number("storage_free_bytes") : 0.0;
  if (d.storage_read_bytes_per_s < 0 || d.storage_free_bytes < 0) throw std::runtime_error("profile storage figures must be >= 0");
  if (j.contains("link")) {
    const auto& l = j["link"];
    if (!l.is_object() || !l.contains("bandwidth_bytes_per_s") || !l.contains("latency_s"))
      throw std::runtime_error("profile field 'link' needs bandwidth_bytes_per_s and latency_s");
    d.link =
        partitioner::Link{number_of(l, "bandwidth_bytes_per_s", "profile's link"), number_of(l, "latency_s", "profile's link")};
  }
  if (j.contains("gpu")) d.gpu = gpu_from_json(j["gpu"]);
  return d;
}

}  // namespace hearth::profiles

namespace hearth::profiles {

partitioner::GpuProfile gpu_profile_from_json(const std::string& text) {
  try {
    return gpu_from_json(nlohmann::json::parse(text));
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(std::string("GPU profile is not valid JSON: ") + e.what());
  }
}

}  // namespace hearth::profiles

namespace hearth::profiles {

std::string gpu_choice_of(const std::string& text) {
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    return j.contains("gpu_choice") && j["gpu_choice"].is_string() ? j["gpu_choice"].get<std::string>() : "";
  } catch (const nlohmann::json::exception&) {
    return "";
  }
}

}  // namespace hearth::profiles
