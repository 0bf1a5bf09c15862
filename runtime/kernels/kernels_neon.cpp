// NEON kernels for 64-bit ARM, in two tables: "neon" for every AArch64 core (Advanced SIMD is
// part of ARMv8-A: Cortex-A53/A55/A72, Raspberry Pi 3 and 4) and "neon-dotprod" for cores with
// the dot-product instructions (SDOT, ARMv8.2-A and later: Cortex-A76/A78/X1, Raspberry Pi 5,
// Jetson Orin, most phones since 2019), which kernels.cpp adds when the kernel reports
// HWCAP_ASIMDDP. They have the AVX2 table's structure: activations quantized once per token,
// block-wise integer dot products, register tiles driven by kernel_tiles.h, no allocation.
//
// The two tables differ only in how they form the integer lanes of a block's dot product
// (IntLanes below), and those lanes hold the same exact integers either way, so the tables give
// the same bits: a Raspberry Pi 4 and a Raspberry Pi 5 produce the same tokens.
//
// SDOT comes from inline assembly under GCC, not from compiling for ARMv8.2-A (which GCC 12's
// vdotq_s32 requires): -march=armv8.2-a also lets the compiler use LSE atomics (it does, in
// std::atomic code), and an inline function of a header compiled that way may be the copy the
// linker keeps for the whole program, which would then fault on an ARMv8.0 core such as the Pi
// 4's. So the only ARMv8.2 instruction in this file is SDOT, and only the neon-dotprod table
// executes it.
//
// Floating-point contraction is off for this file (runtime/CMakeLists.txt): the only fused
// multiply-adds are the explicit vfmaq_f32 ones, so every instance of a tile template performs
// the same operations per output (batch invariance, kernels.h).
#if defined(__aarch64__) && defined(HEARTH_HAVE_NEON_KERNELS)

#include <arm_neon.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "runtime/kernels/half.h"
#include "runtime/kernels/kernel_tiles.h"
#include "runtime/kernels/kernels.h"
#include "runtime/kernels/softmax_exp.h"
#include "runtime/kernels/lut_quants.h"

namespace hearth::runtime {

namespace {

using tiles::dot1;
using tiles::gemm;

// IEEE half to float in hardware (FCVT, ARMv8-A), exact like fp16_to_fp32.
inline float half_to_float(uint16_t h) {
  __fp16 f;
  std::memcpy(&f, &h, 2);
  return static_cast<float>(f);
}

// See prefetch_ahead in kernels_avx2.cpp: a tile asks for the rows that follow it as it goes.
template <int kBytesPerStep>
inline void prefetch_ahead(const uint8_t* ahead, int step) {
  const uint8_t* p = ahead + static_cast<size_t>(step) * kBytesPerStep;
  for (int o = 0; o < kBytesPerStep; o += 64) __builtin_prefetch(p + o, 0, 3);
}

// ---- Integer lanes of a dot product ----
//
// For 16 (or 2 x 16) int8 pairs, 4 int32 lanes where lane l holds the exact sum of the products
// of elements 4l..4l+3 (of both vectors). Integers are exact, so both ways give the same lanes.
// Every activation our quantizers make is in -127..127, so a weight of -128 times it still fits
// int16 twice (2 * 128 * 127 < 32768), which the NEON way relies on.

// ARMv8.0: widening multiplies to int16 (the two vectors' products of the same position added),
// then pairwise additions: pairs into int32, pairs of those (vpaddq) into groups of 4.
struct MullLanes {
  static int32x4_t dot16(int8x16_t a, int8x16_t b) {
    const int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    const int16x8_t hi = vmull_high_s8(a, b);
    return vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi));
  }
  static int32x4_t dot32(int8x16_t a0, int8x16_t a1, int8x16_t b0, int8x16_t b1) {
    const int16x8_t lo = vmlal_s8(vmull_s8(vget_low_s8(a0), vget_low_s8(b0)), vget_low_s8(a1), vget_low_s8(b1));
    const int16x8_t hi = vmlal_high_s8(vmull_high_s8(a0, b0), a1, b1);
    return vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi));
  }
};

// ARMv8.2 dot product: SDOT adds the 4 products of each group of 4 into its lane.
inline int32x4_t sdot(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__clang__) || (defined(__ARM_FEATURE_DOTPROD) && defined(__ARM_FEATURE_ATOMICS))
  // Clang compiles this file with -march=armv8-a+dotprod (runtime/CMakeLists.txt: that adds
  // SDOT and no LSE); a GCC build for ARMv8.2-A or later has it anyway.
  return vdotq_s32(acc, a, b);
#else
  // GCC's intrinsic needs the whole function compiled for ARMv8.2-A. The .arch directive only
  // lets the assembler accept the instruction (for the rest of the file too, which the
  // compiler's own ARMv8.0 code does not use).
  __asm__(".arch armv8.2-a+dotprod\n\tsdot %0.4s, %1.16b, %2.16b" : "+w"(acc) : "w"(a), "w"(b));
  return acc;
#endif
}
struct SdotLanes {
  static int32x4_t dot16(int8x16_t a, int8x16_t b) { return sdot(vdupq_n_s32(0), a, b); }
  static int32x4_t dot32(int8x16_t a0, int8x16_t a1, int8x16_t b0, int8x16_t b1) {
    return sdot(sdot(vdupq_n_s32(0), a0, b0), a1, b1);
  }
};

