// `hearth profile`: measures what this device can do (memory, bandwidth, decode and prefill
// speed) for the planner, and keeps the result in DATA_DIR/profile.json.
//
// Speeds are hardware facts and take seconds to measure, so they are cached; free memory changes
// from minute to minute, so it is read again on every run.
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>

#include "apps/hearth/commands.h"
#include "apps/hearth/gpu_option.h"
#include "partitioner/explain.h"
#include "profiles/profiler.h"

namespace hearth::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct ProfileArgs {
  bool json = false;
  bool quick = false;
  int threads = 0;
  uint64_t memory_limit = 0;
  std::string name;
  std::string data_dir;
  bool refresh = false;
  std::string gpu = "auto";
};

fs::path default_data_dir() {
  if (const char* d = std::getenv("HEARTH_DATA_DIR"); d && *d) return d;
  const char* home = std::getenv("HOME");
  if (!home || !*home) throw std::runtime_error("cannot find a data directory: set HEARTH_DATA_DIR or HOME, or pass --data-dir");
  return fs::path(home) / ".local" / "share" / "hearth";
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) return "this device";
  return buf;
}

std::string now_utc() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The cached profile, or nothing when absent or unreadable (then it is measured again).
std::optional<json> read_cache(const fs::path& path) {
  std::ifstream f(path);
  if (!f) return std::nullopt;
  try {
    json j = json::parse(f);
    profiles::device_profile_from_json(j.dump());  // the planner must be able to read it
    if (!j.contains("measured_with") || !j.contains("system")) return std::nullopt;
    return j;
  } catch (const std::exception& e) {
    spdlog::warn("ignoring the unreadable cached profile {}: {}", path.string(), e.what());
    return std::nullopt;
  }
}

void write_cache(const fs::path& path, const json& j) {
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  if (ec) throw std::runtime_error("cannot create the data directory " + path.parent_path().string() + ": " + ec.message());
  // Written whole then renamed, so a planner reading it never sees half a file.
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream f(tmp);
    if (!(f << j.dump(2) << "\n")) throw std::runtime_error("cannot write " + tmp.string());
  }
  fs::rename(tmp, path, ec);
  if (ec) throw std::runtime_error("cannot write " + path.string() + ": " + ec.message());
}

// Why a cached measurement cannot be reused for these options, or "" when it can. A full
// measurement serves a --quick request; the reverse is re-measured.
std::string cache_mismatch(const json& cached, const ProfileArgs& a, int threads) {
  const json& w = cached["measured_with"];
  if (w.value("threads", 0) != threads) return "it used " + std::to_string(w.value("threads", 0)) + " threads";
  if (w.value("gpu", std::string("none")) != a.gpu) return "it was measured with --gpu " + w.value("gpu", std::string("none"));
  if (w.value("quick", true) && !a.quick) return "it was a --quick measurement";
  if (!cached.contains("storage_read_bytes_per_s")) return "it has no storage figure";
  return "";
}

std::string gb_s(double bytes_per_s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GB/s", bytes_per_s / 1e9);
  return buf;
}

void print_summary(const json& j, const std::string& origin) {
  const json& s = j["system"];
  const auto bytes = [](const json& v) { return partitioner::format_bytes(v.get<double>()); };
  std::printf("device         %s\n", j["name"].get<std::string>().c_str());
  std::printf("speeds         %s\n", origin.c_str());
  std::printf("cpu            %s (%s), %d cores, %d threads used; %s\n", s.value("cpu", "?").c_str(),
              s.value("arch", "?").c_str(), s.value("cores", 0), s.value("threads", 0), s.value("os", "?").c_str());
  std::string limits = "available " + bytes(s["available_memory_bytes"]) + " of " + bytes(s["total_memory_bytes"]);
  if (s.value("cgroup_limit_bytes", 0.0) > 0) limits += ", cgroup limit " + bytes(s["cgroup_limit_bytes"]);
  if (j["measured_with"].value("memory_limit_bytes", 0.0) > 0)
    limits += ", --memory-limit " + bytes(j["measured_with"]["memory_limit_bytes"]);
  std::printf("memory         %s usable (%s, minus a safety margin; read now)\n", bytes(j["usable_memory_bytes"]).c_str(),
              limits.c_str());
  std::printf("bandwidth      %s streaming read\n", gb_s(j["memory_bandwidth_bytes_per_s"].get<double>()).c_str());
  std::string decode;
  for (const auto& [type, rate] : j["decode_bytes_per_s"].items())
    decode += (decode.empty() ? "" : ", ") + type + " " + gb_s(rate.get<double>());
  std::printf("decode         %s (weights streamed by a one-token matvec)\n", decode.c_str());
  std::printf("prefill        %.1f GFLOP/s (batched q8_0 matmul)\n", j["prefill_flop_s"].get<double>() / 1e9);
  std::printf("step overhead  %.2f ms\n", j["step_overhead_s"].get<double>() * 1e3);
  if (j.contains("storage_read_bytes_per_s"))
    std::printf("storage        %s sequential read with nothing cached (%s) in %s; %s free\n",
                gb_s(j["storage_read_bytes_per_s"].get<double>()).c_str(),
                j["storage"].value("direct_io", false) ? "direct I/O" : "page cache dropped",
                j["storage"].value("path", std::string("?")).c_str(), bytes(j["storage_free_bytes"]).c_str());
  else if (j.contains("storage_error"))
    std::printf("storage        not measured: %s\n", j["storage_error"].get<std::string>().c_str());
  if (j.contains("gpu")) {
    const json& g = j["gpu"];
    std::string rates;
    for (const auto& [type, rate] : g["decode_bytes_per_s"].items())
      rates += (rates.empty() ? "" : ", ") + type + " " + gb_s(rate.get<double>());
    std::printf("gpu            %s: %s for weights (%s); decode %s; prefill %.1f GFLOP/s; %.2f ms per layer's submissions\n",
                g["name"].get<std::string>().c_str(), partitioner::format_bytes(g["memory_bytes"].get<double>()).c_str(),
                g["unified_memory"].get<bool>() ? "shared with RAM" : "its own memory", rates.c_str(),
                g["prefill_flop_s"].get<double>() / 1e9, g["layer_overhead_s"].get<double>() * 1e3);
  } else if (j.contains("gpu_error")) {
    std::printf("gpu            none used: %s\n", j["gpu_error"].get<std::string>().c_str());
  }
}

