// The drift watch (cluster/drift.h) and the measured speed it gives a device's profile.
#include <doctest/doctest.h>

#include "cluster/device_registry.h"
#include "cluster/drift.h"
#include "partitioner/device_profile.h"

namespace hearth::cluster {

namespace {

struct ManualClock final : Clock {
  time_point t{};
  time_point now() const override { return t; }
};

std::vector<StageWindow> window(double a_ms, double b_ms) {
  return {{.device = "head", .expected_ms = 2, .measured_ms = 2.1, .speed = 1},
          {.device = "a", .expected_ms = 3, .measured_ms = a_ms, .speed = 1},
          {.device = "b", .expected_ms = 1, .measured_ms = b_ms, .speed = 0.5}};
}

}  // namespace

TEST_SUITE("drift") {
  TEST_CASE("a stage off its plan for three windows in a row is drift, with each device's measured speed") {
    DriftWatch watch;
    CHECK_FALSE(watch.observe(window(9, 1)));
    CHECK_FALSE(watch.observe(window(9.3, 1)));
    const auto d = watch.observe(window(8.7, 1));
    REQUIRE(d);
    REQUIRE(d->speeds.size() == 3);
    CHECK(d->measured_ms[1] == doctest::Approx(9));
    CHECK(d->measured_ms[0] == doctest::Approx(2.1));
    CHECK(d->speeds[0] == 1);  // within the factor: as assumed
    CHECK(d->speeds[1] == doctest::Approx(1.0 / 3));
    CHECK(d->speeds[2] == doctest::Approx(0.5));  // on plan: as assumed
    CHECK(d->figures == "a computes its layers in 9.00 ms (expected 3.00)");
    // The run starts again after a drift is reported.
    CHECK_FALSE(watch.observe(window(9, 1)));
  }

  TEST_CASE("one slow window, or a run broken by a window on plan, is not drift; faster than planned is") {
    DriftWatch watch;
    CHECK_FALSE(watch.observe(window(9, 1)));
    CHECK_FALSE(watch.observe(window(9, 1)));
    CHECK_FALSE(watch.observe(window(3.2, 1)));  // back on plan: the run ends
    CHECK_FALSE(watch.observe(window(9, 1)));
    CHECK_FALSE(watch.observe(window(4, 1)));  // 1.33x: within the factor
    // A device measured slow that recovered: b now computes twice as fast as its plan expects.
    DriftWatch recovered;
    for (int i = 0; i < 2; ++i) CHECK_FALSE(recovered.observe(window(3, 0.5)));
    const auto d = recovered.observe(window(3, 0.5));
    REQUIRE(d);
    CHECK(d->speeds[2] == doctest::Approx(1.0));
    CHECK(d->figures.find("b computes its layers in 0.50 ms (expected 1.00)") != std::string::npos);
  }

  TEST_CASE("a run whose average is on plan is not drift, nor is a window of another plan's shape") {
    DriftWatch watch({.factor = 1.5, .windows = 2});
    CHECK_FALSE(watch.observe(window(9, 1)));
    CHECK_FALSE(watch.observe({{.device = "head", .expected_ms = 2, .measured_ms = 9}}));  // another plan: starts a run
    CHECK(watch.observe({{.device = "head", .expected_ms = 2, .measured_ms = 9}}));
    // Off one way then the other: each window is off, their average is not.
    CHECK_FALSE(watch.observe(window(6, 1)));
    CHECK_FALSE(watch.observe(window(1.2, 1)));
    CHECK_FALSE(watch.observe({}));  // a plan with no stage measured: nothing to judge
    // A stage expected to take 0.2 ms, measured at 0.9: fixed costs, not a device's speed.
    for (int i = 0; i < 3; ++i) CHECK_FALSE(watch.observe({{.device = "head", .expected_ms = 0.2, .measured_ms = 0.9}}));
  }

  TEST_CASE("the links off their plan for three windows, every stage on it, is drift of the links") {
    DriftWatch watch;
    const LinksWindow slow{.expected_ms = 3, .measured_ms = 14};
    CHECK_FALSE(watch.observe(window(3, 1), slow));
    CHECK_FALSE(watch.observe(window(3, 1), {.expected_ms = 3, .measured_ms = 16}));
    const auto d = watch.observe(window(3, 1), slow);
    REQUIRE(d);
    CHECK(d->links_off);
    CHECK_FALSE(d->stages_off);
    CHECK(d->links_ms == doctest::Approx(44.0 / 3));
    CHECK(d->figures == "the links take 14.67 ms a token (expected 3.00)");
    for (double speed : d->speeds) CHECK(speed > 0.4);  // no device is measured slower for it
    // With a stage off too, both are said.
    for (int i = 0; i < 2; ++i) CHECK_FALSE(watch.observe(window(9, 1), slow));
    const auto both = watch.observe(window(9, 1), slow);
    REQUIRE(both);
    CHECK(both->stages_off);
    CHECK(both->links_off);
    CHECK(both->figures == "a computes its layers in 9.00 ms (expected 3.00); the links take 14.00 ms a token (expected 3.00)");
  }

  TEST_CASE("links: a gap under 5 ms is not drift, windows that did not measure them judge only the stages") {
    DriftWatch watch;
    // Loopback: hops planned at 0.2 ms, a step's overheads measured at 1.5 (7.5x, but 1.3 ms);
    // Wi-Fi's jitter: planned at 2 ms, measured at 6.5.
    for (int i = 0; i < 4; ++i) CHECK_FALSE(watch.observe(window(3, 1), {.expected_ms = 0.2, .measured_ms = 1.5}));
    for (int i = 0; i < 4; ++i) CHECK_FALSE(watch.observe(window(3, 1), {.expected_ms = 2, .measured_ms = 6.5}));
    // Faster than planned counts too: a phone back near its access point.
    for (int i = 0; i < 2; ++i) CHECK_FALSE(watch.observe(window(3, 1), {.expected_ms = 20, .measured_ms = 6}));
    const auto back = watch.observe(window(3, 1), {.expected_ms = 20, .measured_ms = 6});
    REQUIRE(back);
    CHECK(back->links_off);
    // Not measured (several conversations, or drafts): a window with a stage off judges that alone,
    // and a window with neither breaks the run.
    CHECK_FALSE(watch.observe(window(3, 1), {.expected_ms = 3, .measured_ms = 14}));
    CHECK_FALSE(watch.observe(window(3, 1), {.expected_ms = 3}));
    CHECK_FALSE(watch.observe(window(3, 1), {.expected_ms = 3, .measured_ms = 14}));
    CHECK_FALSE(watch.observe(window(9, 1), {.expected_ms = 3}));
    const auto stages = watch.observe(window(9, 1), {.expected_ms = 3});
    REQUIRE(stages);  // the third window in a row with something off
    CHECK(stages->stages_off);
    CHECK(stages->links_ms == doctest::Approx(14));  // the one window that measured them
    CHECK(stages->links_off);
  }

  TEST_CASE("steps of several rows: judged against the plan's step at their rows, as one-token steps") {
    // A stage planned at 2 ms a one-token step, still 2 at 5 rows (4 drafts and a token: it reads
    // its weights either way), and 10 at 13 rows (a micro-batch of every stream: compute-bound).
    const StepTime stage = StepTime(2).with(5, 2).with(13, 10);
    CHECK(stage.batched());
    CHECK(stage.one_ms() == 2);
    CHECK(stage.at(1) == doctest::Approx(2));
    CHECK(stage.at(3) == doctest::Approx(2));  // the bend kept: not the line from 1 to 13 rows
    CHECK(stage.at(9) == doctest::Approx(6));
    CHECK(stage.at(17) == doctest::Approx(14));  // past the last point, along the last piece
    // A point at no more rows than the last adds nothing.
    CHECK(StepTime(2).with(1, 5).points.size() == 1);
    // A plan for one stream without drafts: every step is expected at the one-token figure.
    const StepTime plain(2);
    CHECK_FALSE(plain.batched());
    CHECK(plain.at(4) == doctest::Approx(2));
    CHECK(StepTime().at(3) == 0);
    // The links shift: planned at 1 ms plain and 1.5 with a draft of 4; passes of 5 rows
    // measured at 31.5 are one-token passes of 31.
    const StepTime links = StepTime(1).with(5, 1.5);
    CHECK(links.links_as_one(31.5, 5) == doctest::Approx(31));
    CHECK(links.links_as_one(0.2, 5) == doctest::Approx(0));  // never below nothing
    // What the links were measured at becomes what is expected, at every row.
    StepTime moved = links;
    moved.shift_to(31);
    CHECK(moved.at(5) == doctest::Approx(31.5));
  }

  TEST_CASE("step counts: a window is the difference of two counts; a count that went back is none") {
    const StepCount a{.steps = 10, .rows = 30, .ns = 50'000'000, .planned_ns = 25'000'000};
    const StepCount b{.steps = 18, .rows = 62, .ns = 98'000'000, .planned_ns = 41'000'000};
    const auto w = b.since(a);
    REQUIRE(w);
    CHECK(w->steps == 8);
    CHECK(w->mean_rows() == doctest::Approx(4));
    CHECK(w->mean_ms() == doctest::Approx(6));
    CHECK(w->vs_plan(StepTime(1)) == doctest::Approx(3));
    CHECK_FALSE(a.since(b));
    CHECK_FALSE((StepCount{.steps = 20, .rows = 20, .ns = 1}).since(a));  // a restarted daemon's time
    CHECK((a + b).rows == 92);
    CHECK(StepCount{}.mean_rows() == 1);
    // Nothing added up: the plan at the mean rows, 3 ms a step here against 1.5 planned.
    CHECK(StepCount{.steps = 3, .rows = 3, .ns = 9'000'000}.vs_plan(StepTime(1.5)) == doctest::Approx(2));
  }

  TEST_CASE("a window's mix of rows: the plan's time added up step by step, not at the mean rows") {
    // The plan: 1 ms a one-token step, 1.3 at 5 rows, 3 at 10 (compute-bound past 5).
    const StepTime plan = StepTime(1).with(5, 1.3).with(10, 3);
    // Half one-token steps, half of 9 rows, each exactly as planned.
    StepCount window;
    for (int i = 0; i < 10; ++i)
      for (const int rows : {1, 9}) {
        const auto ns = static_cast<uint64_t>(plan.at(rows) * 1e6);
        window = window + StepCount{1, static_cast<uint64_t>(rows), ns, ns};
      }
    CHECK(window.vs_plan(plan) == doctest::Approx(1));
    // At the mean rows the same steps would read 1.4x the plan: nearly drift, with nothing off.
    CHECK(window.mean_ms() / plan.at(window.mean_rows()) > 1.35);
    // A device twice as slow on its 9-row steps alone: (10 x 1 + 10 x 2 x 2.66) / (10 x 1 + 10 x 2.66).
    StepCount slower;
    for (int i = 0; i < 10; ++i)
      for (const int rows : {1, 9}) {
        const auto planned = static_cast<uint64_t>(plan.at(rows) * 1e6);
        slower = slower + StepCount{1, static_cast<uint64_t>(rows), rows == 9 ? 2 * planned : planned, planned};
      }
    CHECK(slower.vs_plan(plan) == doctest::Approx((10 + 10 * 2 * plan.at(9)) / (10 + 10 * plan.at(9))));
  }

  TEST_CASE("a stage off in drafting steps says so in its figures") {
    DriftWatch watch;
    auto w = window(9, 1);
    w[1].rows = 4.3;
    CHECK_FALSE(watch.observe(w));
    CHECK_FALSE(watch.observe(w));
    const auto drift = watch.observe(w);
    REQUIRE(drift);
    CAPTURE(drift->figures);
    CHECK(drift->figures.find("a computes its layers in 9.00 ms (expected 3.00, one-token steps from steps of 4.3 rows)") !=
          std::string::npos);
    CHECK(drift->speeds[1] == doctest::Approx(1.0 / 3));
  }

  TEST_CASE("a device at a third of its speed: compute figures scaled, memory, storage and link kept") {
    partitioner::DeviceProfile p;
    p.name = "laptop";
    p.usable_memory_bytes = 8e9;
    p.memory_bandwidth_bytes_per_s = 30e9;
    p.decode_bytes_per_s = {{"q4_0", 12e9}, {"f16", 18e9}};
    p.prefill_flop_s = 300e9;
    p.step_overhead_s = 2e-4;
    p.storage_read_bytes_per_s = 1e9;
    p.link = partitioner::Link{.bandwidth_bytes_per_s = 1e7, .latency_s = 0.005};
    const auto slow = partitioner::at_speed(p, 1.0 / 3);
    CHECK(slow.memory_bandwidth_bytes_per_s == doctest::Approx(10e9));
    CHECK(slow.decode_bytes_per_s.at("q4_0") == doctest::Approx(4e9));
    CHECK(slow.decode_bytes_per_s.at("f16") == doctest::Approx(6e9));
    CHECK(slow.prefill_flop_s == doctest::Approx(100e9));
    CHECK(slow.step_overhead_s == doctest::Approx(6e-4));
    CHECK(slow.usable_memory_bytes == p.usable_memory_bytes);
    CHECK(slow.storage_read_bytes_per_s == p.storage_read_bytes_per_s);
    CHECK(slow.link->latency_s == p.link->latency_s);
    CHECK(partitioner::at_speed(slow, 3).prefill_flop_s == doctest::Approx(p.prefill_flop_s));
    CHECK(partitioner::same_figures(partitioner::at_speed(p, 0), p));  // no measurement: as it was
  }

  TEST_CASE("the registry keeps a device's measured speed: set again, it scales from the start-up figures") {
    ManualClock clock;
    Device self;
    self.node_id = "head";
    self.profile.name = "head";
    self.profile.prefill_flop_s = 300e9;
    self.profile.storage_read_bytes_per_s = 6e9;
    DeviceRegistry r(clock, self);
    r.set_speed("head", 0.25);
    CHECK(r.at("head").speed == 0.25);
    CHECK(r.at("head").profile.prefill_flop_s == doctest::Approx(75e9));
    r.set_speed("head", 0.5);  // measured again: half its start-up speed, not half of a quarter
    CHECK(r.at("head").profile.prefill_flop_s == doctest::Approx(150e9));
    CHECK(r.at("head").profile.storage_read_bytes_per_s == 6e9);
    r.set_speed("head", 0);  // out of range: a measurement gone wrong
    r.set_speed("nobody", 0.5);
    CHECK(r.at("head").speed == 0.5);
  }

  TEST_CASE("a speed measured long ago on a device that runs no stage is forgotten") {
    ManualClock clock;
    Device self;
    self.node_id = "head";
    self.profile.prefill_flop_s = 300e9;
    DeviceRegistry r(clock, self);
    r.set_speed("head", 0.25);
    clock.t += std::chrono::minutes(11);
    r.forget_speeds(std::chrono::minutes(10), {"head"});  // it runs a stage: measured all along
    CHECK(r.at("head").speed == 0.25);
    r.forget_speeds(std::chrono::minutes(12), {});  // not that long ago
    CHECK(r.at("head").speed == 0.25);
    r.forget_speeds(std::chrono::minutes(10), {});
    CHECK(r.at("head").speed == 1);
    CHECK(r.at("head").profile.prefill_flop_s == doctest::Approx(300e9));
  }
}

}  // namespace hearth::cluster
