// Whether decoding keeps the pace the plan predicted, and if not, where the time goes: the sentence
// `hearth status` shows when a device is busier or a link slower than when they were measured
// (another process on a laptop, a phone throttling, Wi-Fi with a microwave oven on).
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace hearth::cluster {

struct StagePace {
  std::string device;
  double planned_ms = 0;   // the plan's compute time of the stage per decode step
  double measured_ms = 0;  // its measured compute time per step
};

struct Pace {
  double planned_ms_per_token = 0;   // the plan's prediction for one stream decoding alone
  double measured_ms_per_token = 0;  // what a generation decoding alone took
  std::vector<StagePace> stages;
};

// A sentence when the measured time per token is `factor` times the planned one or more: it names
// the stages that computed `factor` times slower than planned or more, or, when none did, says the
// time went to the links (or to waiting); nullopt when decoding kept the pace.
std::optional<std::string> explain_slow_pace(const Pace& pace, double factor = 2.0);

}  // namespace hearth::cluster
