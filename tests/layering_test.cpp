// The floors of docs/architecture.md, checked on the sources: a file may include headers of its
// own floor and of the floors below it, never of one above or beside it. The build already
// refuses most of it (each library's include root holds only its folder, and it links only the
// floors below); this test also catches what linking cannot (the gateway may use one header of
// the cluster, the node's rooms nothing of the head's) and keeps the partitioner pure (no I/O, no
// threads) and the runtime off the network.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

// Floor -> the floors (folders under the repository root, or single headers) its files may include.
const std::map<std::string, std::set<std::string>>& allowed() {
  static const std::map<std::string, std::set<std::string>> rules = {
      {"partitioner", {"partitioner"}},
      {"transport", {"transport"}},
      {"runtime/format", {"runtime/format"}},
      {"runtime/text", {"runtime/text", "runtime/format"}},
      {"runtime/kernels", {"runtime/kernels", "runtime/format"}},
      {"runtime/model", {"runtime/model", "runtime/kernels", "runtime/text", "runtime/format", "partitioner"}},
      {"runtime/gpu", {"runtime/gpu", "runtime/model", "runtime/kernels", "runtime/text", "runtime/format", "partitioner"}},
      {"profiles",
       {"profiles", "runtime/gpu", "runtime/model", "runtime/kernels", "runtime/text", "runtime/format", "partitioner"}},
      {"cluster",
       {"cluster", "runtime/gpu", "runtime/model", "runtime/kernels", "runtime/text", "runtime/format", "partitioner", "profiles",
        "transport"}},
      // The gateway reaches the head over the wire; of the cluster it uses the wire conversions only.
      {"gateway", {"gateway", "transport", "runtime/model", "runtime/text", "runtime/format", "cluster/wire_convert.h"}},
      {"tools", {"tools"}},
  };
  return rules;
}

// The floor a repository path belongs to ("runtime/model/stage.cpp" -> "runtime/model").
std::string floor_of(const std::string& path) {
  std::string best;
  for (const auto& [floor, _] : allowed())
    if (path.rfind(floor + "/", 0) == 0 && floor.size() > best.size()) best = floor;
  return best;
}

bool may_include(const std::string& floor, const std::string& header) {
  for (const std::string& ok : allowed().at(floor))
    if (header == ok || header.rfind(ok + "/", 0) == 0) return true;
  return false;
}

struct Source {
  std::string path;                          // relative to the repository root
  std::vector<std::string> includes;         // "..." includes
  std::vector<std::string> system_includes;  // <...> includes
};

std::vector<Source> sources() {
  const fs::path root = HEARTH_SOURCE_DIR;
  std::vector<Source> out;
  const std::regex local(R"re(^\s*#\s*include\s+"([^"]+)")re"), system(R"re(^\s*#\s*include\s+<([^>]+)>)re");
  for (const auto& [floor, _] : allowed()) {
    for (const auto& e : fs::recursive_directory_iterator(root / floor)) {
      const std::string ext = e.path().extension();
      if (!e.is_regular_file() || (ext != ".cpp" && ext != ".h" && ext != ".in")) continue;
      Source s{fs::relative(e.path(), root).string(), {}, {}};
      if (floor_of(s.path) != floor) continue;  // a sub-floor's file, read under its own name
      std::ifstream f(e.path());
      std::smatch m;
      for (std::string line; std::getline(f, line);) {
        if (std::regex_search(line, m, local)) s.includes.push_back(m[1]);
        else if (std::regex_search(line, m, system)) s.system_includes.push_back(m[1]);
      }
      out.push_back(std::move(s));
    }
  }
  return out;
}

}  // namespace

TEST_CASE("layering: no file includes a floor above or beside its own") {
  const auto all = sources();
  REQUIRE(all.size() > 100);  // the tree was found
  std::vector<std::string> violations;
  for (const Source& s : all) {
    const std::string floor = floor_of(s.path);
    for (const std::string& h : s.includes)
      if (h.find('/') != std::string::npos && !may_include(floor, h)) violations.push_back(s.path + " includes " + h);
  }
  for (const auto& v : violations) MESSAGE(v);
  CHECK(violations.empty());
}

TEST_CASE("layering: the rule itself refuses a reverse include") {
  CHECK_FALSE(may_include("runtime/model", "cluster/node.h"));
  CHECK_FALSE(may_include("runtime/text", "runtime/kernels/kernels.h"));
  CHECK_FALSE(may_include("gateway", "cluster/head.h"));
  CHECK_FALSE(may_include("partitioner", "runtime/model/stage.h"));
  CHECK(may_include("gateway", "cluster/wire_convert.h"));
  CHECK(floor_of("runtime/model/stage.cpp") == "runtime/model");
  CHECK(floor_of("runtime/kernels/kernels_avx2.cpp") == "runtime/kernels");
}

TEST_CASE("layering: the partitioner is pure and the runtime knows no network") {
  const std::set<std::string> io = {"fstream", "thread", "mutex", "atomic", "condition_variable", "future", "filesystem"};
  std::vector<std::string> violations;
  for (const Source& s : sources()) {
    const std::string floor = floor_of(s.path);
    for (const std::string& h : s.system_includes) {
      if (floor == "partitioner" && io.count(h)) violations.push_back(s.path + " includes <" + h + ">");
      const bool network = h.find("zmq") != std::string::npos || h.find("capnp") != std::string::npos ||
                           h.find("asio") != std::string::npos || h.find("beast") != std::string::npos;
      if (floor.rfind("runtime", 0) == 0 && network) violations.push_back(s.path + " includes <" + h + ">");
    }
  }
  for (const auto& v : violations) MESSAGE(v);
  CHECK(violations.empty());
}

TEST_CASE("layering: the node's rooms include nothing of the head's") {
  // The node reaches the head's role through cluster/host.h (HeadRole) only; apps/hearthd/main.cpp
  // puts the two together.
  const std::set<std::string> node_side = {"cluster/node.h",           "cluster/node.cpp",        "cluster/stage_runner.h",
                                           "cluster/stage_runner.cpp", "cluster/stage_loader.h",  "cluster/stage_loader.cpp",
                                           "cluster/heartbeater.h",    "cluster/heartbeater.cpp", "cluster/link_prober.h",
                                           "cluster/link_prober.cpp"};
  const std::set<std::string> head_side = {"cluster/head.h",
                                           "cluster/scheduler.h",
                                           "cluster/launch.h",
                                           "cluster/device_registry.h",
                                           "cluster/pairing_throttle.h",
                                           "cluster/probe_queue.h"};
  std::vector<std::string> violations;
  size_t seen = 0;
  for (const Source& s : sources()) {
    if (!node_side.count(s.path)) continue;
    ++seen;
    for (const std::string& h : s.includes)
      if (head_side.count(h)) violations.push_back(s.path + " includes " + h);
  }
  CHECK(seen == node_side.size());
  for (const auto& v : violations) MESSAGE(v);
  CHECK(violations.empty());
}
