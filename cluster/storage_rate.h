// What a paging stage's reads say about its device's storage (issue 19). A device measures its
// storage once, at start, with a probe of 32 MiB; on a virtual disk that figure was seen up to
// 2x off the rate paging then sustained (6.1 GB/s probed, 4.1 read while paging). Once a stage
// has read enough, the rate its pager sustained is the better figure for the next plan.
#pragma once

#include <cstdint>
#include <optional>

namespace hearth::cluster {

class StorageRateMeter {
 public:
  // A window long enough that a rate is not one read's luck.
  static constexpr uint64_t kMinBytes = 1ull << 30;
  static constexpr uint64_t kMinNs = 250'000'000;
  // Windows a second apart on that virtual disk read 1.6-4.5 GB/s: the figure follows each new
  // window by this much, so a plan sees the rate of the last several, not of the last one.
  static constexpr double kFollow = 0.25;

  // The pager's counters since its daemon started (bytes read, ns spent reading). Once the reads
  // since the last window make kMinBytes and kMinNs, returns the storage figure in bytes per
  // second: the first window's rate, then each next window's folded in by kFollow. Counters that
  // went back (a restarted daemon) start a new window.
  std::optional<double> observe(uint64_t bytes, uint64_t ns);

 private:
  uint64_t last_bytes_ = 0, last_ns_ = 0;
  uint64_t window_bytes_ = 0, window_ns_ = 0;
  double rate_ = 0;  // 0 until a window closed
};

}  // namespace hearth::cluster
