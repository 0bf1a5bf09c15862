// A kernel table's twin that checks, before each call, that every byte the call's contract reads
// is addressable, and then calls the table itself. For sanitized builds only (kernels.cpp uses it
// when HEARTH_KERNEL_READ_CHECKS is defined, runtime/CMakeLists.txt): there the kernels are
// compiled without ASan's check on every load, which made the sanitized suites' decode 4x slower
// than Release's, and these checks, one per region per call, catch what those caught at the seam:
// a caller handing a kernel a buffer shorter than the rows, tokens, keys or blocks it names.
// (A kernel reading past its own contract is tests/kernels_test.cpp's guard-page case.)
//
// Reads only: the kernels' writes keep ASan's checks. The regions follow kernels.h's comments.
#pragma once

#include <sanitizer/asan_interface.h>

#include <cstdio>
#include <cstdlib>

#include "runtime/format/tensor_type.h"
#include "runtime/kernels/kernels.h"

namespace hearth::runtime::read_checks {

// Bytes from the first of `count` items `stride` bytes apart to the end of the last one.
inline size_t span_bytes(size_t count, size_t stride, size_t item_bytes) {
  return count == 0 || item_bytes == 0 ? 0 : (count - 1) * stride + item_bytes;
}

// Regions longer than this are checked at their ends only (that much at each): scanning the
// shadow of a whole weight matrix, once per call, took a fifth of the sanitized decode's time. A
// buffer too short for its call ends in a red zone, which the last bytes' check finds.
inline constexpr size_t kWholeRegionBytes = 64 << 10, kRegionEndBytes = 4 << 10;

// Aborts with ASan's description of the first unaddressable byte of [p, p + bytes), if any.
inline void check(const char* table, const char* kernel, const char* what, const void* p, size_t bytes) {
  if (bytes == 0) return;
  auto* begin = static_cast<char*>(const_cast<void*>(p));
  const void* bad = nullptr;
  if (bytes <= kWholeRegionBytes) {
    bad = __asan_region_is_poisoned(begin, bytes);
  } else {
    bad = __asan_region_is_poisoned(begin, kRegionEndBytes);
    if (bad == nullptr) bad = __asan_region_is_poisoned(begin + bytes - kRegionEndBytes, kRegionEndBytes);
  }
  if (bad == nullptr) return;
  std::fprintf(stderr, "hearth: kernel %s.%s reads %zu bytes of %s at %p, but %p is not addressable\n", table, kernel, bytes,
               what, p, bad);
  __asan_describe_address(const_cast<void*>(bad));
  std::abort();
}

// The table checked: a function returning the table being wrapped.
template <const KernelTable& (*T)()>
struct Checked {
  static const char* name() { return T().name.data(); }

  // Dot kernels: n units of w and of x (elements for float types, blocks for quantized ones).
  template <class W, class X, float (*KernelTable::*Dot)(const W*, const X*, int)>
  static float dot(const W* w, const X* x, int n) {
    check(name(), "dot", "weights", w, static_cast<size_t>(n) * sizeof(W));
    check(name(), "dot", "activations", x, static_cast<size_t>(n) * sizeof(X));
    return (T().*Dot)(w, x, n);
  }

  // Conversions of n floats (f16, Q8_0 and Q8_K blocks).
  template <class Y, void (*KernelTable::*Convert)(const float*, Y*, int)>
  static void convert(const float* x, Y* y, int n) {
    check(name(), "convert", "floats", x, static_cast<size_t>(n) * sizeof(float));
    (T().*Convert)(x, y, n);
  }

  // Bytes of one token's activations as a gemm kernel for `weight` reads them.
  static size_t token_bytes(TensorType weight, int n) {
    const size_t packed = T().packed_bytes(weight, n);
    return packed != 0 ? packed : row_bytes(dot_type(weight), static_cast<uint64_t>(n));
  }

