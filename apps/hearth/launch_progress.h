// What `hearth launch` shows while weights move: one line per device with its bytes, MB/s and
// time left. On a terminal the lines are redrawn in place; elsewhere (a log, a pipe) a device's
// line is printed when its state changes and at most every few seconds, so logs stay short.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace hearth::cli {

class LaunchProgressView {
 public:
  using Clock = std::chrono::steady_clock;
  LaunchProgressView(std::FILE* out, bool tty) : out_(out), tty_(tty) {}

  void update(const std::string& device, uint64_t bytes_done, uint64_t bytes_total, const std::string& state,
              Clock::time_point now = Clock::now());

  // One device's line: "a   receiving [######......]  41.0%  110 MB of 268 MB  35.2 MB/s  4 s left".
  struct Device {
    uint64_t done = 0, total = 0;
    std::string state;
    Clock::time_point first_seen{}, last_printed{};
    uint64_t first_done = 0;
    double mb_per_s = 0;
  };
  static std::string line(const std::string& name, const Device& d);

 private:
  void redraw();
  std::FILE* out_;
  bool tty_;
  std::vector<std::string> order_;  // devices in the order first heard of
  std::map<std::string, Device> devices_;
  size_t drawn_ = 0;  // lines drawn on the terminal last time
};

}  // namespace hearth::cli
