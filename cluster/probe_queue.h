// The head's link probes, one device at a time. A home's Wi-Fi is one medium: the devices take
// turns on it, so two of them measuring at once each see part of its airtime and both report a
// link slower than it is (the planner then avoids links that were fine). The head asks the next
// device only when the one measuring has reported, or after a wait long enough for its probe to
// have ended (a device that never reports: lost, or its report lost).
#pragma once

#include <chrono>
#include <deque>
#include <optional>
#include <string>
#include <vector>

namespace hearth::cluster {

class ProbeQueue {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  // Longest a probe of one target can take (cluster/link_prober.cpp: up to 9 pings of at most a
  // second each, then two bulk pings of at most 5 s), and a margin for the report.
  static constexpr std::chrono::seconds kPerTarget{20};

  struct Request {
    std::string prober;                // the device that measures
    std::vector<std::string> targets;  // the devices it measures its links to
  };

  // Asks `prober` to measure its links to `targets`: joins a request of the same prober still
  // waiting (the union of their targets), else waits its turn.
  void add(const std::string& prober, const std::vector<std::string>& targets);
  // The request to send now, if one may go: none is measuring, the one measuring has had its
  // time, or the request is the measuring device's own (it runs its probes one after another).
  // The request returned counts as measuring from `now`.
  std::optional<Request> next(time_point now);
  // `prober` reported the figures of one request: once it has reported all it was sent, the
  // next device may measure.
  void reported(const std::string& prober);
  // A device stopped responding, or restarted: a turn it had ends (no report will come from it).
  // Its requests, and those naming it, keep their place: at their turn the head leaves out the
  // devices that are down (a device back by then is measured).
  void forget(const std::string& node_id);
  // Who is measuring now, if anyone (for tests and status).
  const std::optional<std::string>& measuring() const { return measuring_; }
  size_t waiting() const { return waiting_.size(); }

 private:
  std::deque<Request> waiting_;
  std::optional<std::string> measuring_;
  int unreported_ = 0;  // the measuring device's requests sent and not reported
  time_point deadline_{};
};

}  // namespace hearth::cluster