  template <TensorType kWeight, GemmKernel KernelTable::*Gemm>
  static void gemm(const void* w, size_t ws, int n_rows, const void* x, size_t xs, int n_tokens, int n, float* y, size_t ldy) {
    check(name(), "gemm", "weights", w, span_bytes(n_rows, ws, row_bytes(kWeight, static_cast<uint64_t>(n))));
    check(name(), "gemm", "activations", x, span_bytes(n_tokens, xs, token_bytes(kWeight, n)));
    (T().*Gemm)(w, ws, n_rows, x, xs, n_tokens, n, y, ldy);
  }

  static void pack(TensorType weight, const void* blocks, void* out, int n) {
    check(name(), "pack", "blocks", blocks, row_bytes(dot_type(weight), static_cast<uint64_t>(n)));
    T().pack(weight, blocks, out, n);
  }

  static void attention_scores(const float* k, size_t k_stride, int n_keys, const float* q, size_t q_stride, int n_q, int n,
                               float* s, size_t s_stride) {
    const size_t row = static_cast<size_t>(n) * sizeof(float);
    check(name(), "attention_scores", "keys", k, span_bytes(n_keys, k_stride * sizeof(float), row));
    check(name(), "attention_scores", "queries", q, span_bytes(n_q, q_stride * sizeof(float), row));
    T().attention_scores(k, k_stride, n_keys, q, q_stride, n_q, n, s, s_stride);
  }

  static void axpy(float a, const float* x, float* y, int n) {
    check(name(), "axpy", "x", x, static_cast<size_t>(n) * sizeof(float));
    check(name(), "axpy", "y", y, static_cast<size_t>(n) * sizeof(float));
    T().axpy(a, x, y, n);
  }

  static void weighted_sum(const float* p, size_t p_stride, const float* inv, int n_q, const float* v, size_t v_stride,
                           int n_keys, int n, float* out) {
    const size_t f = sizeof(float);
    check(name(), "weighted_sum", "probabilities", p, span_bytes(n_q, p_stride * f, static_cast<size_t>(n_keys) * f));
    check(name(), "weighted_sum", "inverse sums", inv, static_cast<size_t>(n_q) * f);
    check(name(), "weighted_sum", "values", v, span_bytes(n_keys, v_stride * f, static_cast<size_t>(n) * f));
    check(name(), "weighted_sum", "outputs", out, static_cast<size_t>(n_q) * static_cast<size_t>(n) * f);
    T().weighted_sum(p, p_stride, inv, n_q, v, v_stride, n_keys, n, out);
  }

  static double exp_sum(float* s, int n, float max) {
    check(name(), "exp_sum", "scores", s, static_cast<size_t>(n) * sizeof(float));
    return T().exp_sum(s, n, max);
  }

  static void f16_to_f32(const uint16_t* x, float* y, int n) {
    check(name(), "f16_to_f32", "halves", x, static_cast<size_t>(n) * sizeof(uint16_t));
    T().f16_to_f32(x, y, n);
  }

  static void attention_scores_f16(const uint16_t* k, size_t k_stride, int n_keys, const float* q, size_t q_stride, int n_q,
                                   int n, float* s, size_t s_stride) {
    const size_t h = sizeof(uint16_t), f = sizeof(float);
    check(name(), "attention_scores_f16", "keys", k, span_bytes(n_keys, k_stride * h, static_cast<size_t>(n) * h));
    check(name(), "attention_scores_f16", "queries", q, span_bytes(n_q, q_stride * f, static_cast<size_t>(n) * f));
    T().attention_scores_f16(k, k_stride, n_keys, q, q_stride, n_q, n, s, s_stride);
  }

  static void weighted_sum_f16(const float* p, size_t p_stride, const float* inv, int n_q, const uint16_t* v, size_t v_stride,
                               int n_keys, int n, float* out) {
    const size_t f = sizeof(float), h = sizeof(uint16_t);
    check(name(), "weighted_sum_f16", "probabilities", p, span_bytes(n_q, p_stride * f, static_cast<size_t>(n_keys) * f));
    check(name(), "weighted_sum_f16", "inverse sums", inv, static_cast<size_t>(n_q) * f);
    check(name(), "weighted_sum_f16", "values", v, span_bytes(n_keys, v_stride * h, static_cast<size_t>(n) * h));
    check(name(), "weighted_sum_f16", "outputs", out, static_cast<size_t>(n_q) * static_cast<size_t>(n) * f);
    T().weighted_sum_f16(p, p_stride, inv, n_q, v, v_stride, n_keys, n, out);
  }

