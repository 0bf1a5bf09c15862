// Memory read bandwidth, measured the way decode reads weights: every thread of the pool streams
// its share of a buffer far larger than the caches, once, with wide loads. `hearth bench` reports
// decode speed as a fraction of this figure, measured in the same run, because on a shared or
// throttled machine an absolute GB/s says little about the runtime.
#pragma once

#include <cstddef>
#include <cstdint>

#include "runtime/kernels/huge_pages.h"
#include "runtime/kernels/thread_pool.h"

namespace hearth::runtime {

class ReadBandwidthProbe {
 public:
  // Allocates and touches `bytes` (at least 8x the last-level cache is wise; 256 MiB default).
  explicit ReadBandwidthProbe(size_t bytes = size_t{256} << 20);
  // Bytes per second read by all threads of `pool` together: the best of `passes` passes, each
  // one streaming the whole buffer.
  double measure(ThreadPool& pool, int passes = 3);
  size_t bytes() const { return n_words_ * sizeof(uint64_t); }
  // Of them, on huge pages: the buffer asks for them, as a stage's weights do (huge_pages.h),
  // so that decode is measured against memory held the same way.
  uint64_t huge_bytes() const { return buf_.huge_bytes(); }

 private:
  uint64_t* words() const { return reinterpret_cast<uint64_t*>(const_cast<uint8_t*>(buf_.data())); }
  HugePageBuffer buf_;
  size_t n_words_;
  uint64_t sink_ = 0;  // keeps the reads from being optimised away
};

}  // namespace hearth::runtime