// ---- Register tiles ----
//
// As in kernels_avx2.cpp: each kernel is one template K::run<R, T> for R rows x T tokens with its
// own accumulators per output, whose operations never depend on R, T or the output's place in the
// tile; its 1x1 instance is the dot kernel.

// ---- f32, bf16 weights against f32 activations; f16 weights against f16 activations ----

struct LoadF32 {
  static constexpr int kElementBytes = 4;
  static float32x4_t load(const uint8_t* row, int i) { return vld1q_f32(reinterpret_cast<const float*>(row) + i); }
  static float at(const uint8_t* row, int i) { return reinterpret_cast<const float*>(row)[i]; }
};
struct LoadF16 {
  static constexpr int kElementBytes = 2;
  static float32x4_t load(const uint8_t* row, int i) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const uint16_t*>(row) + i)));
  }
  static float at(const uint8_t* row, int i) { return half_to_float(reinterpret_cast<const uint16_t*>(row)[i]); }
};
struct LoadBF16 {
  static constexpr int kElementBytes = 2;
  static float32x4_t load(const uint8_t* row, int i) {
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(reinterpret_cast<const uint16_t*>(row) + i), 16));
  }
  static float at(const uint8_t* row, int i) { return bf16_to_fp32(reinterpret_cast<const uint16_t*>(row)[i]); }
};

// L loads the weights, A the activations (LoadF32, or LoadF16 for f16 weights: their dot type).
template <class L, class A = LoadF32>
struct FloatTiles {
  // Each output has kAcc accumulators, step i of 4 elements going to accumulator i % kAcc, then
  // (a0 + a1) + (a2 + a3), the horizontal sum and a scalar FMA tail (as in AVX2, 4 lanes wide).
  // Tiles of 1 row x 4 tokens: 16 accumulators + 4 activations + 1 weight vector of 32 registers.
  static constexpr int kAcc = 4;
  static constexpr int kRows = 1, kTokens = 4, kDecodeRows = 1;
  static constexpr bool kTokensOuter = true;
  template <int R, int T>
  static void run(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int n, float* y, size_t ldy) {
    float32x4_t acc[R][T][kAcc];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t)
        for (int a = 0; a < kAcc; ++a) acc[r][t][a] = vdupq_n_f32(0.f);
    const auto xt = [&](int t) { return x + static_cast<size_t>(t) * xs; };
    const uint8_t* ahead = w + tiles::prefetch_distance(static_cast<size_t>(R) * ws);
    int i = 0;
    for (; i + 4 * kAcc <= n; i += 4 * kAcc) {
      prefetch_ahead<4 * kAcc * R * L::kElementBytes>(ahead, i / (4 * kAcc));
      for (int a = 0; a < kAcc; ++a) {
        float32x4_t xv[T];
        for (int t = 0; t < T; ++t) xv[t] = A::load(xt(t), i + 4 * a);
        for (int r = 0; r < R; ++r) {
          const float32x4_t wv = L::load(w + static_cast<size_t>(r) * ws, i + 4 * a);
          for (int t = 0; t < T; ++t) acc[r][t][a] = vfmaq_f32(acc[r][t][a], wv, xv[t]);
        }
      }
    }
    for (int a = 0; i + 4 <= n; i += 4, ++a) {  // fewer than 4 * kAcc left: one step each
      float32x4_t xv[T];
      for (int t = 0; t < T; ++t) xv[t] = A::load(xt(t), i);
      for (int r = 0; r < R; ++r) {
        const float32x4_t wv = L::load(w + static_cast<size_t>(r) * ws, i);
        for (int t = 0; t < T; ++t) acc[r][t][a] = vfmaq_f32(acc[r][t][a], wv, xv[t]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) {
        const float32x4_t sum = vaddq_f32(vaddq_f32(acc[r][t][0], acc[r][t][1]), vaddq_f32(acc[r][t][2], acc[r][t][3]));
        float s = vaddvq_f32(sum);
        for (int j = i; j < n; ++j) s = std::fma(L::at(w + static_cast<size_t>(r) * ws, j), A::at(xt(t), j), s);
        y[static_cast<size_t>(t) * ldy + static_cast<size_t>(r)] = s;
      }
  }
};

// ---- Q8_0, Q4_0, Q5_0, MXFP4, IQ4_NL weights against Q8_0 activations ----
//
// Per block and output: the weights as 32 signed bytes (NEON multiplies signed by signed, so the
// offsets of Q4_0 and Q5_0 come off the bytes, unlike AVX2's unsigned maddubs; MXFP4's and
// IQ4_NL's come from their tables by a byte lookup), the 4 integer lanes of their dot product
// with the activations, then acc += float(lanes) * (d_w * d_x).

struct DecodeQ8_0 {
  using Block = BlockQ8_0;
  static void values(const Block& b, int8x16_t& v0, int8x16_t& v1) {
    v0 = vld1q_s8(b.qs);
    v1 = vld1q_s8(b.qs + 16);
  }
  static float scale(const Block& b) { return half_to_float(b.d); }
};
struct DecodeQ4_0 {
  using Block = BlockQ4_0;
  static void values(const Block& b, int8x16_t& v0, int8x16_t& v1) {
    // Low nibbles are elements 0..15, high nibbles 16..31.
    const uint8x16_t packed = vld1q_u8(b.qs);
    const int8x16_t eight = vdupq_n_s8(8);
    v0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(packed, vdupq_n_u8(0x0f))), eight);
    v1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(packed, 4)), eight);
  }
  static float scale(const Block& b) { return half_to_float(b.d); }
};
struct DecodeQ5_0 {
  using Block = BlockQ5_0;
  static void values(const Block& b, int8x16_t& v0, int8x16_t& v1) {
    // Byte j of a spread qh is byte j / 8 of qh (a table lookup); bit j % 8 of it is element j's
    // fifth bit.
    static constexpr uint8_t kLow[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    static constexpr uint8_t kHigh[16] = {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
    static constexpr uint8_t kBit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    uint32_t qh;
    std::memcpy(&qh, b.qh, 4);
    const uint8x16_t qh_bytes = vreinterpretq_u8_u32(vdupq_n_u32(qh));
    const uint8x16_t bit = vld1q_u8(kBit), sixteen = vdupq_n_u8(16);
    const uint8x16_t h0 = vandq_u8(vtstq_u8(vqtbl1q_u8(qh_bytes, vld1q_u8(kLow)), bit), sixteen);
    const uint8x16_t h1 = vandq_u8(vtstq_u8(vqtbl1q_u8(qh_bytes, vld1q_u8(kHigh)), bit), sixteen);
    const uint8x16_t packed = vld1q_u8(b.qs);
    const int8x16_t offset = vdupq_n_s8(16);
    v0 = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vandq_u8(packed, vdupq_n_u8(0x0f)), h0)), offset);
    v1 = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(packed, 4), h1)), offset);
  }
  static float scale(const Block& b) { return half_to_float(b.d); }
};

