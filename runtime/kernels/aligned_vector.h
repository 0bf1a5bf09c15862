// Buffers whose first element starts a cache line. The SIMD kernels load activations 32 or 64
// bytes at a time; from a plain std::vector (malloc aligns to 16 bytes, and a large block sits 16
// bytes past a page) every other 32-byte load and every 64-byte load spanned two cache lines:
// the AVX-512 f16 gemm ran 7-10% slower at prefill shapes, half as fast with its data in L1
// (docs/performance.md, session 26).
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#include "runtime/kernels/huge_pages.h"

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

// Large buffers read in short strided pieces (a KV cache: attention reads one head's 128-256
// bytes of each position's row) on 2 MiB pages where the kernel allows them (huge_pages.h): on
// 4 KiB pages every 8 positions' rows cost a TLB miss at a conversation's depth, 6% of
// attention's time from memory (docs/performance.md, session 35). Those of 2 MiB and more are
// mapped on their own, not taken from the heap, whose memory would keep the advice after the
// buffer is freed; smaller ones keep the cache-line alignment.
template <class T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    if (n * sizeof(T) < kHugePage) return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{kCacheLine}));
    return static_cast<T*>(map_huge_pages(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (n * sizeof(T) < kHugePage) ::operator delete (p, std::align_val_t{kCacheLine});
    else unmap_huge_pages(p, n * sizeof(T));
  }
  template <class U>
  bool operator==(const HugePageAllocator<U>&) const noexcept {
    return true;
  }
};

template <class T>
using HugePageVector = std::vector<T, HugePageAllocator<T>>;

}  // namespace hearth::runtime
