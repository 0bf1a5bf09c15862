#include "apps/hearth/launch_progress.h"

#include <algorithm>

namespace hearth::cli {

namespace {

constexpr auto kLogEvery = std::chrono::seconds(5);  // without a terminal: a device's line at most this often

std::string size_text(double bytes) {
  char buf[32];
  if (bytes >= 1e9) std::snprintf(buf, sizeof buf, "%.2f GB", bytes / 1e9);
  else std::snprintf(buf, sizeof buf, "%.0f MB", bytes / 1e6);
  return buf;
}

std::string duration_text(double s) {
  char buf[32];
  if (s < 90) std::snprintf(buf, sizeof buf, "%.0f s", s);
  else if (s < 5400) std::snprintf(buf, sizeof buf, "%.0f min", s / 60);
  else std::snprintf(buf, sizeof buf, "%.1f h", s / 3600);
  return buf;
}

}  // namespace

std::string LaunchProgressView::line(const std::string& name, const Device& d) {
  const double frac = d.total ? std::min(1.0, static_cast<double>(d.done) / static_cast<double>(d.total)) : 1.0;
  const int width = 20, fill = static_cast<int>(frac * width);
  std::string rate = "", left = "";
  if (d.state == "receiving" && d.mb_per_s > 0) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "  %.1f MB/s", d.mb_per_s);
    rate = buf;
    left = "  " + duration_text(static_cast<double>(d.total - std::min(d.done, d.total)) / (d.mb_per_s * 1e6)) + " left";
  }
  char buf[256];
  std::snprintf(buf, sizeof buf, "%-16s %-9s [%s%s] %5.1f%%  %s of %s%s%s", name.c_str(), d.state.c_str(),
                std::string(static_cast<size_t>(fill), '#').c_str(), std::string(static_cast<size_t>(width - fill), '.').c_str(),
                100 * frac, size_text(static_cast<double>(d.done)).c_str(), size_text(static_cast<double>(d.total)).c_str(),
                rate.c_str(), left.c_str());
  return buf;
}

void LaunchProgressView::update(const std::string& device, uint64_t bytes_done, uint64_t bytes_total, const std::string& state,
                                Clock::time_point now) {
  auto [it, added] = devices_.try_emplace(device);
  Device& d = it->second;
  if (added) {
    order_.push_back(device);
    d.first_seen = now;
    d.first_done = bytes_done;
  }
  const bool changed = d.state != state;
  d.done = bytes_done;
  d.total = bytes_total;
  d.state = state;
  // The rate since the device was first heard of: steadier than between two reports.
  const double seconds = std::chrono::duration<double>(now - d.first_seen).count();
  if (seconds > 0.2 && d.done > d.first_done) d.mb_per_s = static_cast<double>(d.done - d.first_done) / seconds / 1e6;
  if (tty_) return redraw();
  if (!changed && now - d.last_printed < kLogEvery) return;
  d.last_printed = now;
  std::fprintf(out_, "%s\n", line(device, d).c_str());
  std::fflush(out_);
}

void LaunchProgressView::redraw() {
  if (drawn_ > 0) std::fprintf(out_, "\x1b[%zuA", drawn_);  // back to the first device's line
  for (const auto& name : order_) std::fprintf(out_, "\r%s\x1b[K\n", line(name, devices_.at(name)).c_str());
  drawn_ = order_.size();
  std::fflush(out_);
}

}  // namespace hearth::cli
