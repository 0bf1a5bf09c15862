// Buffers whose first element starts a cache line. The SIMD kernels load activations 32 or 64
// bytes at a time; from a plain std::vector (malloc aligns to 16 bytes, and a large block sits 16
// bytes past a page) every other 32-byte load and every 64-byte load spanned two cache lines:
// the AVX-512 f16 gemm ran 7-10% slower at prefill shapes, half as fast with its data in L1
// (docs/performance.md, session 26).
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace hearth::runtime {

inline constexpr std::size_t kCacheLine = 64;

template <class T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{kCacheLine})); }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete (p, std::align_val_t{kCacheLine}); }
  template <class U>
  bool operator==(const CacheLineAllocator<U>&) const noexcept {
    return true;
  }
};

template <class T>
using AlignedVector = std::vector<T, CacheLineAllocator<T>>;

}  // namespace hearth::runtime