// 32 nibbles in Q4_0's order (low nibbles are elements 0..15, high 16..31) looked up in a table
// of 16 signed bytes.
inline void table_values(const uint8_t* qs, const int8_t (&table)[16], int8x16_t& v0, int8x16_t& v1) {
  const uint8x16_t packed = vld1q_u8(qs);
  const int8x16_t t = vld1q_s8(table);
  v0 = vqtbl1q_s8(t, vandq_u8(packed, vdupq_n_u8(0x0f)));
  v1 = vqtbl1q_s8(t, vshrq_n_u8(packed, 4));
}
struct DecodeMXFP4 {
  using Block = BlockMXFP4;
  static void values(const Block& b, int8x16_t& v0, int8x16_t& v1) { table_values(b.qs, kMxfp4Values, v0, v1); }
  static float scale(const Block& b) { return mxfp4_scale(b.e); }
};
struct DecodeIQ4_NL {
  using Block = BlockIQ4_NL;
  static void values(const Block& b, int8x16_t& v0, int8x16_t& v1) { table_values(b.qs, kIq4Values, v0, v1); }
  static float scale(const Block& b) { return half_to_float(b.d); }
};

template <class D, class Lanes>
struct Q8Tiles {
  // 4 rows x 2 tokens: 8 accumulators, 4 activation and 2 weight vectors. Decode takes 4 rows
  // too: 4 independent chains, as in-order cores (Cortex-A53/A55) do not overlap one alone.
  static constexpr int kRows = 4, kTokens = 2, kDecodeRows = 4;
  static constexpr bool kTokensOuter = false;
  template <int R, int T>
  static void run(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int n, float* y, size_t ldy) {
    using Block = typename D::Block;
    float32x4_t acc[R][T];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) acc[r][t] = vdupq_n_f32(0.f);
    const int nb = n / kQ8_0Block;
    const uint8_t* ahead = w + tiles::prefetch_distance(static_cast<size_t>(R) * ws);
    for (int b = 0; b < nb; ++b) {
      prefetch_ahead<R * sizeof(Block)>(ahead, b);
      int8x16_t x0[T], x1[T];
      float dx[T];
      for (int t = 0; t < T; ++t) {
        const BlockQ8_0& xb = reinterpret_cast<const BlockQ8_0*>(x + static_cast<size_t>(t) * xs)[b];
        x0[t] = vld1q_s8(xb.qs);
        x1[t] = vld1q_s8(xb.qs + 16);
        dx[t] = half_to_float(xb.d);
      }
      for (int r = 0; r < R; ++r) {
        const Block& wb = reinterpret_cast<const Block*>(w + static_cast<size_t>(r) * ws)[b];
        int8x16_t w0, w1;
        D::values(wb, w0, w1);
        const float dw = D::scale(wb);
        for (int t = 0; t < T; ++t) {
          const int32x4_t lanes = Lanes::dot32(w0, w1, x0[t], x1[t]);
          acc[r][t] = vfmaq_f32(acc[r][t], vcvtq_f32_s32(lanes), vdupq_n_f32(dw * dx[t]));
        }
      }
    }
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) y[static_cast<size_t>(t) * ldy + static_cast<size_t>(r)] = vaddvq_f32(acc[r][t]);
  }
};

