// The storage figure of a device profile (profiles/storage.h): measured in the data directory,
// kept in profile.json, carried to the head in the profile on the wire.
#include <doctest/doctest.h>

#include <capnp/message.h>
#include <unistd.h>

#include <filesystem>

#include "cluster/device_registry.h"
#include "cluster/storage_rate.h"
#include "cluster/wire_convert.h"
#include "profiles/profiler.h"
#include "profiles/storage.h"
#include "tests/test_util.h"

using hearth::test::TempDir;
namespace fs = std::filesystem;

TEST_SUITE("storage") {
  TEST_CASE("a paging stage's reads become its device's storage figure once they make a window") {
    using hearth::cluster::StorageRateMeter;
    StorageRateMeter m;
    constexpr uint64_t GB = 1000000000, ms = 1000000;
    CHECK_FALSE(m.observe(GB / 2, 100 * ms));  // 0.5 GB: too little to judge
    CHECK_FALSE(m.observe(GB, 200 * ms));      // 1 GB: still short of 1 GiB
    auto rate = m.observe(2 * GB, 500 * ms);   // the window closes: 2 GB in 0.5 s
    REQUIRE(rate);
    CHECK(*rate == doctest::Approx(4e9));
    // The next window counts only what came after (2 GB in 1 s: 2 GB/s), folded in by kFollow.
    CHECK_FALSE(m.observe(2 * GB + GB / 2, 750 * ms));
    rate = m.observe(4 * GB, 1500 * ms);
    REQUIRE(rate);
    CHECK(*rate == doctest::Approx(4e9 + StorageRateMeter::kFollow * (2e9 - 4e9)));
    // A restarted daemon's counters start again from zero: a new window, no negative bytes.
    const double before = *rate;
    CHECK_FALSE(m.observe(GB / 10, 10 * ms));
    rate = m.observe(2 * GB, 510 * ms);  // 2 GB in 0.51 s
    REQUIRE(rate);
    CHECK(*rate == doctest::Approx(before + StorageRateMeter::kFollow * (2e9 / 0.51 - before)));
  }

  TEST_CASE("the head's registry takes the rate paging sustained as the device's storage figure") {
    hearth::cluster::SteadyClock clock;
    hearth::cluster::Device self;
    self.node_id = "head";
    self.profile.name = "head";
    self.profile.storage_read_bytes_per_s = 6e9;  // what its probe said
    hearth::cluster::DeviceRegistry r(clock, self);
    hearth::cluster::StageCounters w;
    CHECK_FALSE(r.observe_paging("head", w));
    w.paged_read_bytes = 2'000'000'000;
    w.paged_read_ns = 500'000'000;  // 4 GB/s
    const auto change = r.observe_paging("head", w);
    REQUIRE(change);
    CHECK(change->first == 6e9);
    CHECK(change->second == doctest::Approx(4e9));
    CHECK(r.at("head").profile.storage_read_bytes_per_s == doctest::Approx(4e9));
    CHECK(r.at("head").storage_from_paging);
    CHECK_FALSE(r.observe_paging("nobody", w));
  }

  TEST_CASE("the data directory's storage is read cold and the probe file is removed") {
    TempDir dir;
    const auto s = hearth::profiles::measure_storage(dir.path().string(), 8u << 20);
    CHECK(s.path == dir.path().string());
    CHECK(s.read_bytes_per_s > 0);
    CHECK(s.total_bytes > 0);
    CHECK(s.free_bytes <= s.total_bytes);
    CHECK(s.error.empty());
    CHECK(fs::is_empty(dir.path()));

    CHECK_THROWS_WITH_AS(hearth::profiles::measure_storage(dir.file("missing"), 8u << 20), doctest::Contains("missing"),
                         std::runtime_error);
  }

  TEST_CASE("a full disk leaves the storage unmeasured, and the profile goes on") {
    // /dev/full: every write fails with ENOSPC, as on a full disk.
    if (!fs::exists("/dev/full")) {
      MESSAGE("skipped: no /dev/full");
      return;
    }
    TempDir dir;
    fs::create_symlink("/dev/full", dir.file(".hearth-storage-probe-" + std::to_string(::getpid())));
    CHECK_THROWS_WITH_AS(hearth::profiles::measure_storage(dir.path().string(), 8u << 20), doctest::Contains("full"),
                         std::runtime_error);
  }

  TEST_CASE("storage figures survive profile.json and the wire") {
    hearth::profiles::Profile p;
    p.device.name = "nas";
    p.device.usable_memory_bytes = 4e9;
    p.device.memory_bandwidth_bytes_per_s = 10e9;
    p.device.prefill_flop_s = 1e10;
    p.device.storage_read_bytes_per_s = 1.5e9;
    p.device.storage_free_bytes = 2e11;
    p.storage = {.path = "/srv/hearth", .read_bytes_per_s = 1.5e9, .free_bytes = 200000000000, .total_bytes = 500000000000};
    const auto back = hearth::profiles::device_profile_from_json(hearth::profiles::profile_to_json(p));
    CHECK(back.storage_read_bytes_per_s == 1.5e9);
    CHECK(back.storage_free_bytes == 2e11);

    capnp::MallocMessageBuilder b;
    auto wire = b.initRoot<hearth::transport::wire::DeviceProfile>();
    hearth::cluster::to_wire(p, wire);
    const auto received = hearth::cluster::from_wire(wire.asReader());
    CHECK(received.storage_read_bytes_per_s == 1.5e9);
    CHECK(received.storage_free_bytes == 2e11);
    wire.setStorageReadBytesPerS(-1);
    CHECK_THROWS_AS(hearth::cluster::from_wire(wire.asReader()), std::invalid_argument);

    // A profile written before storage was measured still reads, as "not measured".
    p.device.storage_read_bytes_per_s = 0;
    CHECK(hearth::profiles::device_profile_from_json(hearth::profiles::profile_to_json(p)).storage_read_bytes_per_s == 0);
  }
}
