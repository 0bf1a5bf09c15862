#include "cluster/event_log.h"

#include <ctime>

namespace hearth::cluster {

void EventLog::add(std::string what, Clock::time_point at) {
  entries_.push_back({at, std::move(what)});
  if (entries_.size() > kKept) {
    entries_.pop_front();
    dropped_++;
  }
}

std::vector<std::string> EventLog::texts() const {
  std::vector<std::string> out;
  for (const Event& e : entries_) {
    const std::time_t t = Clock::to_time_t(e.at);
    std::tm utc{};
    gmtime_r(&t, &utc);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ ", &utc);
    out.push_back(stamp + e.what);
  }
  return out;
}

}  // namespace hearth::cluster