  static const KernelTable& table() {
    using K = KernelTable;
    using TT = TensorType;
    static const KernelTable t{.name = T().name,
                               .dot_f32 = dot<float, float, &K::dot_f32>,
                               .dot_f16 = dot<uint16_t, uint16_t, &K::dot_f16>,
                               .dot_bf16 = dot<uint16_t, float, &K::dot_bf16>,
                               .dot_q8_0 = dot<BlockQ8_0, BlockQ8_0, &K::dot_q8_0>,
                               .dot_q4_0 = dot<BlockQ4_0, BlockQ8_0, &K::dot_q4_0>,
                               .dot_q5_0 = dot<BlockQ5_0, BlockQ8_0, &K::dot_q5_0>,
                               .dot_q4_k = dot<BlockQ4_K, BlockQ8_K, &K::dot_q4_k>,
                               .dot_q5_k = dot<BlockQ5_K, BlockQ8_K, &K::dot_q5_k>,
                               .dot_q6_k = dot<BlockQ6_K, BlockQ8_K, &K::dot_q6_k>,
                               .dot_mxfp4 = dot<BlockMXFP4, BlockQ8_0, &K::dot_mxfp4>,
                               .dot_iq4_nl = dot<BlockIQ4_NL, BlockQ8_0, &K::dot_iq4_nl>,
                               .dot_iq4_xs = dot<BlockIQ4_XS, BlockQ8_K, &K::dot_iq4_xs>,
                               .f32_to_f16 = convert<uint16_t, &K::f32_to_f16>,
                               .quantize_q8_0 = convert<BlockQ8_0, &K::quantize_q8_0>,
                               .quantize_q8_k = convert<BlockQ8_K, &K::quantize_q8_k>,
                               .gemm_f32 = gemm<TT::F32, &K::gemm_f32>,
                               .gemm_f16 = gemm<TT::F16, &K::gemm_f16>,
                               .gemm_bf16 = gemm<TT::BF16, &K::gemm_bf16>,
                               .gemm_q8_0 = gemm<TT::Q8_0, &K::gemm_q8_0>,
                               .gemm_q4_0 = gemm<TT::Q4_0, &K::gemm_q4_0>,
                               .gemm_q5_0 = gemm<TT::Q5_0, &K::gemm_q5_0>,
                               .gemm_q4_k = gemm<TT::Q4_K, &K::gemm_q4_k>,
                               .gemm_q5_k = gemm<TT::Q5_K, &K::gemm_q5_k>,
                               .gemm_q6_k = gemm<TT::Q6_K, &K::gemm_q6_k>,
                               .gemm_mxfp4 = gemm<TT::MXFP4, &K::gemm_mxfp4>,
                               .gemm_iq4_nl = gemm<TT::IQ4_NL, &K::gemm_iq4_nl>,
                               .gemm_iq4_xs = gemm<TT::IQ4_XS, &K::gemm_iq4_xs>,
                               .gemm_q4_0_x8 = T().gemm_q4_0_x8 ? gemm<TT::Q4_0, &K::gemm_q4_0_x8> : nullptr,
                               .gemm_q4_k_x8 = T().gemm_q4_k_x8 ? gemm<TT::Q4_K, &K::gemm_q4_k_x8> : nullptr,
                               .packed_bytes = T().packed_bytes,
                               .pack = pack,
                               .attention_scores = attention_scores,
                               .axpy = axpy,
                               .weighted_sum = weighted_sum,
                               .exp_sum = exp_sum,
                               .f16_to_f32 = f16_to_f32,
                               .attention_scores_f16 = T().attention_scores_f16 ? attention_scores_f16 : nullptr,
                               .weighted_sum_f16 = T().weighted_sum_f16 ? weighted_sum_f16 : nullptr};
    return t;
  }
};

}  // namespace hearth::runtime::read_checks
