#include "cluster/drift.h"

#include <fmt/format.h>

namespace hearth::cluster {

bool DriftWatch::off(const StageWindow& s) const {
  if (s.expected_ms < options_.min_ms || s.measured_ms <= 0) return false;
  return s.measured_ms >= options_.factor * s.expected_ms || s.measured_ms * options_.factor <= s.expected_ms;
}

std::optional<Drift> DriftWatch::observe(const std::vector<StageWindow>& window) {
  bool any = false;
  for (const StageWindow& s : window) any |= off(s);
  // A window of another shape is another plan's: the run so far does not continue.
  if (!any || (!run_.empty() && run_.front().size() != window.size())) run_.clear();
  if (!any) return std::nullopt;
  run_.push_back(window);
  if (static_cast<int>(run_.size()) < options_.windows) return std::nullopt;
  Drift d;
  for (size_t i = 0; i < window.size(); ++i) {
    double expected = 0, measured = 0;
    for (const auto& w : run_) expected += w[i].expected_ms, measured += w[i].measured_ms;
    const StageWindow mean{window[i].device, expected / static_cast<double>(run_.size()),
                           measured / static_cast<double>(run_.size()), window[i].speed};
    d.measured_ms.push_back(mean.measured_ms);
    d.speeds.push_back(off(mean) ? mean.speed * mean.expected_ms / mean.measured_ms : mean.speed);
    if (off(mean))
      d.figures += fmt::format("{}{} computes its layers in {:.2f} ms (expected {:.2f})", d.figures.empty() ? "" : "; ",
                               mean.device, mean.measured_ms, mean.expected_ms);
  }
  run_.clear();
  if (d.figures.empty()) return std::nullopt;  // off now and then, never on average
  return d;
}

}  // namespace hearth::cluster
