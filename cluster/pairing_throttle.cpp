#include "cluster/pairing_throttle.h"

#include <algorithm>

namespace hearth::cluster {

bool PairingThrottle::allow(const std::string& address, time_point now) {
  if (buckets_.size() >= kMaxAddresses && !buckets_.count(address)) {
    // Forget the buckets that have refilled: they hold nothing a newcomer would not get.
    for (auto it = buckets_.begin(); it != buckets_.end();)
      it = now - it->second.updated >= kRefill * static_cast<int>(kBurst) ? buckets_.erase(it) : std::next(it);
    if (buckets_.size() >= kMaxAddresses) {  // a flood from many addresses: refuse newcomers until it ends
      ++refused_;
      return false;
    }
  }
  auto [it, fresh] = buckets_.try_emplace(address, Bucket{kBurst, now});
  Bucket& b = it->second;
  if (!fresh) {
    const double refill = std::chrono::duration<double>(now - b.updated) / std::chrono::duration<double>(kRefill);
    b.tokens = std::min(kBurst, b.tokens + refill);
    b.updated = now;
  }
  if (b.tokens < 1) {
    ++refused_;
    return false;
  }
  b.tokens -= 1;
  return true;
}

}  // namespace hearth::cluster
