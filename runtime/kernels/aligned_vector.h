// Buffers whose first element starts a cache line. The SIMD kernels load activations 32 or 64
// bytes at a time; from a plain std::vector (malloc aligns to 16 bytes, and a large block sits 16
// bytes past a page) every other 32-byte load and every 64-byte load spanned two cache lines:
// the AVX-512 f16 gemm ran 7-10% slower at prefill shapes, half as fast with its data in L1
// (docs/performance.md, session 26).
#pragma once

#include <cstddef>
#include <new>
#include <vector>

#include <sys/mman.h>

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
// bytes of each position's row) on 2 MiB pages where the kernel allows them (transparent huge
// pages in "madvise" mode, Debian's default): on 4 KiB pages every 8 positions' rows cost a TLB
// miss at a conversation's depth, 6% of attention's time from memory (docs/performance.md,
// session 35). Buffers under 2 MiB keep the cache-line alignment.
inline constexpr std::size_t kHugePage = std::size_t{2} << 20;

template <class T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) noexcept {}
  static std::align_val_t alignment(std::size_t bytes) { return std::align_val_t{bytes >= kHugePage ? kHugePage : kCacheLine}; }
  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    void* p = ::operator new(bytes, alignment(bytes));
#ifdef MADV_HUGEPAGE
    // Advice only: where it is refused the buffer works on small pages.
    if (bytes >= kHugePage) madvise(p, bytes / kHugePage * kHugePage, MADV_HUGEPAGE);
#endif
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) noexcept { ::operator delete(p, alignment(n * sizeof(T))); }
  template <class U>
  bool operator==(const HugePageAllocator<U>&) const noexcept {
    return true;
  }
};

template <class T>
using HugePageVector = std::vector<T, HugePageAllocator<T>>;

}  // namespace hearth::runtime
