// How often one address may try to pair. A join token's secret is 128 bits, so guessing is
// hopeless anyway; the throttle keeps a stranger from making the head hash, log and answer
// attempts as fast as the network carries them. A token bucket per address: a burst of
// kBurst attempts, then one every kRefill.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

namespace hearth::cluster {

class PairingThrottle {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  static constexpr double kBurst = 5;
  static constexpr auto kRefill = std::chrono::seconds(12);
  static constexpr size_t kMaxAddresses = 4096;  // remembered at once, whoever sends

  // Whether `address` may try now; counts a refusal when not.
  bool allow(const std::string& address, time_point now);
  uint64_t refused() const { return refused_; }

 private:
  struct Bucket {
    double tokens = kBurst;
    time_point updated;
  };
  std::map<std::string, Bucket> buckets_;
  uint64_t refused_ = 0;
};

}  // namespace hearth::cluster