void profile(const ProfileArgs& a) {
  const fs::path dir = a.data_dir.empty() ? default_data_dir() : fs::path(a.data_dir);
  const fs::path path = dir / "profile.json";
  const profiles::SystemInfo system = profiles::read_system_info();
  const int threads = a.threads > 0 ? a.threads : system.cores;

  std::optional<json> cached = a.refresh ? std::nullopt : read_cache(path);
  if (cached) {
    if (const std::string why = cache_mismatch(*cached, a, threads); !why.empty()) {
      spdlog::info("re-measuring: the cached profile in {} does not fit this request ({})", path.string(), why);
      cached.reset();
    }
  }

  json j;
  std::string origin;
  if (cached) {
    j = *cached;
    origin = "cached from " + j.value("measured_at", std::string("?")) + " in " + path.string() + " (--refresh re-measures)";
  } else {
    spdlog::info("measuring this device ({}, {} threads)...", a.quick ? "quick, a few seconds" : "full, about 10 s", threads);
    const auto t0 = std::chrono::steady_clock::now();
    std::error_code ec;
    fs::create_directories(dir, ec);  // the storage is measured there (write_cache says what failed)
    const profiles::Profile p = profiles::measure_profile({.name = "",
                                                           .threads = threads,
                                                           .memory_limit = a.memory_limit,
                                                           .quick = a.quick,
                                                           .storage_dir = dir.string(),
                                                           .gpu = a.gpu});
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    j = json::parse(profiles::profile_to_json(p));
    if (!p.storage.error.empty()) j["storage_error"] = p.storage.error;
    if (!p.gpu_error.empty()) j["gpu_error"] = p.gpu_error;
    j["measured_at"] = now_utc();
    j["measured_with"] = {{"quick", a.quick}, {"threads", threads}, {"seconds", took}, {"gpu", a.gpu}};
    char took_text[32];
    std::snprintf(took_text, sizeof took_text, "%.1f s", took);
    origin = std::string("measured now in ") + took_text + ", saved to " + path.string();
  }

  // Name and memory are not measurements: apply the current ones to a cached profile too.
  std::string name = !a.name.empty() ? a.name : cached ? j.value("name", std::string()) : std::string();
  j["name"] = name.empty() ? host_name() : name;
  j["usable_memory_bytes"] = static_cast<double>(profiles::usable_memory(system, a.memory_limit));
  j["measured_with"]["memory_limit_bytes"] = a.memory_limit;
  j["system"]["available_memory_bytes"] = system.available_memory_bytes;
  j["system"]["total_memory_bytes"] = system.total_memory_bytes;
  j["system"]["cgroup_limit_bytes"] = system.cgroup_limit_bytes;
  write_cache(path, j);

  if (a.json) {
    std::cout << j.dump(2) << "\n";
    return;
  }
  print_summary(j, origin);
  std::printf("\nplan with it: hearth plan --device %s ...\n", path.string().c_str());
}

}  // namespace

void add_profile_command(CLI::App& app) {
  auto a = std::make_shared<ProfileArgs>();
  CLI::App* cmd = app.add_subcommand(
      "profile",
      "Measure this device for the planner (memory, bandwidth, decode and prefill speed); the result is kept in "
      "DATA_DIR/profile.json and reused until --refresh");
  cmd->add_flag("--json", a->json, "Print the profile as JSON (the format `hearth plan --device` reads)");
  cmd->add_flag("--quick", a->quick, "Measure in a few seconds instead of about ten (less precise)");
  cmd->add_option("-t,--threads", a->threads, "Compute threads to measure with (default: all cores)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--memory-limit", a->memory_limit, "Let hearth use at most this much memory, in bytes (suffixes: 8GB, 512MB)")
      ->transform(CLI::AsSizeValue(true));
  cmd->add_option("--name", a->name, "Device name in plans (default: the host name)");
  cmd->add_option("--data-dir", a->data_dir, "Where profile.json is kept (default: $HEARTH_DATA_DIR or ~/.local/share/hearth)");
  cmd->add_flag("--refresh", a->refresh, "Measure again even if a cached profile exists");
  add_gpu_option(cmd, a->gpu);
  // `hearth --data-dir X profile` names the directory with the global option (the cluster
  // commands'): honour it as every command does, rather than measure into the default one.
  cmd->callback([a, &app] {
    const CLI::Option* global = app.get_option_no_throw("--data-dir");
    if (a->data_dir.empty() && global != nullptr && global->count() > 0) a->data_dir = global->as<std::string>();
    profile(*a);
  });
}

}  // namespace hearth::cli
