#include "cluster/storage_rate.h"

namespace hearth::cluster {

std::optional<double> StorageRateMeter::observe(uint64_t bytes, uint64_t ns) {
  if (bytes < last_bytes_ || ns < last_ns_) {  // a new process: its counters start again
    last_bytes_ = last_ns_ = window_bytes_ = window_ns_ = 0;
  }
  window_bytes_ += bytes - last_bytes_;
  window_ns_ += ns - last_ns_;
  last_bytes_ = bytes;
  last_ns_ = ns;
  if (window_bytes_ < kMinBytes || window_ns_ < kMinNs) return std::nullopt;
  const double window = static_cast<double>(window_bytes_) / (static_cast<double>(window_ns_) * 1e-9);
  window_bytes_ = window_ns_ = 0;
  rate_ = rate_ == 0 ? window : rate_ + kFollow * (window - rate_);
  return rate_;
}

}  // namespace hearth::cluster
