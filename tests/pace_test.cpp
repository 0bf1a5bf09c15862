#include <doctest/doctest.h>

#include "cluster/pace.h"

using hearth::cluster::explain_slow_pace;
using hearth::cluster::Pace;

TEST_CASE("pace: on pace, nothing to say; a slow device is named; otherwise the links are blamed") {
  Pace p;
  p.planned_ms_per_token = 10;
  p.stages = {{"head", 3, 3.2}, {"laptop", 5, 5.5}};
  p.measured_ms_per_token = 12;
  CHECK_FALSE(explain_slow_pace(p).has_value());
  p.measured_ms_per_token = 19.9;  // just under 2x
  CHECK_FALSE(explain_slow_pace(p).has_value());

  // The laptop got busy: its compute per step is 4x the plan.
  p.measured_ms_per_token = 30;
  p.stages[1].measured_ms = 20;
  const auto busy = explain_slow_pace(p);
  REQUIRE(busy.has_value());
  CHECK(*busy == "decoding at 30.00 ms/token, 3.0x the 10.00 ms planned: laptop computes its layers in 20.00 ms (planned 5.00)");

  // Both devices compute as planned, yet a token takes 5x: the links (or waiting).
  p.stages[1].measured_ms = 5.5;
  p.measured_ms_per_token = 50;
  const auto links = explain_slow_pace(p);
  REQUIRE(links.has_value());
  CHECK(links->find("5.0x the 10.00 ms planned") != std::string::npos);
  CHECK(links->find("compute as planned (8.70 ms of it): the rest goes to the links") != std::string::npos);

  // No prediction (e.g. a plan given by hand): nothing to compare with.
  p.planned_ms_per_token = 0;
  CHECK_FALSE(explain_slow_pace(p).has_value());
}
