#include "cluster/drift.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace hearth::cluster {

namespace {

// Said of a figure measured on steps of more than one row (drafts', or several streams').
std::string rows_text(double rows) { return rows > 1.05 ? fmt::format(", one-token steps from steps of {:.1f} rows", rows) : ""; }

}  // namespace

StepTime& StepTime::with(double rows, double ms) {
  if (!points.empty() && rows > points.back().rows) points.push_back({rows, ms});
  return *this;
}

double StepTime::at(double rows) const {
  if (points.empty()) return 0;
  if (points.size() == 1 || rows <= 1) return points.front().ms;
  size_t i = 1;  // the piece [i - 1, i] that holds rows, or the last
  while (i + 1 < points.size() && rows > points[i].rows) ++i;
  const Point &a = points[i - 1], &b = points[i];
  return std::max(0.0, a.ms + (b.ms - a.ms) * (rows - a.rows) / (b.rows - a.rows));
}

double StepTime::links_as_one(double measured_ms, double rows) const {
  return std::max(0.0, measured_ms - (at(rows) - one_ms()));
}

void StepTime::shift_to(double ms) {
  const double by = ms - one_ms();
  for (Point& p : points) p.ms = std::max(0.0, p.ms + by);
}

std::optional<StepCount> StepCount::since(const StepCount& mark) const {
  if (steps < mark.steps || rows < mark.rows || ns < mark.ns || planned_ns < mark.planned_ns) return std::nullopt;
  return StepCount{steps - mark.steps, rows - mark.rows, ns - mark.ns, planned_ns - mark.planned_ns};
}

double StepCount::vs_plan(const StepTime& plan) const {
  if (planned_ns > 0) return static_cast<double>(ns) / static_cast<double>(planned_ns);
  return mean_ms() / std::max(1e-9, plan.at(mean_rows()));
}

bool DriftWatch::off(const StageWindow& s) const {
  if (s.expected_ms < options_.min_ms || s.measured_ms <= 0) return false;
  return s.measured_ms >= options_.factor * s.expected_ms || s.measured_ms * options_.factor <= s.expected_ms;
}

bool DriftWatch::off(const LinksWindow& l) const {
  if (l.measured_ms < 0 || std::abs(l.measured_ms - l.expected_ms) < options_.links_min_gap_ms) return false;
  return l.measured_ms >= options_.factor * l.expected_ms || l.measured_ms * options_.factor <= l.expected_ms;
}

std::optional<Drift> DriftWatch::observe(const std::vector<StageWindow>& window, LinksWindow links) {
  bool any = off(links);
  for (const StageWindow& s : window) any |= off(s);
  // A window of another shape is another plan's: the run so far does not continue.
  if (!any || (!run_.empty() && run_.front().size() != window.size())) run_.clear(), links_run_.clear();
  if (!any) return std::nullopt;
  run_.push_back(window);
  links_run_.push_back(links);
  if (static_cast<int>(run_.size()) < options_.windows) return std::nullopt;
  Drift d;
  for (size_t i = 0; i < window.size(); ++i) {
    double expected = 0, measured = 0, rows = 0;
    for (const auto& w : run_) expected += w[i].expected_ms, measured += w[i].measured_ms, rows += w[i].rows;
    const auto n = static_cast<double>(run_.size());
    const StageWindow mean{window[i].device, expected / n, measured / n, window[i].speed, rows / n};
    d.measured_ms.push_back(mean.measured_ms);
    d.speeds.push_back(off(mean) ? mean.speed * mean.expected_ms / mean.measured_ms : mean.speed);
    if (off(mean)) {
      d.stages_off = true;
      d.figures += fmt::format("{}{} computes its layers in {:.2f} ms (expected {:.2f}{})", d.figures.empty() ? "" : "; ",
                               mean.device, mean.measured_ms, mean.expected_ms, rows_text(mean.rows));
    }
  }
  // The links, over the windows that measured them.
  LinksWindow mean{0, 0, 0};
  int measured = 0;
  for (const LinksWindow& l : links_run_)
    if (l.measured_ms >= 0) mean.expected_ms += l.expected_ms, mean.measured_ms += l.measured_ms, mean.rows += l.rows, ++measured;
  if (measured > 0) {
    mean.expected_ms /= measured, mean.measured_ms /= measured, mean.rows /= measured;
    d.links_ms = mean.measured_ms;
    d.links_off = off(mean);
    if (d.links_off)
      d.figures += fmt::format("{}the links take {:.2f} ms a token (expected {:.2f}{})", d.figures.empty() ? "" : "; ",
                               mean.measured_ms, mean.expected_ms, rows_text(mean.rows));
  }
  run_.clear();
  links_run_.clear();
  if (d.figures.empty()) return std::nullopt;  // off now and then, never on average
  return d;
}

}  // namespace hearth::cluster
