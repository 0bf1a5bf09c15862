// The storage figure of a device profile (profiles/storage.h): measured in the data directory,
// kept in profile.json, carried to the head in the profile on the wire.
#include <doctest/doctest.h>

#include <capnp/message.h>
#include <unistd.h>

#include <filesystem>

#include "cluster/wire_convert.h"
#include "profiles/profiler.h"
#include "profiles/storage.h"
#include "tests/test_util.h"

using hearth::test::TempDir;
namespace fs = std::filesystem;

TEST_SUITE("storage") {
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
