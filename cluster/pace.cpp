#include "cluster/pace.h"

#include <fmt/format.h>

namespace hearth::cluster {

std::optional<std::string> explain_slow_pace(const Pace& pace, double factor) {
  if (pace.planned_ms_per_token <= 0 || pace.measured_ms_per_token < factor * pace.planned_ms_per_token) return std::nullopt;
  std::string s = fmt::format("decoding at {:.2f} ms/token, {:.1f}x the {:.2f} ms planned: ", pace.measured_ms_per_token,
                              pace.measured_ms_per_token / pace.planned_ms_per_token, pace.planned_ms_per_token);
  std::string slow;
  double computing = 0;
  for (const StagePace& st : pace.stages) {
    computing += st.measured_ms;
    if (st.planned_ms > 0 && st.measured_ms >= factor * st.planned_ms)
      slow += fmt::format("{}{} computes its layers in {:.2f} ms (planned {:.2f})", slow.empty() ? "" : "; ", st.device,
                          st.measured_ms, st.planned_ms);
  }
  if (!slow.empty()) return s + slow;
  return s + fmt::format("the devices compute as planned ({:.2f} ms of it): the rest goes to the links or to waiting", computing);
}

}  // namespace hearth::cluster
