// Helpers of the kernel suites (kernels_test.cpp, kquants_test.cpp): random inputs, a double
// reference dot product, and a row quantized and read back through the format's own code. One
// definition for both files, which may share a unity batch.
#pragma once

#include <doctest/doctest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "runtime/kernels/kernels.h"

namespace hearth::test {

inline std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline double naive_dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double{a[i]} * double{b[i]};
  return s;
}

inline std::vector<uint8_t> quantized(runtime::TensorType t, const std::vector<float>& x) {
  std::vector<uint8_t> out(runtime::row_bytes(t, x.size()));
  runtime::quantize_row(t, x.data(), out.data(), static_cast<int64_t>(x.size()));
  return out;
}

inline std::vector<float> dequantized(runtime::TensorType t, const void* q, size_t n) {
  std::vector<float> out(n);
  runtime::dequantize_row(t, q, out.data(), static_cast<int64_t>(n));
  return out;
}

// Memory with an inaccessible page on each side. A buffer copied against either guard makes a
// kernel that reads one byte before or after it fault, in every build: the sanitized build's
// kernels do not check their own loads (runtime/kernels/read_checks.h checks their callers).
class GuardedPages {
 public:
  explicit GuardedPages(size_t bytes)
      : page_(static_cast<size_t>(sysconf(_SC_PAGESIZE))), inner_((bytes + page_ - 1) / page_ * page_ + page_) {
    void* p = mmap(nullptr, inner_ + 2 * page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED);
    base_ = static_cast<uint8_t*>(p);
    const bool guarded = mprotect(base_, page_, PROT_NONE) == 0 && mprotect(base_ + page_ + inner_, page_, PROT_NONE) == 0;
    if (!guarded) munmap(base_, inner_ + 2 * page_);  // no destructor runs after a throw here
    REQUIRE(guarded);
  }
  GuardedPages(const GuardedPages&) = delete;
  GuardedPages& operator=(const GuardedPages&) = delete;
  ~GuardedPages() { munmap(base_, inner_ + 2 * page_); }

  // A copy of `bytes` bytes of data that ends at the back guard, or starts at the front one.
  template <class T>
  T* copy(const T* data, size_t bytes, bool against_end) {
    uint8_t* p = against_end ? base_ + page_ + inner_ - bytes : base_ + page_;
    if (bytes > 0) std::memcpy(p, data, bytes);  // data may be an empty vector's nullptr
    return reinterpret_cast<T*>(p);
  }

 private:
  size_t page_, inner_;
  uint8_t* base_ = nullptr;
};

}  // namespace hearth::test
