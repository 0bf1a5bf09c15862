// What happened to a plan (lost devices, re-plans, re-balances, pace), for `hearth status`. A
// home's head serves for weeks, and on a shared or busy machine the drift watch notes something
// every few seconds: the log keeps the latest kKept events, each stamped with its UTC time, and
// only counts the older ones, so neither the head's memory nor its status replies grow.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

namespace hearth::cluster {

class EventLog {
 public:
  static constexpr size_t kKept = 50;
  using Clock = std::chrono::system_clock;

  struct Event {
    Clock::time_point at;
    std::string what;
  };

  void add(std::string what, Clock::time_point at = Clock::now());
  // The kept events, oldest first.
  const std::deque<Event>& entries() const { return entries_; }
  // The same as text: "2026-12-05T21:58:03Z what".
  std::vector<std::string> texts() const;
  // Events older than the kept ones, dropped.
  uint64_t dropped() const { return dropped_; }

 private:
  std::deque<Event> entries_;
  uint64_t dropped_ = 0;
};

}  // namespace hearth::cluster