// 32 int32 -> 32 int8, saturating (the values are already within -127..127).
inline void narrow_store(const int32x4_t q[8], int8_t* out) {
  const int16x8_t a = vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]));
  const int16x8_t b = vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]));
  const int16x8_t c = vcombine_s16(vqmovn_s32(q[4]), vqmovn_s32(q[5]));
  const int16x8_t d = vcombine_s16(vqmovn_s32(q[6]), vqmovn_s32(q[7]));
  vst1q_s8(out, vcombine_s8(vqmovn_s16(a), vqmovn_s16(b)));
  vst1q_s8(out + 16, vcombine_s8(vqmovn_s16(c), vqmovn_s16(d)));
}

// Bit-identical to quantize_q8_0_scalar: the same float products, rounded to nearest even
// (FCVTNS), the same scale.
void quantize_q8_0(const float* x, BlockQ8_0* y, int n) {
  for (int b = 0; b < n / kQ8_0Block; ++b) {
    const float* xb = x + b * kQ8_0Block;
    float32x4_t v[8];
    for (int k = 0; k < 8; ++k) v[k] = vld1q_f32(xb + 4 * k);
    float32x4_t m = vabsq_f32(v[0]);
    for (int k = 1; k < 8; ++k) m = vmaxq_f32(m, vabsq_f32(v[k]));
    const float amax = vmaxvq_f32(m);
    y[b].d = fp32_to_fp16(amax / 127.f);
    const float id = amax != 0.f ? 127.f / amax : 0.f;
    int32x4_t q[8];
    for (int k = 0; k < 8; ++k) q[k] = vcvtnq_s32_f32(vmulq_n_f32(v[k], id));
    narrow_store(q, y[b].qs);
  }
}

// Bit-identical to quantize_q8_k_scalar: the same float products, rounded to nearest even.
void quantize_q8_k(const float* x, BlockQ8_K* y, int n) {
  for (int i = 0; i < n / kQK; ++i, x += kQK) {
    float32x4_t m = vdupq_n_f32(0.f);
    for (int j = 0; j < kQK; j += 4) m = vmaxq_f32(m, vabsq_f32(vld1q_f32(x + j)));
    const float amax = vmaxvq_f32(m);
    if (amax == 0.f) {
      std::memset(&y[i], 0, sizeof(BlockQ8_K));
      continue;
    }
    // The sign comes from the first element of largest magnitude, as in the scalar scan.
    int first = 0;
    while (std::fabs(x[first]) != amax) ++first;
    const float iscale = -127.f / x[first];
    const int32x4_t max127 = vdupq_n_s32(127);
    for (int j = 0; j < kQK; j += 32) {
      int32x4_t q[8];
      for (int k = 0; k < 8; ++k) q[k] = vminq_s32(vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + j + 4 * k), iscale)), max127);
      narrow_store(q, y[i].qs + j);
      y[i].bsums[j / 16] = vaddlvq_s8(vld1q_s8(y[i].qs + j));
      y[i].bsums[j / 16 + 1] = vaddlvq_s8(vld1q_s8(y[i].qs + j + 16));
    }
    y[i].d = 1.f / iscale;
  }
}

// ---- K-quants against Q8_K activations ----
//
// Per super-block and output, the integer sum of scale * (q . x) over sub-blocks in 4 int32
// lanes (exact: at most 8 * 63 * 32 * 31 * 128 in magnitude), then acc += float(lanes) * (d *
// d_x); the mins of Q4_K/Q5_K leave through the activations' bsums, acc -= float(m . bsums) *
// (dmin * d_x). Q6_K's values are made signed (q - 32) on the bytes, so no offset term. A row's
// values are unpacked once per super-block for all tokens of the tile.

// The 8 scales (bytes 0..7) and 8 mins (bytes 8..15) of a Q4_K/Q5_K super-block, as
// unpack_scale_min gives them, with 32-bit operations instead of a loop.
inline void scales_and_mins(const uint8_t* packed, uint8_t out[16]) {
  constexpr uint32_t kLow6 = 0x3f3f3f3f, kLow4 = 0x0f0f0f0f, kLow2 = 0x03030303;
  uint32_t u[4];
  std::memcpy(u, packed, 12);
  u[3] = ((u[2] >> 4) & kLow4) | (((u[1] >> 6) & kLow2) << 4);
  const uint32_t mins_low = u[1] & kLow6;
  u[1] = (u[2] & kLow4) | (((u[0] >> 6) & kLow2) << 4);
  u[2] = mins_low;
  u[0] &= kLow6;
  std::memcpy(out, u, 16);
}

