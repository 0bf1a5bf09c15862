// Whether the devices still compute at the speeds their plan assumed. A laptop someone starts
// a build on, a phone that throttles, a mini-PC whose fan clogged: the plan's layer ranges were
// right for the speeds measured at start, and a stage that now takes three times as long sets
// the pace of every token. The watch compares each stage's measured time per decode step with
// what the plan expects of it, window by window (the head closes one every second or so), and
// calls it drift only when some stage stays off by `factor` or more, slower or faster, for
// `windows` windows in a row: one slow second (a page fault storm, a GC pause) moves nothing.
// The links are watched the same way, as one figure: the time a decode step spends outside the
// stages' compute (a pass through the pipeline, as the head times it, less every stage's
// compute), against the hops the plan expects. A phone that walked away from the access point
// shows there, not in any stage; which link it is, only a new measurement of the links says.
// A launch that drafts, or serves several conversations at once, may send no one-token step at
// all: its steps of several rows count too, judged against what the plan expects of a step at
// their rows (StepTime) and handed to the watch as one-token steps.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace hearth::cluster {

// What the plan expects of a step, a stage's compute or the links' share of a pass, by its rows:
// the plan's figures at a few row counts (a one-token step; a drafting pass; a micro-batch of
// every stream), linear between them and along the last piece past them. (A step reads the same
// weights whatever its rows; its arithmetic, and a hop's bytes, grow with them: the time is
// flat, then rises once compute-bound, and points where the plan runs keep that bend.)
struct StepTime {
  struct Point {
    double rows = 1, ms = 0;
  };
  std::vector<Point> points;  // ascending rows, the first at one row

  StepTime() = default;
  explicit StepTime(double one_ms) : points{{1, one_ms}} {}
  // Adds the plan's figure for steps of `rows` rows, when more than the last point's.
  StepTime& with(double rows, double ms);
  double one_ms() const { return points.empty() ? 0 : points.front().ms; }
  bool batched() const { return points.size() > 1; }  // it says what a step of several rows costs
  double at(double rows) const;
  // The links' share of passes measured at `rows`, as one-token passes: it shifts (mostly
  // latency, which rows do not change). (A stage's figure scales instead: StepCount::vs_plan.)
  double links_as_one(double measured_ms, double rows) const;
  void shift_to(double one_ms);  // the links measured at one_ms: every point shifts
};

// Steps counted since some start: how many, their rows, their time, and the plan's time for
// them (StepTime::at of each step's rows, added up; 0 where nobody adds it up).
struct StepCount {
  uint64_t steps = 0, rows = 0, ns = 0, planned_ns = 0;
  StepCount operator+(const StepCount& o) const { return {steps + o.steps, rows + o.rows, ns + o.ns, planned_ns + o.planned_ns}; }
  // Those since `mark`; nullopt when a counter went back (a daemon restarted, a new scheduler).
  std::optional<StepCount> since(const StepCount& mark) const;
  double mean_ms() const { return steps ? static_cast<double>(ns) * 1e-6 / static_cast<double>(steps) : 0; }
  double mean_rows() const { return steps ? static_cast<double>(rows) / static_cast<double>(steps) : 1; }
  // Their time over the plan's (1: as planned): the plan's added up step by step, or, where
  // nobody added it up (a daemon older than that), `plan` at their mean rows.
  double vs_plan(const StepTime& plan) const;
};

// The figures of the two windows below are one-token steps', whatever the rows measured: what
// the plan's one-token figures and the planner compare with.
struct StageWindow {
  std::string device;      // its name, for the figures
  double expected_ms = 0;  // what the plan expects of the stage per one-token step
  double measured_ms = 0;  // what its steps over the window make of that (StepCount::vs_plan)
  double speed = 1;        // the device's speed (1: its profile's) behind the expectation
  double rows = 1;         // the steps' mean rows (more than 1: drafts', several streams')
};

// The time a decode step spends on the links, for one window; measured_ms < 0: not measured in
// it (the head times passes of a conversation decoding alone).
struct LinksWindow {
  double expected_ms = 0;
  double measured_ms = -1;
  double rows = 1;
};

struct DriftOptions {
  double factor = 1.5;  // a stage this much slower (or faster) than expected is off
  int windows = 3;      // for this many windows in a row
  // Stages the plan expects to take less are not judged: their time is fixed costs and jitter
  // (a head that only embeds, a small model's layers), not a device's speed.
  double min_ms = 0.5;
  // The links are off only when also this many ms away from their expected time: loopback's
  // hops are planned at fractions of a millisecond, and a step's own overheads (messages decoded,
  // a scheduler's turn) are about that too; Wi-Fi's hops jitter by a few ms from second to second
  // (an emulated home's windows moved 3-8 ms with nothing changed). A phone carried away from the
  // access point adds tens.
  double links_min_gap_ms = 5;
};

struct Drift {
  // Per stage, in the plan's order: its time per one-token step measured over the windows, and its
  // device's speed: for a stage off on average, speed x expected / measured (0.33 for a device
  // three times slower than assumed), else the speed assumed.
  std::vector<double> measured_ms;
  std::vector<double> speeds;
  std::string figures;      // "b computes its layers in 9.12 ms (expected 3.04)", what is off
  bool stages_off = false;  // some stage is off on average
  bool links_off = false;   // the links are off on average
  double links_ms = -1;     // their time per one-token pass over the windows that measured it (-1: none did)
};

class DriftWatch {
 public:
  explicit DriftWatch(DriftOptions options = {}) : options_(options) {}
  // One window, a StageWindow per stage of the plan, and the links' time. A Drift when this
  // window closes a run of `windows` with some stage or the links off; the run starts again after.
  std::optional<Drift> observe(const std::vector<StageWindow>& window, LinksWindow links = {});

 private:
  bool off(const StageWindow& s) const;
  bool off(const LinksWindow& l) const;

  DriftOptions options_;
  // The windows in a row with something off.
  std::vector<std::vector<StageWindow>> run_;
  std::vector<LinksWindow> links_run_;
};

}  // namespace hearth::cluster
