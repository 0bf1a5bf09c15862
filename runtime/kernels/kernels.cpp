#include "runtime/kernels/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(HEARTH_HAVE_AVX2_KERNELS)
#include <cpuid.h>
#endif
#if defined(HEARTH_HAVE_NEON_KERNELS)
#include <sys/auxv.h>
#endif

#include "runtime/kernels/half.h"
#include "runtime/kernels/kquants.h"
#include "runtime/kernels/lut_quants.h"
#include "runtime/kernels/summed_q8.h"
#if defined(HEARTH_KERNEL_READ_CHECKS)
#include "runtime/kernels/read_checks.h"
#endif

namespace hearth::runtime {

#if defined(HEARTH_HAVE_AVX2_KERNELS)
const KernelTable& avx2_kernels();    // kernels_avx2.cpp
const KernelTable& avx512_kernels();  // kernels_avx512.cpp
#endif
#if defined(HEARTH_HAVE_NEON_KERNELS)
const KernelTable& neon_kernels();          // kernels_neon.cpp
const KernelTable& neon_dotprod_kernels();  // kernels_neon.cpp
#endif

namespace {

float dot_f32_scalar(const float* w, const float* x, int n) {
  float s = 0.f;
  for (int i = 0; i < n; ++i) s += w[i] * x[i];
  return s;
}

float dot_f16_scalar(const uint16_t* w, const uint16_t* x, int n) {
  float s = 0.f;
  for (int i = 0; i < n; ++i) s += fp16_to_fp32(w[i]) * fp16_to_fp32(x[i]);
  return s;
}

float dot_bf16_scalar(const uint16_t* w, const float* x, int n) {
  float s = 0.f;
  for (int i = 0; i < n; ++i) s += bf16_to_fp32(w[i]) * x[i];
  return s;
}

float dot_q8_0_scalar(const BlockQ8_0* w, const BlockQ8_0* x, int n_blocks) {
  float s = 0.f;
  for (int b = 0; b < n_blocks; ++b) {
    int32_t acc = 0;
    for (int j = 0; j < kQ8_0Block; ++j) acc += int32_t{w[b].qs[j]} * int32_t{x[b].qs[j]};
    s += static_cast<float>(acc) * (fp16_to_fp32(w[b].d) * fp16_to_fp32(x[b].d));
  }
  return s;
}

float dot_q4_0_scalar(const BlockQ4_0* w, const BlockQ8_0* x, int n_blocks) {
  float s = 0.f;
  for (int b = 0; b < n_blocks; ++b) {
    int32_t acc = 0;
    for (int j = 0; j < kQ4_0Block / 2; ++j) {
      const int lo = (w[b].qs[j] & 0x0f) - 8;
      const int hi = (w[b].qs[j] >> 4) - 8;
      acc += lo * x[b].qs[j] + hi * x[b].qs[j + kQ4_0Block / 2];
    }
    s += static_cast<float>(acc) * (fp16_to_fp32(w[b].d) * fp16_to_fp32(x[b].d));
  }
  return s;
}

// Element j of a Q5_0 block, 0..31 (before the offset of 16).
inline int q5_0_value(const BlockQ5_0& b, int j) {
  uint32_t qh;
  std::memcpy(&qh, b.qh, 4);
  const int nibble = j < kQ5_0Block / 2 ? b.qs[j] & 0x0f : b.qs[j - kQ5_0Block / 2] >> 4;
  return nibble | static_cast<int>(((qh >> j) & 1) << 4);
}

float dot_q5_0_scalar(const BlockQ5_0* w, const BlockQ8_0* x, int n_blocks) {
  float s = 0.f;
  for (int b = 0; b < n_blocks; ++b) {
    int32_t acc = 0;
    for (int j = 0; j < kQ5_0Block; ++j) acc += (q5_0_value(w[b], j) - 16) * x[b].qs[j];
    s += static_cast<float>(acc) * (fp16_to_fp32(w[b].d) * fp16_to_fp32(x[b].d));
  }
  return s;
}

void quantize_q8_0_scalar(const float* x, BlockQ8_0* y, int n) {
  for (int b = 0; b < n / kQ8_0Block; ++b) {
    const float* xb = x + b * kQ8_0Block;
    float amax = 0.f;
    for (int j = 0; j < kQ8_0Block; ++j) amax = std::max(amax, std::fabs(xb[j]));
    y[b].d = fp32_to_fp16(amax / 127.f);
    const float id = amax != 0.f ? 127.f / amax : 0.f;
    for (int j = 0; j < kQ8_0Block; ++j) y[b].qs[j] = static_cast<int8_t>(std::nearbyint(xb[j] * id));
  }
}

// llama.cpp's reference Q4_0 quantizer: the value of largest magnitude maps to -8 exactly.
void quantize_q4_0_ref(const float* x, BlockQ4_0* y, int64_t n) {
  for (int64_t b = 0; b < n / kQ4_0Block; ++b) {
    const float* xb = x + b * kQ4_0Block;
    float amax = 0.f, max = 0.f;
    for (int j = 0; j < kQ4_0Block; ++j) {
      if (std::fabs(xb[j]) > amax) {
        amax = std::fabs(xb[j]);
        max = xb[j];
      }
    }
    const float d = max / -8.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    y[b].d = fp32_to_fp16(d);
    for (int j = 0; j < kQ4_0Block / 2; ++j) {
      const auto q0 = static_cast<uint8_t>(std::min(15.f, xb[j] * id + 8.5f));
      const auto q1 = static_cast<uint8_t>(std::min(15.f, xb[j + kQ4_0Block / 2] * id + 8.5f));
      y[b].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

// llama.cpp's reference Q5_0 quantizer: as Q4_0's, with 32 levels.
void quantize_q5_0_ref(const float* x, BlockQ5_0* y, int64_t n) {
  for (int64_t b = 0; b < n / kQ5_0Block; ++b) {
    const float* xb = x + b * kQ5_0Block;
    float amax = 0.f, max = 0.f;
    for (int j = 0; j < kQ5_0Block; ++j) {
      if (std::fabs(xb[j]) > amax) {
        amax = std::fabs(xb[j]);
        max = xb[j];
      }
    }
    const float d = max / -16.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    y[b].d = fp32_to_fp16(d);
    uint32_t qh = 0;
    for (int j = 0; j < kQ5_0Block / 2; ++j) {
      const auto q0 = static_cast<uint32_t>(std::min(31.f, xb[j] * id + 16.5f));
      const auto q1 = static_cast<uint32_t>(std::min(31.f, xb[j + kQ5_0Block / 2] * id + 16.5f));
      y[b].qs[j] = static_cast<uint8_t>((q0 & 0x0f) | ((q1 & 0x0f) << 4));
      qh |= ((q0 >> 4) << j) | ((q1 >> 4) << (j + kQ5_0Block / 2));
    }
    std::memcpy(y[b].qh, &qh, 4);
  }
}

// llama.cpp's reference Q8_0 quantizer (rounds half away from zero, unlike the activation path).
void quantize_q8_0_ref(const float* x, BlockQ8_0* y, int64_t n) {
  for (int64_t b = 0; b < n / kQ8_0Block; ++b) {
    const float* xb = x + b * kQ8_0Block;
    float amax = 0.f;
    for (int j = 0; j < kQ8_0Block; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    y[b].d = fp32_to_fp16(d);
    for (int j = 0; j < kQ8_0Block; ++j) y[b].qs[j] = static_cast<int8_t>(std::round(xb[j] * id));
  }
}

// The scalar gemm kernels are the dot kernels, output by output: the reference the tiled kernels
// of the other tables must equal output for output against their own dot kernels.
template <class W, class X, float (*Dot)(const W*, const X*, int), int kPerUnit>
void gemm_by_dots(const void* w, size_t ws, int n_rows, const void* x, size_t xs, int n_tokens, int n, float* y, size_t ldy) {
  for (int r = 0; r < n_rows; ++r) {
    const auto* wr = reinterpret_cast<const W*>(static_cast<const uint8_t*>(w) + static_cast<size_t>(r) * ws);
    for (int t = 0; t < n_tokens; ++t) {
      const auto* xt = reinterpret_cast<const X*>(static_cast<const uint8_t*>(x) + static_cast<size_t>(t) * xs);
      y[static_cast<size_t>(t) * ldy + static_cast<size_t>(r)] = Dot(wr, xt, n / kPerUnit);
    }
  }
}

// The scalar kernels read the dot type's blocks as they are.
size_t no_packing(TensorType, int) { return 0; }
void no_pack(TensorType, const void*, void*, int) {}

void axpy_scalar(float a, const float* x, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] += a * x[i];
}

void f16_to_f32_scalar(const uint16_t* x, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] = fp16_to_fp32(x[i]);
}

void f32_to_f16_scalar(const float* x, uint16_t* y, int n) {
  for (int i = 0; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
}

void attention_scores_scalar(const float* k, size_t k_stride, int n_keys, const float* q, size_t q_stride, int n_q, int n,
                             float* s, size_t s_stride) {
  for (int r = 0; r < n_q; ++r)
    for (int j = 0; j < n_keys; ++j)
      s[static_cast<size_t>(r) * s_stride + static_cast<size_t>(j)] =
          dot_f32_scalar(k + static_cast<size_t>(j) * k_stride, q + static_cast<size_t>(r) * q_stride, n);
}

double exp_sum_scalar(float* s, int n, float max) {
  double sum = 0.0;
  for (int j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - max);
    sum += s[j];
  }
  return sum;
}

void weighted_sum_scalar(const float* p, size_t p_stride, const float* inv, int n_q, const float* v, size_t v_stride, int n_keys,
                         int n, float* out) {
  for (int j = 0; j < n_keys; ++j)
    for (int h = 0; h < n_q; ++h)
      axpy_scalar(p[static_cast<size_t>(h) * p_stride + static_cast<size_t>(j)] * inv[h], v + static_cast<size_t>(j) * v_stride,
                  out + static_cast<size_t>(h) * static_cast<size_t>(n), n);
}

}  // namespace

void pack_summed_q8(const BlockQ8_0* x, SummedQ8Block* out, int nb) {
  for (int b = 0; b < nb; ++b) {
    int32_t sum = 0;
    for (int j = 0; j < kQ8_0Block; ++j) {
      out[b].q[j] = x[b].qs[j];
      sum += x[b].qs[j];
    }
    out[b].d = fp16_to_fp32(x[b].d);
    out[b].offset = -8 * sum;
  }
}

GemmKernel gemm_kernel(const KernelTable& k, TensorType t, RowLayout layout) {
  if (layout == RowLayout::kInterleaved8) {
    if (t == TensorType::Q4_0) return k.gemm_q4_0_x8;
    return t == TensorType::Q4_K ? k.gemm_q4_k_x8 : nullptr;
  }
  switch (t) {
    case TensorType::F32: return k.gemm_f32;
    case TensorType::F16: return k.gemm_f16;
    case TensorType::BF16: return k.gemm_bf16;
    case TensorType::Q8_0: return k.gemm_q8_0;
    case TensorType::Q4_0: return k.gemm_q4_0;
    case TensorType::Q5_0: return k.gemm_q5_0;
    case TensorType::Q4_K: return k.gemm_q4_k;
    case TensorType::Q5_K: return k.gemm_q5_k;
    case TensorType::Q6_K: return k.gemm_q6_k;
    case TensorType::MXFP4: return k.gemm_mxfp4;
    case TensorType::IQ4_NL: return k.gemm_iq4_nl;
    case TensorType::IQ4_XS: return k.gemm_iq4_xs;
    default: return nullptr;
  }
}

namespace {
const KernelTable& scalar_table() {
  static constexpr KernelTable table{.name = "scalar",
                                     .dot_f32 = dot_f32_scalar,
                                     .dot_f16 = dot_f16_scalar,
                                     .dot_bf16 = dot_bf16_scalar,
                                     .dot_q8_0 = dot_q8_0_scalar,
                                     .dot_q4_0 = dot_q4_0_scalar,
                                     .dot_q5_0 = dot_q5_0_scalar,
                                     .dot_q4_k = dot_q4_k_scalar,
                                     .dot_q5_k = dot_q5_k_scalar,
                                     .dot_q6_k = dot_q6_k_scalar,
                                     .dot_mxfp4 = dot_mxfp4_scalar,
                                     .dot_iq4_nl = dot_iq4_nl_scalar,
                                     .dot_iq4_xs = dot_iq4_xs_scalar,
                                     .f32_to_f16 = f32_to_f16_scalar,
                                     .quantize_q8_0 = quantize_q8_0_scalar,
                                     .quantize_q8_k = quantize_q8_k_scalar,
                                     .gemm_f32 = gemm_by_dots<float, float, dot_f32_scalar, 1>,
                                     .gemm_f16 = gemm_by_dots<uint16_t, uint16_t, dot_f16_scalar, 1>,
                                     .gemm_bf16 = gemm_by_dots<uint16_t, float, dot_bf16_scalar, 1>,
                                     .gemm_q8_0 = gemm_by_dots<BlockQ8_0, BlockQ8_0, dot_q8_0_scalar, kQ8_0Block>,
                                     .gemm_q4_0 = gemm_by_dots<BlockQ4_0, BlockQ8_0, dot_q4_0_scalar, kQ4_0Block>,
                                     .gemm_q5_0 = gemm_by_dots<BlockQ5_0, BlockQ8_0, dot_q5_0_scalar, kQ5_0Block>,
                                     .gemm_q4_k = gemm_by_dots<BlockQ4_K, BlockQ8_K, dot_q4_k_scalar, kQK>,
                                     .gemm_q5_k = gemm_by_dots<BlockQ5_K, BlockQ8_K, dot_q5_k_scalar, kQK>,
                                     .gemm_q6_k = gemm_by_dots<BlockQ6_K, BlockQ8_K, dot_q6_k_scalar, kQK>,
                                     .gemm_mxfp4 = gemm_by_dots<BlockMXFP4, BlockQ8_0, dot_mxfp4_scalar, kMxfp4Block>,
                                     .gemm_iq4_nl = gemm_by_dots<BlockIQ4_NL, BlockQ8_0, dot_iq4_nl_scalar, kIq4NlBlock>,
                                     .gemm_iq4_xs = gemm_by_dots<BlockIQ4_XS, BlockQ8_K, dot_iq4_xs_scalar, kQK>,
                                     .packed_bytes = no_packing,
                                     .pack = no_pack,
                                     .attention_scores = attention_scores_scalar,
                                     .axpy = axpy_scalar,
                                     .weighted_sum = weighted_sum_scalar,
                                     .exp_sum = exp_sum_scalar,
                                     .f16_to_f32 = f16_to_f32_scalar};
  return table;
}

// The table every caller gets for `Table`: in sanitized builds its read-checked twin.
template <const KernelTable& (*Table)()>
const KernelTable& served() {
#if defined(HEARTH_KERNEL_READ_CHECKS)
  return read_checks::Checked<Table>::table();
#else
  return Table();
#endif
}
}  // namespace

const KernelTable& scalar_kernels() { return served<scalar_table>(); }

#if defined(HEARTH_HAVE_AVX2_KERNELS)
// CPUID leaf 1, ECX bit 29. (clang 14 does not accept __builtin_cpu_supports("f16c"); GCC does.)
static bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & bit_F16C) != 0;
}
#endif

std::vector<const KernelTable*> supported_kernels() {
  std::vector<const KernelTable*> tables{&scalar_kernels()};
#if defined(HEARTH_HAVE_AVX2_KERNELS)
  static const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
  static const bool has_avx512 = has_avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
                                 __builtin_cpu_supports("avx512vbmi");
  if (has_avx2) tables.push_back(&served<avx2_kernels>());
  if (has_avx512) tables.push_back(&served<avx512_kernels>());
#endif
#if defined(HEARTH_HAVE_NEON_KERNELS)
  // NEON is part of every AArch64 core; the dot-product instructions (ARMv8.2's SDOT) are not,
  // and the kernel tells (HWCAP_ASIMDDP, bit 20 of AT_HWCAP, also on Android).
  constexpr unsigned long kHwcapAsimddp = 1ul << 20;
  static const bool has_dotprod = (getauxval(AT_HWCAP) & kHwcapAsimddp) != 0;
  tables.push_back(&served<neon_kernels>());
  if (has_dotprod) tables.push_back(&served<neon_dotprod_kernels>());
#endif
  return tables;
}

const KernelTable& best_kernels() {
  static const KernelTable& best = [&]() -> const KernelTable& {
    const auto tables = supported_kernels();
    if (const char* want = std::getenv("HEARTH_KERNELS"); want != nullptr && *want != '\0') {
      for (const KernelTable* t : tables)
        if (t->name == want) return *t;
      std::string names;
      for (const KernelTable* t : tables) names += (names.empty() ? "" : ", ") + std::string(t->name);
      throw std::runtime_error("HEARTH_KERNELS=" + std::string(want) + " is not supported on this CPU (supported: " + names +
                               ")");
    }
    return *tables.back();
  }();
  return best;
}

TensorType dot_type(TensorType t) {
  switch (t) {
    case TensorType::Q8_0:
    case TensorType::Q4_0:
    case TensorType::Q5_0:
    case TensorType::MXFP4:
    case TensorType::IQ4_NL: return TensorType::Q8_0;
    case TensorType::Q4_K:
    case TensorType::Q5_K:
    case TensorType::Q6_K:
    case TensorType::IQ4_XS: return TensorType::Q8_K;
    case TensorType::F16: return TensorType::F16;
    default: return TensorType::F32;
  }
}

void dequantize_row(TensorType type, const void* row, float* out, int64_t n) {
  switch (type) {
    case TensorType::F32: std::memcpy(out, row, static_cast<size_t>(n) * 4); return;
    case TensorType::F16: {
      const auto* h = static_cast<const uint16_t*>(row);
      for (int64_t i = 0; i < n; ++i) out[i] = fp16_to_fp32(h[i]);
      return;
    }
    case TensorType::BF16: {
      const auto* h = static_cast<const uint16_t*>(row);
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_fp32(h[i]);
      return;
    }
    case TensorType::Q8_0: {
      const auto* b = static_cast<const BlockQ8_0*>(row);
      for (int64_t i = 0; i < n; ++i) out[i] = fp16_to_fp32(b[i / kQ8_0Block].d) * b[i / kQ8_0Block].qs[i % kQ8_0Block];
      return;
    }
    case TensorType::Q4_0: {
      const auto* b = static_cast<const BlockQ4_0*>(row);
      for (int64_t blk = 0; blk < n / kQ4_0Block; ++blk) {
        const float d = fp16_to_fp32(b[blk].d);
        for (int j = 0; j < kQ4_0Block / 2; ++j) {
          out[blk * kQ4_0Block + j] = d * static_cast<float>((b[blk].qs[j] & 0x0f) - 8);
          out[blk * kQ4_0Block + j + kQ4_0Block / 2] = d * static_cast<float>((b[blk].qs[j] >> 4) - 8);
        }
      }
      return;
    }
    case TensorType::Q5_0: {
      const auto* b = static_cast<const BlockQ5_0*>(row);
      for (int64_t blk = 0; blk < n / kQ5_0Block; ++blk) {
        const float d = fp16_to_fp32(b[blk].d);
        for (int j = 0; j < kQ5_0Block; ++j) out[blk * kQ5_0Block + j] = d * static_cast<float>(q5_0_value(b[blk], j) - 16);
      }
      return;
    }
    case TensorType::Q4_K: dequantize_q4_k(static_cast<const BlockQ4_K*>(row), out, n); return;
    case TensorType::Q5_K: dequantize_q5_k(static_cast<const BlockQ5_K*>(row), out, n); return;
    case TensorType::Q6_K: dequantize_q6_k(static_cast<const BlockQ6_K*>(row), out, n); return;
    case TensorType::Q8_K: dequantize_q8_k(static_cast<const BlockQ8_K*>(row), out, n); return;
    case TensorType::MXFP4: dequantize_mxfp4(static_cast<const BlockMXFP4*>(row), out, n); return;
    case TensorType::IQ4_NL: dequantize_iq4_nl(static_cast<const BlockIQ4_NL*>(row), out, n); return;
    case TensorType::IQ4_XS: dequantize_iq4_xs(static_cast<const BlockIQ4_XS*>(row), out, n); return;
    default: throw std::runtime_error("cannot dequantize tensor type " + std::string(tensor_type_name(type)));
  }
}

void quantize_row(TensorType type, const float* x, void* out, int64_t n) {
  switch (type) {
    case TensorType::F32: std::memcpy(out, x, static_cast<size_t>(n) * 4); return;
    case TensorType::F16: {
      auto* h = static_cast<uint16_t*>(out);
      for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_fp16(x[i]);
      return;
    }
    case TensorType::BF16: {
      auto* h = static_cast<uint16_t*>(out);
      for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_bf16(x[i]);
      return;
    }
    case TensorType::Q8_0: quantize_q8_0_ref(x, static_cast<BlockQ8_0*>(out), n); return;
    case TensorType::Q4_0: quantize_q4_0_ref(x, static_cast<BlockQ4_0*>(out), n); return;
    case TensorType::Q5_0: quantize_q5_0_ref(x, static_cast<BlockQ5_0*>(out), n); return;
    case TensorType::Q4_K: quantize_q4_k(x, static_cast<BlockQ4_K*>(out), n); return;
    case TensorType::Q5_K: quantize_q5_k(x, static_cast<BlockQ5_K*>(out), n); return;
    case TensorType::Q6_K: quantize_q6_k(x, static_cast<BlockQ6_K*>(out), n); return;
    case TensorType::MXFP4: quantize_mxfp4(x, static_cast<BlockMXFP4*>(out), n); return;
    case TensorType::IQ4_NL: quantize_iq4_nl(x, static_cast<BlockIQ4_NL*>(out), n); return;
    case TensorType::IQ4_XS: quantize_iq4_xs(x, static_cast<BlockIQ4_XS*>(out), n); return;
    default: throw std::runtime_error("cannot quantize to tensor type " + std::string(tensor_type_name(type)));
  }
}

}  // namespace hearth::runtime