// Q4_K and Q5_K: 8 sub-blocks of 32 unsigned values (0..15, 0..31), a 6-bit scale and min each.
template <bool kFifthBit, class Lanes>
struct ScaleMinTiles {
  static constexpr int kRows = 4, kTokens = 2, kDecodeRows = 1;
  static constexpr bool kTokensOuter = false;
  using Block = std::conditional_t<kFifthBit, BlockQ5_K, BlockQ4_K>;
  template <int R, int T>
  static void run(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int n, float* y, size_t ldy) {
    const uint8x16_t low4 = vdupq_n_u8(0x0f);
    float32x4_t acc[R][T];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) acc[r][t] = vdupq_n_f32(0.f);
    const int nb = n / kQK;
    const uint8_t* ahead = w + tiles::prefetch_distance(static_cast<size_t>(R) * ws);
    for (int b = 0; b < nb; ++b) {
      prefetch_ahead<R * sizeof(Block)>(ahead, b);
      for (int r = 0; r < R; ++r) {
        const Block& wb = reinterpret_cast<const Block*>(w + static_cast<size_t>(r) * ws)[b];
        uint8_t sm[16];
        scales_and_mins(wb.scales, sm);
        // Each min twice, to meet the bsums of the two halves (16 each) of its sub-block.
        const int16x8_t m16 = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(sm + 8)));
        const int16x8_t mins0 = vzip1q_s16(m16, m16), mins1 = vzip2q_s16(m16, m16);
        // Sub-block 2c is the low nibbles of qs[32c..32c+31], 2c + 1 the high ones.
        int8x16_t q[8][2];
        for (int c = 0; c < 4; ++c)
          for (int k = 0; k < 2; ++k) {
            const uint8x16_t packed = vld1q_u8(wb.qs + 32 * c + 16 * k);
            q[2 * c][k] = vreinterpretq_s8_u8(vandq_u8(packed, low4));
            q[2 * c + 1][k] = vreinterpretq_s8_u8(vshrq_n_u8(packed, 4));
          }
        if constexpr (kFifthBit) {
          // Bit j of qh[l] is the fifth bit of element l of sub-block j.
          const uint8x16_t one = vdupq_n_u8(1);
          for (int k = 0; k < 2; ++k) {
            uint8x16_t qh = vld1q_u8(wb.qh + 16 * k);
            for (int j = 0; j < 8; ++j) {
              q[j][k] = vorrq_s8(q[j][k], vreinterpretq_s8_u8(vshlq_n_u8(vandq_u8(qh, one), 4)));
              qh = vshrq_n_u8(qh, 1);
            }
          }
        }
        const float d = half_to_float(wb.d), dmin = half_to_float(wb.dmin);
        for (int t = 0; t < T; ++t) {
          const BlockQ8_K& xb = reinterpret_cast<const BlockQ8_K*>(x + static_cast<size_t>(t) * xs)[b];
          int32x4_t sumi = vdupq_n_s32(0);
          for (int j = 0; j < 8; ++j) {
            const int32x4_t lanes = Lanes::dot32(q[j][0], q[j][1], vld1q_s8(xb.qs + 32 * j), vld1q_s8(xb.qs + 32 * j + 16));
            sumi = vmlaq_n_s32(sumi, lanes, sm[j]);
          }
          const int16x8_t bs0 = vld1q_s16(xb.bsums), bs1 = vld1q_s16(xb.bsums + 8);
          int32x4_t summ = vmull_s16(vget_low_s16(bs0), vget_low_s16(mins0));
          summ = vmlal_high_s16(summ, bs0, mins0);
          summ = vmlal_s16(summ, vget_low_s16(bs1), vget_low_s16(mins1));
          summ = vmlal_high_s16(summ, bs1, mins1);
          acc[r][t] = vfmaq_f32(acc[r][t], vcvtq_f32_s32(sumi), vdupq_n_f32(d * xb.d));
          acc[r][t] = vfmsq_f32(acc[r][t], vcvtq_f32_s32(summ), vdupq_n_f32(dmin * xb.d));
        }
      }
    }
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) y[static_cast<size_t>(t) * ldy + static_cast<size_t>(r)] = vaddvq_f32(acc[r][t]);
  }
};

// Q6_K: 16 sub-blocks of 16 values q - 32 (-32..31), a signed 8-bit scale each.
template <class Lanes>
struct Q6KTiles {
  static constexpr int kRows = 4, kTokens = 2, kDecodeRows = 1;
  static constexpr bool kTokensOuter = false;
  template <int R, int T>
  static void run(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int n, float* y, size_t ldy) {
    const uint8x16_t low4 = vdupq_n_u8(0x0f), low2 = vdupq_n_u8(0x03);
    const int8x16_t offset = vdupq_n_s8(32);
    float32x4_t acc[R][T];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) acc[r][t] = vdupq_n_f32(0.f);
    const int nb = n / kQK;
    const uint8_t* ahead = w + tiles::prefetch_distance(static_cast<size_t>(R) * ws);
    for (int b = 0; b < nb; ++b) {
      prefetch_ahead<R * sizeof(BlockQ6_K)>(ahead, b);
      for (int r = 0; r < R; ++r) {
        const BlockQ6_K& wb = reinterpret_cast<const BlockQ6_K*>(w + static_cast<size_t>(r) * ws)[b];
        // Element 128h + 32g + l (l < 32) is sub-block 8h + 2g + l / 16: one vector each.
        int8x16_t q[16];
        for (int h = 0; h < 2; ++h)
          for (int k = 0; k < 2; ++k) {
            const uint8x16_t ql0 = vld1q_u8(wb.ql + 64 * h + 16 * k), ql1 = vld1q_u8(wb.ql + 64 * h + 32 + 16 * k);
            const uint8x16_t qh = vld1q_u8(wb.qh + 32 * h + 16 * k);
            const auto value = [&](uint8x16_t low, uint8x16_t high2) {
              return vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(low, vshlq_n_u8(vandq_u8(high2, low2), 4))), offset);
            };
            q[8 * h + k] = value(vandq_u8(ql0, low4), qh);
            q[8 * h + 2 + k] = value(vandq_u8(ql1, low4), vshrq_n_u8(qh, 2));
            q[8 * h + 4 + k] = value(vshrq_n_u8(ql0, 4), vshrq_n_u8(qh, 4));
            q[8 * h + 6 + k] = value(vshrq_n_u8(ql1, 4), vshrq_n_u8(qh, 6));
          }
        const float d = half_to_float(wb.d);
        for (int t = 0; t < T; ++t) {
          const BlockQ8_K& xb = reinterpret_cast<const BlockQ8_K*>(x + static_cast<size_t>(t) * xs)[b];
          int32x4_t sumi = vdupq_n_s32(0);
          for (int j = 0; j < 16; ++j) sumi = vmlaq_n_s32(sumi, Lanes::dot16(q[j], vld1q_s8(xb.qs + 16 * j)), wb.scales[j]);
          acc[r][t] = vfmaq_f32(acc[r][t], vcvtq_f32_s32(sumi), vdupq_n_f32(d * xb.d));
        }
      }
    }
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) y[static_cast<size_t>(t) * ldy + static_cast<size_t>(r)] = vaddvq_f32(acc[r][t]);
  }
};

