// A device's GPU as the planner sees it (partitioner::GpuProfile): read from and written to the
// profile JSON of profiles/devices/ and `hearth profile`, and carried on the wire from a daemon to
// the head, refused when its figures would break the planner's arithmetic.
#include <capnp/message.h>
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "cluster/wire_convert.h"
#include "profiles/profiler.h"

namespace {

hearth::profiles::Profile with_gpu(bool unified) {
  hearth::profiles::Profile p;
  p.device.name = "laptop";
  p.device.usable_memory_bytes = 12e9;
  p.device.memory_bandwidth_bytes_per_s = 60e9;
  p.device.prefill_flop_s = 4e11;
  hearth::partitioner::GpuProfile g;
  g.name = "NVIDIA GeForce RTX 4060 Laptop GPU";
  g.memory_bytes = 7.7e9;
  g.unified_memory = unified;
  g.memory_bandwidth_bytes_per_s = 2.56e11;
  g.decode_bytes_per_s = {{"q4_0", 6.4e10}, {"q8_0", 1e11}};
  g.prefill_flop_s = 2e12;
  g.layer_overhead_s = 3e-4;
  p.device.gpu = g;
  return p;
}

bool same(const hearth::partitioner::GpuProfile& a, const hearth::partitioner::GpuProfile& b) {
  return a.name == b.name && a.memory_bytes == b.memory_bytes && a.unified_memory == b.unified_memory &&
         a.memory_bandwidth_bytes_per_s == b.memory_bandwidth_bytes_per_s && a.decode_bytes_per_s == b.decode_bytes_per_s &&
         a.prefill_flop_s == b.prefill_flop_s && a.layer_overhead_s == b.layer_overhead_s;
}

}  // namespace

TEST_SUITE("gpu_profile") {
  TEST_CASE("a GPU in a profile survives JSON and the wire; a profile without one has none") {
    for (const bool unified : {false, true}) {
      const hearth::profiles::Profile p = with_gpu(unified);
      const auto back = hearth::profiles::device_profile_from_json(hearth::profiles::profile_to_json(p));
      REQUIRE(back.gpu.has_value());
      CHECK(same(*back.gpu, *p.device.gpu));

      capnp::MallocMessageBuilder b;
      auto wire = b.initRoot<hearth::transport::wire::DeviceProfile>();
      hearth::cluster::to_wire(p, wire);
      const auto received = hearth::cluster::from_wire(wire.asReader());
      REQUIRE(received.gpu.has_value());
      CHECK(same(*received.gpu, *p.device.gpu));
    }
    // The choice a GPU was measured for goes with it (hearthd measures again for another).
    hearth::profiles::Profile chosen = with_gpu(false);
    chosen.gpu_choice = "1";
    CHECK(hearth::profiles::gpu_choice_of(hearth::profiles::profile_to_json(chosen)) == "1");
    CHECK(hearth::profiles::gpu_choice_of(hearth::profiles::profile_to_json(with_gpu(false))).empty());
    hearth::profiles::Profile none = with_gpu(false);
    none.device.gpu.reset();
    CHECK_FALSE(hearth::profiles::device_profile_from_json(hearth::profiles::profile_to_json(none)).gpu.has_value());
    capnp::MallocMessageBuilder b;
    auto wire = b.initRoot<hearth::transport::wire::DeviceProfile>();
    hearth::cluster::to_wire(none, wire);
    CHECK_FALSE(hearth::cluster::from_wire(wire.asReader()).gpu.has_value());
  }

  TEST_CASE("a GPU whose figures would break the planner is refused, from a file and from the wire") {
    const hearth::profiles::Profile p = with_gpu(false);
    const std::string good = hearth::profiles::profile_to_json(p);
    for (const auto& [from, to] :
         {std::pair<std::string, std::string>{"\"prefill_flop_s\": 2000000000000.0", "\"prefill_flop_s\": 0"},
          {"\"unified_memory\": false", "\"unified_memory\": \"no\""},
          {"\"layer_overhead_s\": 0.0003", "\"layer_overhead_s\": -1"},
          {"\"memory_bytes\": 7700000000.0", "\"memory_bytes\": \"big\""},
          {"\"memory_bytes\": 7700000000.0", "\"memory_bytes\": 1e400"},  // reads as infinity
          {"\"q4_0\": 64000000000.0", "\"q4_0\": -1"}}) {
      CAPTURE(from);
      std::string bad = good;
      const auto at = bad.find(from);
      REQUIRE(at != std::string::npos);
      bad.replace(at, from.size(), to);
      CHECK_THROWS_AS(hearth::profiles::device_profile_from_json(bad), std::runtime_error);
    }
    capnp::MallocMessageBuilder b;
    auto wire = b.initRoot<hearth::transport::wire::DeviceProfile>();
    hearth::cluster::to_wire(p, wire);
    wire.getGpu().setPrefillFlopS(std::nan(""));
    CHECK_THROWS_AS(hearth::cluster::from_wire(wire.asReader()), std::invalid_argument);
    wire.getGpu().setPrefillFlopS(1e12);
    wire.getGpu().setLayerOverheadS(-1);
    CHECK_THROWS_AS(hearth::cluster::from_wire(wire.asReader()), std::invalid_argument);
  }

  TEST_CASE("the device profiles with a GPU read, and say which memory it uses") {
    const std::filesystem::path dir = std::filesystem::path(__FILE__).parent_path().parent_path() / "profiles" / "devices";
    int with = 0;
    for (const auto& [file, unified] : {std::pair<const char*, bool>{"jetson-orin-nano-8gb-vulkan.json", true},
                                        {"gaming-laptop-rtx4060-16gb.json", false},
                                        {"android-phone-12gb-vulkan.json", true}}) {
      CAPTURE(file);
      std::ifstream in(dir / file);
      REQUIRE(in);
      std::stringstream text;
      text << in.rdbuf();
      const auto d = hearth::profiles::device_profile_from_json(text.str());
      REQUIRE(d.gpu.has_value());
      CHECK(d.gpu->unified_memory == unified);
      CHECK(d.gpu->memory_bytes > 0);
      // A unified GPU's weights live in the device's RAM: it cannot hold more than that offers.
      if (unified) CHECK(d.gpu->memory_bytes <= d.usable_memory_bytes);
      ++with;
    }
    CHECK(with == 3);
  }
}
