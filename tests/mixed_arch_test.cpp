// A cluster of mixed architectures: one stage is an arm64 hearthd (scripts/build-arm64.sh) run
// under qemu-aarch64, the others are this build's, and the pipeline generates what `hearth run`
// generates on this device alone. The wire format is architecture-neutral (transport/hearth.capnp):
// Cap'n Proto headers and raw little-endian activation frames cross from x86-64 to ARM64 and back.
//
// Needs HEARTH_ARM64_HEARTHD (an aarch64 hearthd; ctest sets it to build-arm64/bin/hearthd) and
// qemu-aarch64 (Debian qemu-user); skips with a message without them.
#include <doctest/doctest.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "tests/cluster_util.h"

using hearth::test::Cluster;
using hearth::test::TempDir;

namespace {

// First directory of $PATH holding an executable `name`.
std::optional<std::string> find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    const size_t end = std::min(dirs.find(':', start), dirs.size());
    const std::string candidate = dirs.substr(start, end - start) + "/" + name;
    if (end > start && ::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return std::nullopt;
}

// ELF e_machine of a file (183 = EM_AARCH64, 62 = EM_X86_64), or -1.
int elf_machine(const std::string& file) {
  std::ifstream f(file, std::ios::binary);
  unsigned char h[20] = {};
  if (!f.read(reinterpret_cast<char*>(h), sizeof h) || h[0] != 0x7f || h[1] != 'E' || h[2] != 'L' || h[3] != 'F') return -1;
  return h[18] | (h[19] << 8);  // little-endian ELF (EI_DATA = 1), as both targets are
}

// qemu-aarch64 with the arm64 libraries of Debian multiarch, loader and libc included
// (cmake/aarch64-linux-gnu.cmake says why).
std::vector<std::string> emulated(const std::string& qemu, const std::string& hearthd) { return {qemu, "-L", "/", hearthd}; }

}  // namespace

TEST_SUITE("mixed_arch") {
  TEST_CASE("an arm64 hearthd under qemu as one stage among x86-64 stages generates what one device generates") {
    const char* arm = std::getenv("HEARTH_ARM64_HEARTHD");
    if (arm == nullptr || *arm == '\0' || !std::filesystem::exists(arm)) {
      MESSAGE(
          "skipped: HEARTH_ARM64_HEARTHD does not name an arm64 hearthd (build one with scripts/build-arm64.sh; "
          "ctest passes build-arm64/bin/hearthd): "
          << (arm ? std::string(arm) : std::string("(unset)")));
      return;
    }
    const auto qemu = find_program("qemu-aarch64");
    if (!qemu) {
      MESSAGE("skipped: qemu-aarch64 is not installed (Debian package qemu-user; scripts/build-arm64.sh installs it)");
      return;
    }
    REQUIRE_MESSAGE(elf_machine(arm) == 183, arm << " is not an AArch64 executable");
    auto model = hearth::test::shared_file("models/stories260K/stories260K.gguf");
    if (!model) return;

    TempDir dir;
    Cluster c(dir);
    c.start("head");
    c.start("arm", {}, emulated(*qemu, arm));
    c.start("b");

    // The head lists the emulated daemon with the architecture it reads at start (uname), the
    // others with this machine's.
    struct utsname self {};
    REQUIRE(::uname(&self) == 0);
    const auto devices = c.cli({"devices", "--json"});
    REQUIRE(devices.exit_code == 0);
    for (const auto& d : nlohmann::json::parse(devices.out)) {
      CAPTURE(d.dump());
      CHECK(d["arch"] == (d["name"] == "arm" ? std::string("aarch64") : std::string(self.machine)));
    }

    const auto single =
        hearth::test::run_cli({"run", "--model", *model, "--prompt", "Once upon a time", "-n", "40", "--temp", "0"});
    REQUIRE(single.exit_code == 0);
    REQUIRE(!single.out.empty());
    // The arm64 stage in the middle (activations in from x86-64 and out to it), then last (it
    // applies the output head, samples and sends the token ids back).
    for (const std::string split : {"head:2,arm:2,b:1", "head:2,b:1,arm:2"}) {
      CAPTURE(split);
      const auto l = c.cli({"launch", "--model", *model, "--split", split, "--json"});
      REQUIRE_MESSAGE(l.exit_code == 0, l.err);
      int arm_layers = 0;
      const auto plan = nlohmann::json::parse(l.out);
      for (const auto& st : plan["stages"])
        if (st["device"] == "arm") arm_layers = st["last_layer"].get<int>() - st["first_layer"].get<int>();
      CHECK(arm_layers == 2);
      const auto gen = c.cli({"generate", "--prompt", "Once upon a time", "-n", "40", "--temp", "0"});
      CAPTURE(gen.err);
      CHECK(gen.exit_code == 0);
      CHECK(gen.out == single.out);
    }
  }

}  // TEST_SUITE