// IQ4_XS: 8 sub-blocks of 32 signed table values with a signed 6-bit scale each, against Q8_K:
// per super-block the sub-blocks' lanes times their scales in integers, then acc +=
// float(lanes) * (d * d_x). A row's values are looked up once per super-block for the tile.
template <class Lanes>
struct IQ4XSTiles {
  static constexpr int kRows = 4, kTokens = 2, kDecodeRows = 2;
  static constexpr bool kTokensOuter = false;
  template <int R, int T>
  static void run(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int n, float* y, size_t ldy) {
    float32x4_t acc[R][T];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) acc[r][t] = vdupq_n_f32(0.f);
    const int nb = n / kQK;
    const uint8_t* ahead = w + tiles::prefetch_distance(static_cast<size_t>(R) * ws);
    for (int b = 0; b < nb; ++b) {
      prefetch_ahead<R * sizeof(BlockIQ4_XS)>(ahead, b);
      for (int r = 0; r < R; ++r) {
        const BlockIQ4_XS& wb = reinterpret_cast<const BlockIQ4_XS*>(w + static_cast<size_t>(r) * ws)[b];
        int8x16_t q[8][2];
        int scale[8];
        for (int j = 0; j < 8; ++j) {
          table_values(wb.qs + 16 * j, kIq4Values, q[j][0], q[j][1]);
          scale[j] = iq4_xs_scale(wb, j);
        }
        const float d = half_to_float(wb.d);
        for (int t = 0; t < T; ++t) {
          const BlockQ8_K& xb = reinterpret_cast<const BlockQ8_K*>(x + static_cast<size_t>(t) * xs)[b];
          int32x4_t sumi = vdupq_n_s32(0);
          for (int j = 0; j < 8; ++j) {
            const int32x4_t lanes = Lanes::dot32(q[j][0], q[j][1], vld1q_s8(xb.qs + 32 * j), vld1q_s8(xb.qs + 32 * j + 16));
            sumi = vmlaq_n_s32(sumi, lanes, scale[j]);
          }
          acc[r][t] = vfmaq_f32(acc[r][t], vcvtq_f32_s32(sumi), vdupq_n_f32(d * xb.d));
        }
      }
    }
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) y[static_cast<size_t>(t) * ldy + static_cast<size_t>(r)] = vaddvq_f32(acc[r][t]);
  }
};

// These kernels read the Q8_0 and Q8_K blocks as they are.
size_t no_packing(TensorType, int) { return 0; }
void no_pack(TensorType, const void*, void*, int) {}

void axpy(float a, const float* x, float* y, int n) {
  const float32x4_t va = vdupq_n_f32(a);
  int i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_f32(vld1q_f32(y + i), vld1q_f32(x + i), va));
  for (; i < n; ++i) y[i] = std::fma(a, x[i], y[i]);
}

// Rounded to nearest even: FPCR's default rounding mode, which nothing here changes.
void f32_to_f16(const float* x, uint16_t* y, int n) {
  int i = 0;
  for (; i + 4 <= n; i += 4) vst1_u16(y + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
  for (; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
}

void f16_to_f32(const uint16_t* x, float* y, int n) {
  int i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(x + i))));
  for (; i < n; ++i) y[i] = half_to_float(x[i]);
}

using namespace softmax_exp;

// softmax_exp::exp_nonpositive (softmax_exp.h) on 4 lanes, as the x86 tables compute it.
inline float32x4_t exp_nonpositive(float32x4_t x) {
  x = vmaxq_f32(x, vdupq_n_f32(kMin));
  const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(kLog2e)));
  float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(kLn2Hi));
  r = vfmsq_f32(r, n, vdupq_n_f32(kLn2Lo));
  float32x4_t p = vdupq_n_f32(kPoly[0]);
  for (int i = 1; i < 7; ++i) p = vfmaq_f32(vdupq_n_f32(kPoly[i]), p, r);
  const int32x4_t bits = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
  return vmulq_f32(p, vreinterpretq_f32_s32(bits));
}

