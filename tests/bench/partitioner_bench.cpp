// hearth_bench_partitioner: how much the planner's search buys over the splits other tools use,
// and how long it takes. Run by scripts/bench-partitioner; prints markdown for docs/partitioner.md.
//
//   hearth_bench_partitioner [PROFILES_DIR]   (default: the source tree's profiles/devices)
//
// A benchmark, not a test: it checks nothing and its timings depend on the machine.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "partitioner/partitioner.h"
#include "profiles/profiler.h"

namespace {

namespace pt = hearth::partitioner;

// Our runtime's KV cache is f32 (runtime/model/kv_cache.h), as `hearth plan` assumes.
constexpr double kRuntimeKvBytesPerElem = 4;

// Access links beyond the profiles' own (Ethernet for the Pi, Jetson and desktop; Wi-Fi for the
// laptops and the phone): the same device placed elsewhere in the home.
constexpr pt::Link kWifiNear{200e6 / 8, 0.003};  // 802.11ac, same room: 200 Mbit/s, 3 ms to the AP
constexpr pt::Link kWifiFar{40e6 / 8, 0.008};    // two walls away: 40 Mbit/s, 8 ms

std::map<std::string, pt::DeviceProfile> load_profiles(const std::string& dir) {
  std::map<std::string, pt::DeviceProfile> out;
  for (const char* stem : {"raspberry-pi-5-8gb", "x86-laptop-16gb", "jetson-orin-nano-8gb", "macbook-air-m2-16gb", "desktop-32gb",
                           "android-phone-12gb"}) {
    const std::string path = dir + "/" + stem + ".json";
    std::ifstream f(path);
    if (!f) throw std::runtime_error("cannot read " + path + "; pass the profiles directory as the first argument");
    std::ostringstream s;
    s << f.rdbuf();
    out[stem] = hearth::profiles::device_profile_from_json(s.str());
  }
  return out;
}

struct Member {
  std::string stem;  // profile file name
  char link = 'p';   // 'p' = the profile's access link, 'n' = near Wi-Fi, 'f' = far Wi-Fi
};

struct Scenario {
  std::string title;
  std::vector<Member> members;  // the first is the head
  std::string preset;
  std::string type;
};

const std::map<std::string, std::string> kShort{{"raspberry-pi-5-8gb", "Pi5"},      {"x86-laptop-16gb", "Laptop"},
                                                {"jetson-orin-nano-8gb", "Jetson"}, {"macbook-air-m2-16gb", "Mac"},
                                                {"desktop-32gb", "Desktop"},        {"android-phone-12gb", "Phone"}};

std::vector<pt::DeviceProfile> build_devices(const std::map<std::string, pt::DeviceProfile>& profiles,
                                             const std::vector<Member>& members) {
  std::vector<pt::DeviceProfile> devices;
  for (const Member& m : members) {
    pt::DeviceProfile d = profiles.at(m.stem);
    d.name = kShort.at(m.stem) + "#" + std::to_string(devices.size());
    if (m.link == 'n') d.link = kWifiNear;
    if (m.link == 'f') d.link = kWifiFar;
    devices.push_back(std::move(d));
  }
  return devices;
}

std::string describe(const std::vector<Member>& members) {
  std::string s;
  for (const Member& m : members)
    s += (s.empty() ? "" : ", ") + kShort.at(m.stem) + (m.link == 'n' ? " (wifi)" : m.link == 'f' ? " (far wifi)" : "");
  return s;
}

pt::PartitionOptions options(pt::Algorithm a, pt::Objective o = pt::Objective::latency, int streams = 1) {
  pt::PartitionOptions opt;
  opt.algorithm = a;
  opt.objective = o;
  opt.streams = streams;
  opt.ctx = 4096;
  opt.prompt_tokens = 512;
  opt.kv_bytes_per_elem = kRuntimeKvBytesPerElem;
  return opt;
}

pt::ModelSpec spec_of(const std::string& preset, const std::string& type) {
  pt::ModelShape shape = *pt::preset_shape(preset);
  shape.weight_type = type;
  return pt::model_spec_from_shape(shape);
}

std::string cell(double v, const char* format) {
  char buf[32];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

void quality_table(const std::map<std::string, pt::DeviceProfile>& profiles) {
  const std::vector<Scenario> suite{
      {"phone + Pi", {{"android-phone-12gb"}, {"raspberry-pi-5-8gb"}}, "llama-3.2-1b", "q8_0"},
      {"Pi + desktop", {{"raspberry-pi-5-8gb"}, {"desktop-32gb"}}, "tinyllama-1.1b", "f16"},
      {"Pi + laptop", {{"raspberry-pi-5-8gb"}, {"x86-laptop-16gb"}}, "llama-3.2-3b", "q4_0"},
      {"phone, Pi, Jetson", {{"android-phone-12gb"}, {"raspberry-pi-5-8gb"}, {"jetson-orin-nano-8gb"}}, "llama-3-8b", "q4_0"},
      {"laptop + 2 Pis", {{"x86-laptop-16gb"}, {"raspberry-pi-5-8gb"}, {"raspberry-pi-5-8gb", 'f'}}, "llama-3-8b", "q8_0"},
      {"4 Pis",
       {{"raspberry-pi-5-8gb"}, {"raspberry-pi-5-8gb"}, {"raspberry-pi-5-8gb", 'n'}, {"raspberry-pi-5-8gb", 'f'}},
       "llama-2-13b",
       "q4_0"},
      {"Mac, laptop, Jetson, Pi",
       {{"macbook-air-m2-16gb"}, {"x86-laptop-16gb"}, {"jetson-orin-nano-8gb"}, {"raspberry-pi-5-8gb", 'n'}},
       "qwen2.5-14b",
       "q4_0"},
      {"Pi head + 4 others",
       {{"raspberry-pi-5-8gb"}, {"desktop-32gb"}, {"macbook-air-m2-16gb"}, {"x86-laptop-16gb", 'f'}, {"android-phone-12gb"}},
       "qwen2.5-32b",
       "q4_0"},
      {"6 small devices",
       {{"jetson-orin-nano-8gb"},
        {"jetson-orin-nano-8gb"},
        {"raspberry-pi-5-8gb"},
        {"raspberry-pi-5-8gb", 'f'},
        {"android-phone-12gb"},
        {"x86-laptop-16gb", 'n'}},
       "qwen2.5-32b",
       "q4_0"},
      {"7 mixed",
       {{"desktop-32gb"},
        {"x86-laptop-16gb"},
        {"macbook-air-m2-16gb"},
        {"jetson-orin-nano-8gb"},
        {"raspberry-pi-5-8gb"},
        {"raspberry-pi-5-8gb", 'f'},
        {"android-phone-12gb"}},
       "llama-3-70b",
       "q4_0"},
      {"8 mixed, phone head",
       {{"android-phone-12gb"},
        {"raspberry-pi-5-8gb"},
        {"jetson-orin-nano-8gb"},
        {"x86-laptop-16gb"},
        {"desktop-32gb"},
        {"macbook-air-m2-16gb", 'f'},
        {"raspberry-pi-5-8gb", 'n'},
        {"jetson-orin-nano-8gb"}},
       "llama-3-70b",
       "q4_0"},
      {"8 mixed, desktop head",
       {{"desktop-32gb"},
        {"macbook-air-m2-16gb"},
        {"x86-laptop-16gb", 'n'},
        {"jetson-orin-nano-8gb"},
        {"jetson-orin-nano-8gb"},
        {"raspberry-pi-5-8gb"},
        {"raspberry-pi-5-8gb"},
        {"android-phone-12gb"}},
       "qwen2.5-72b",
       "q4_0"},
  };

  std::printf("### Predicted decode latency: dp vs the memory and equal splits\n\n");
  std::printf(
      "One stream, latency objective, 4096-token f32 KV cache, links from the profiles' access links "
      "(wifi: 200 Mbit/s + 3 ms to the AP; far wifi: 40 Mbit/s + 8 ms). The head is listed first. "
      "ms/token = R(1), one token around the ring; ratio = baseline / dp (higher = dp better); "
      "\"no fit\" = the split overflows a device's memory.\n\n");
  std::printf(
      "| N | devices (head first) | model | dp ms/tok | dp stages | memory ms/tok | equal ms/tok | memory/dp | equal/dp |\n");
  std::printf("|---|---|---|---:|---:|---:|---:|---:|---:|\n");
  for (const Scenario& s : suite) {
    const auto devices = build_devices(profiles, s.members);
    const auto links = pt::link_table_from_access_links(devices);
    const pt::ModelSpec spec = spec_of(s.preset, s.type);
    double ms[3] = {0, 0, 0};
    int stages = 0;
    const pt::Algorithm algs[3] = {pt::Algorithm::dp, pt::Algorithm::memory, pt::Algorithm::equal};
    for (int i = 0; i < 3; ++i) {
      const pt::PlanResult r = pt::plan_partition(spec, devices, links, options(algs[i]));
      if (!r.ok()) continue;
      ms[i] = r.plan->predicted.ms_per_token;
      if (i == 0) stages = static_cast<int>(r.plan->stages.size());
    }
    const auto show = [](double v) { return v > 0 ? cell(v, "%.1f") : std::string("no fit"); };
    const auto ratio = [&](double v) { return v > 0 && ms[0] > 0 ? cell(v / ms[0], "%.2fx") : std::string("-"); };
    std::printf("| %zu | %s | %s %s (%s) | %s | %d | %s | %s | %s | %s |\n", s.members.size(), describe(s.members).c_str(),
                s.preset.c_str(), s.type.c_str(), pt::format_bytes(pt::total_weight_bytes(spec)).c_str(), show(ms[0]).c_str(),
                stages, show(ms[1]).c_str(), show(ms[2]).c_str(), ratio(ms[1]).c_str(), ratio(ms[2]).c_str());
  }
  std::printf("\n");
}

// Best of `repeats` wall-clock runs of plan_partition, in ms.
double time_plan(const pt::ModelSpec& spec, const std::vector<pt::DeviceProfile>& devices, const pt::LinkTable& links,
                 const pt::PartitionOptions& o, bool& exact, int repeats = 3) {
  double best = 1e300;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const pt::PlanResult r = pt::plan_partition(spec, devices, links, o);
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    exact = r.ok() && r.plan->exact;
    if (!r.ok()) throw std::runtime_error("timing case infeasible: " + r.error.message);
  }
  return best;
}

void timing_table(const std::map<std::string, pt::DeviceProfile>& profiles) {
  const std::vector<std::string> cycle{"desktop-32gb",         "macbook-air-m2-16gb", "x86-laptop-16gb",
                                       "jetson-orin-nano-8gb", "raspberry-pi-5-8gb",  "android-phone-12gb"};
  const pt::ModelSpec spec = spec_of("llama-3-70b", "q4_0");
  std::printf("### Planning time (dp), llama-3-70b q4_0 (80 blocks)\n\n");
  std::printf(
      "Devices cycle through the six profiles. \"6 types\": repeats are identical, so the DP groups them; "
      "\"all distinct\": each device's memory and access link differ slightly, so no two can be grouped. "
      "Best of 3 runs, one thread; (fast) = dp switched to its fast path, the optimum is not guaranteed.\n\n");
  std::printf("| devices | kind | latency | throughput (4 streams) | ttft (512-token prompt) |\n");
  std::printf("|---:|---|---:|---:|---:|\n");
  for (int n : {8, 12, 16}) {
    for (bool distinct : {false, true}) {
      std::vector<pt::DeviceProfile> devices;
      for (int i = 0; i < n; ++i) {
        pt::DeviceProfile d = profiles.at(cycle[static_cast<size_t>(i) % cycle.size()]);
        d.name = kShort.at(cycle[static_cast<size_t>(i) % cycle.size()]) + "#" + std::to_string(i);
        if (distinct) {
          d.usable_memory_bytes *= 1.0 - 0.01 * i;
          d.link = pt::Link{d.link->bandwidth_bytes_per_s * (1.0 - 0.02 * i), d.link->latency_s + 1e-5 * i};
        }
        devices.push_back(std::move(d));
      }
      const auto links = pt::link_table_from_access_links(devices);
      std::string cells;
      for (auto [objective, streams] :
           {std::pair{pt::Objective::latency, 1}, std::pair{pt::Objective::throughput, 4}, std::pair{pt::Objective::ttft, 1}}) {
        bool exact = true;
        const double ms = time_plan(spec, devices, links, options(pt::Algorithm::dp, objective, streams), exact);
        cells += " | " + cell(ms, ms < 10 ? "%.1f ms" : "%.0f ms") + (exact ? "" : " (fast)");
      }
      std::printf("| %d | %s%s |\n", n, distinct ? "all distinct" : "6 types", cells.c_str());
      std::fflush(stdout);
    }
  }
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const auto profiles = load_profiles(argc > 1 ? argv[1] : HEARTH_DEVICE_PROFILES_DIR);
    quality_table(profiles);
    timing_table(profiles);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hearth_bench_partitioner: %s\n", e.what());
    return 1;
  }
  return 0;
}
