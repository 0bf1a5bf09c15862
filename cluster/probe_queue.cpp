#include "cluster/probe_queue.h"

#include <algorithm>
#include <utility>

namespace hearth::cluster {

void ProbeQueue::add(const std::string& prober, const std::vector<std::string>& targets) {
  if (targets.empty()) return;
  for (Request& r : waiting_) {
    if (r.prober != prober) continue;
    for (const std::string& t : targets)
      if (std::find(r.targets.begin(), r.targets.end(), t) == r.targets.end()) r.targets.push_back(t);
    return;
  }
  waiting_.push_back({prober, targets});
}

std::optional<ProbeQueue::Request> ProbeQueue::next(time_point now) {
  if (waiting_.empty()) return std::nullopt;
  auto it = waiting_.begin();
  if (measuring_ && now < deadline_) {
    it = std::find_if(waiting_.begin(), waiting_.end(), [&](const Request& r) { return r.prober == *measuring_; });
    if (it == waiting_.end()) return std::nullopt;
  }
  Request r = std::move(*it);
  waiting_.erase(it);
  // A request of the device already measuring adds its targets to that device's turn.
  const auto extra = kPerTarget * static_cast<int>(r.targets.size());
  const bool same_turn = measuring_ && *measuring_ == r.prober && now < deadline_;
  deadline_ = same_turn ? deadline_ + extra : now + extra;
  unreported_ = same_turn ? unreported_ + 1 : 1;
  measuring_ = r.prober;
  return r;
}

void ProbeQueue::reported(const std::string& prober) {
  if (measuring_ && *measuring_ == prober && --unreported_ <= 0) measuring_.reset();
}

void ProbeQueue::forget(const std::string& node_id) {
  if (measuring_ && *measuring_ == node_id) measuring_.reset();
}

}  // namespace hearth::cluster