double exp_sum(float* s, int n, float max) {
  const float32x4_t m = vdupq_n_f32(max);
  float64x2_t acc[4] = {vdupq_n_f64(0), vdupq_n_f64(0), vdupq_n_f64(0), vdupq_n_f64(0)};
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const float32x4_t e0 = exp_nonpositive(vsubq_f32(vld1q_f32(s + j), m));
    const float32x4_t e1 = exp_nonpositive(vsubq_f32(vld1q_f32(s + j + 4), m));
    vst1q_f32(s + j, e0);
    vst1q_f32(s + j + 4, e1);
    acc[0] = vaddq_f64(acc[0], vcvt_f64_f32(vget_low_f32(e0)));
    acc[1] = vaddq_f64(acc[1], vcvt_high_f64_f32(e0));
    acc[2] = vaddq_f64(acc[2], vcvt_f64_f32(vget_low_f32(e1)));
    acc[3] = vaddq_f64(acc[3], vcvt_high_f64_f32(e1));
  }
  // Lanes l[0..7] are the x86 tables' lanes: the same fixed order of the final sum.
  const double l[8] = {vgetq_lane_f64(acc[0], 0), vgetq_lane_f64(acc[0], 1), vgetq_lane_f64(acc[1], 0), vgetq_lane_f64(acc[1], 1),
                       vgetq_lane_f64(acc[2], 0), vgetq_lane_f64(acc[2], 1), vgetq_lane_f64(acc[3], 0), vgetq_lane_f64(acc[3], 1)};
  double sum = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
  for (; j < n; ++j) {
    s[j] = softmax_exp::exp_nonpositive(s[j] - max);
    sum += s[j];
  }
  return sum;
}

// Heads in pairs, 4 x kVecs columns at a time held in registers across all keys: every element
// gets axpy's fused multiply-adds in axpy's order (its tail elements too, by std::fma).
template <int kVecs>
void weighted_columns(const float* p, size_t p_stride, const float* inv, int n_q, const float* v, size_t v_stride, int n_keys,
                      int n, float* out, int col) {
  int h = 0;
  for (; h + 2 <= n_q; h += 2) {
    float* o0 = out + static_cast<size_t>(h) * static_cast<size_t>(n) + col;
    float* o1 = o0 + n;
    const float* p0 = p + static_cast<size_t>(h) * p_stride;
    const float* p1 = p0 + p_stride;
    float32x4_t a0[kVecs], a1[kVecs];
    for (int k = 0; k < kVecs; ++k) a0[k] = vld1q_f32(o0 + 4 * k), a1[k] = vld1q_f32(o1 + 4 * k);
    for (int j = 0; j < n_keys; ++j) {
      const float* vj = v + static_cast<size_t>(j) * v_stride + col;
      const float32x4_t w0 = vdupq_n_f32(p0[j] * inv[h]), w1 = vdupq_n_f32(p1[j] * inv[h + 1]);
      for (int k = 0; k < kVecs; ++k) {
        const float32x4_t x = vld1q_f32(vj + 4 * k);
        a0[k] = vfmaq_f32(a0[k], x, w0);
        a1[k] = vfmaq_f32(a1[k], x, w1);
      }
    }
    for (int k = 0; k < kVecs; ++k) vst1q_f32(o0 + 4 * k, a0[k]), vst1q_f32(o1 + 4 * k, a1[k]);
  }
  for (; h < n_q; ++h) {
    float* o = out + static_cast<size_t>(h) * static_cast<size_t>(n) + col;
    const float* ph = p + static_cast<size_t>(h) * p_stride;
    float32x4_t a[kVecs];
    for (int k = 0; k < kVecs; ++k) a[k] = vld1q_f32(o + 4 * k);
    for (int j = 0; j < n_keys; ++j) {
      const float* vj = v + static_cast<size_t>(j) * v_stride + col;
      const float32x4_t w = vdupq_n_f32(ph[j] * inv[h]);
      for (int k = 0; k < kVecs; ++k) a[k] = vfmaq_f32(a[k], vld1q_f32(vj + 4 * k), w);
    }
    for (int k = 0; k < kVecs; ++k) vst1q_f32(o + 4 * k, a[k]);
  }
}

void weighted_sum(const float* p, size_t p_stride, const float* inv, int n_q, const float* v, size_t v_stride, int n_keys, int n,
                  float* out) {
  int col = 0;
  for (; col + 16 <= n; col += 16) weighted_columns<4>(p, p_stride, inv, n_q, v, v_stride, n_keys, n, out, col);
  for (; col + 4 <= n; col += 4) weighted_columns<1>(p, p_stride, inv, n_q, v, v_stride, n_keys, n, out, col);
  for (; col < n; ++col)
    softmax_exp::weighted_sum_column(p, p_stride, inv, n_q, v, v_stride, n_keys, n, out, col, [](const float* x) { return *x; });
}

// Attention's scores through the f32 gemm: each equals this table's dot_f32.
void attention_scores(const float* k, size_t k_stride, int n_keys, const float* q, size_t q_stride, int n_q, int n, float* s,
                      size_t s_stride) {
  gemm<FloatTiles<LoadF32>>(k, k_stride * sizeof(float), n_keys, q, q_stride * sizeof(float), n_q, n, s, s_stride);
}

