#include "runtime/kernels/membw.h"

#include <algorithm>
#include <atomic>
#include <chrono>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace hearth::runtime {

namespace {

// Chunks per pass: the pool balances them as it balances matmul rows, so a thread that another
// process preempts does not leave the pass waiting for its fixed half.
constexpr size_t kChunkWords = size_t{1} << 18;  // 2 MiB

// XOR of n words in eight independent lanes: the compiler vectorises it with the baseline ISA.
uint64_t read_words(const uint64_t* p, size_t n) {
  uint64_t a[8] = {};
  for (size_t i = 0; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) a[j] ^= p[i + static_cast<size_t>(j)];
  return a[0] ^ a[1] ^ a[2] ^ a[3] ^ a[4] ^ a[5] ^ a[6] ^ a[7];
}

#if defined(__x86_64__)
// The same with 256-bit loads, 128 bytes per iteration, as the AVX2 kernels read weights.
__attribute__((target("avx2"))) uint64_t read_words_avx2(const uint64_t* p, size_t n) {
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  const auto* v = reinterpret_cast<const __m256i*>(p);
  for (size_t i = 0; i + 16 <= n; i += 16, v += 4) {
    a = _mm256_xor_si256(a, _mm256_loadu_si256(v));
    b = _mm256_xor_si256(b, _mm256_loadu_si256(v + 1));
    c = _mm256_xor_si256(c, _mm256_loadu_si256(v + 2));
    d = _mm256_xor_si256(d, _mm256_loadu_si256(v + 3));
  }
  a = _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d));
  return static_cast<uint64_t>(_mm256_extract_epi64(a, 0) ^ _mm256_extract_epi64(a, 3));
}
#endif

uint64_t read_chunk(const uint64_t* p, size_t n) {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return read_words_avx2(p, n);
#endif
  return read_words(p, n);
}

}  // namespace

ReadBandwidthProbe::ReadBandwidthProbe(size_t bytes)
    : n_words_(std::max<size_t>(bytes / sizeof(uint64_t), kChunkWords) / kChunkWords * kChunkWords) {
  buf_ = HugePageBuffer(n_words_ * sizeof(uint64_t));
  // Written, not just allocated: untouched pages all map the zero page and would read from cache.
  uint64_t* w = words();
  for (size_t i = 0; i < n_words_; ++i) w[i] = i * 0x9e3779b97f4a7c15ull;
}

double ReadBandwidthProbe::measure(ThreadPool& pool, int passes) {
  const int n_chunks = static_cast<int>(n_words_ / kChunkWords);
  double best = 0;
  for (int p = 0; p < passes; ++p) {
    std::atomic<uint64_t> acc{0};
    const auto t0 = std::chrono::steady_clock::now();
    pool.run(n_chunks, [&](int c) {
      acc.fetch_xor(read_chunk(words() + static_cast<size_t>(c) * kChunkWords, kChunkWords), std::memory_order_relaxed);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sink_ ^= acc.load();
    best = std::max(best, static_cast<double>(bytes()) / s);
  }
  return best;
}

}  // namespace hearth::runtime