// One table per way of forming integer lanes; everything else is shared.
template <class Lanes>
struct Table {
  static float dot_f32(const float* w, const float* x, int n) { return dot1<FloatTiles<LoadF32>>(w, x, n); }
  static float dot_f16(const uint16_t* w, const uint16_t* x, int n) { return dot1<FloatTiles<LoadF16, LoadF16>>(w, x, n); }
  static float dot_bf16(const uint16_t* w, const float* x, int n) { return dot1<FloatTiles<LoadBF16>>(w, x, n); }
  static float dot_q8_0(const BlockQ8_0* w, const BlockQ8_0* x, int nb) {
    return dot1<Q8Tiles<DecodeQ8_0, Lanes>>(w, x, nb * kQ8_0Block);
  }
  static float dot_q4_0(const BlockQ4_0* w, const BlockQ8_0* x, int nb) {
    return dot1<Q8Tiles<DecodeQ4_0, Lanes>>(w, x, nb * kQ4_0Block);
  }
  static float dot_q5_0(const BlockQ5_0* w, const BlockQ8_0* x, int nb) {
    return dot1<Q8Tiles<DecodeQ5_0, Lanes>>(w, x, nb * kQ5_0Block);
  }
  static float dot_q4_k(const BlockQ4_K* w, const BlockQ8_K* x, int nb) {
    return dot1<ScaleMinTiles<false, Lanes>>(w, x, nb * kQK);
  }
  static float dot_q5_k(const BlockQ5_K* w, const BlockQ8_K* x, int nb) {
    return dot1<ScaleMinTiles<true, Lanes>>(w, x, nb * kQK);
  }
  static float dot_q6_k(const BlockQ6_K* w, const BlockQ8_K* x, int nb) { return dot1<Q6KTiles<Lanes>>(w, x, nb * kQK); }
  static float dot_mxfp4(const BlockMXFP4* w, const BlockQ8_0* x, int nb) {
    return dot1<Q8Tiles<DecodeMXFP4, Lanes>>(w, x, nb * kMxfp4Block);
  }
  static float dot_iq4_nl(const BlockIQ4_NL* w, const BlockQ8_0* x, int nb) {
    return dot1<Q8Tiles<DecodeIQ4_NL, Lanes>>(w, x, nb * kIq4NlBlock);
  }
  static float dot_iq4_xs(const BlockIQ4_XS* w, const BlockQ8_K* x, int nb) { return dot1<IQ4XSTiles<Lanes>>(w, x, nb * kQK); }

  static constexpr KernelTable make(std::string_view name) {
    return KernelTable{.name = name,
                       .dot_f32 = dot_f32,
                       .dot_f16 = dot_f16,
                       .dot_bf16 = dot_bf16,
                       .dot_q8_0 = dot_q8_0,
                       .dot_q4_0 = dot_q4_0,
                       .dot_q5_0 = dot_q5_0,
                       .dot_q4_k = dot_q4_k,
                       .dot_q5_k = dot_q5_k,
                       .dot_q6_k = dot_q6_k,
                       .dot_mxfp4 = dot_mxfp4,
                       .dot_iq4_nl = dot_iq4_nl,
                       .dot_iq4_xs = dot_iq4_xs,
                       .f32_to_f16 = f32_to_f16,
                       .quantize_q8_0 = quantize_q8_0,
                       .quantize_q8_k = quantize_q8_k,
                       .gemm_f32 = gemm<FloatTiles<LoadF32>>,
                       .gemm_f16 = gemm<FloatTiles<LoadF16, LoadF16>>,
                       .gemm_bf16 = gemm<FloatTiles<LoadBF16>>,
                       .gemm_q8_0 = gemm<Q8Tiles<DecodeQ8_0, Lanes>>,
                       .gemm_q4_0 = gemm<Q8Tiles<DecodeQ4_0, Lanes>>,
                       .gemm_q5_0 = gemm<Q8Tiles<DecodeQ5_0, Lanes>>,
                       .gemm_q4_k = gemm<ScaleMinTiles<false, Lanes>>,
                       .gemm_q5_k = gemm<ScaleMinTiles<true, Lanes>>,
                       .gemm_q6_k = gemm<Q6KTiles<Lanes>>,
                       .gemm_mxfp4 = gemm<Q8Tiles<DecodeMXFP4, Lanes>>,
                       .gemm_iq4_nl = gemm<Q8Tiles<DecodeIQ4_NL, Lanes>>,
                       .gemm_iq4_xs = gemm<IQ4XSTiles<Lanes>>,
                       .packed_bytes = no_packing,
                       .pack = no_pack,
                       .attention_scores = attention_scores,
                       .axpy = axpy,
                       .weighted_sum = weighted_sum,
                       .exp_sum = exp_sum,
                       .f16_to_f32 = f16_to_f32};
  }
};

}  // namespace

const KernelTable& neon_kernels() {
  static constexpr KernelTable table = Table<MullLanes>::make("neon");
  return table;
}

const KernelTable& neon_dotprod_kernels() {
  static constexpr KernelTable table = Table<SdotLanes>::make("neon-dotprod");
  return table;
}

}  // namespace hearth::runtime

#endif
