#include "runtime/kernels/lut_quants.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/kernels/half.h"

namespace hearth::runtime {

namespace {

// Nibble j of a group of 32 (j < 16: low nibbles, else high).
inline int nibble(const uint8_t* qs, int j) { return j < 16 ? qs[j] & 0x0f : qs[j - 16] >> 4; }

// The exact integer dot product of a group of 32 table values with 32 activations.
inline int32_t table_dot32(const int8_t* table, const uint8_t* qs, const int8_t* x) {
  int32_t s = 0;
  for (int j = 0; j < 16; ++j) s += table[qs[j] & 0x0f] * x[j] + table[qs[j] >> 4] * x[j + 16];
  return s;
}

// The index of the nearest value of the ascending table to v (the upper one on a tie, as
// `v - lower < upper - v` decides it). Without branches: it counts the neighbouring pairs whose
// upper value is at least as near. The quantizers call it 16 times per weight; a binary search's
// unpredictable branches made mkmodel's IQ4_XS take 330 s a GB.
int nearest_index(const int8_t* table, float v) {
  int index = 0;
  for (int k = 0; k < 15; ++k) index += !(v - static_cast<float>(table[k]) < static_cast<float>(table[k + 1]) - v);
  return index;
}

void pack_nibbles(const uint8_t* l, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(l[j] | (l[j + 16] << 4));
}

// The scale of one group of 32 for the IQ4 grid minimising the squared error weighted by x^2,
// searched over 15 candidate scales around the one that maps the extreme to the grid's end (as
// llama.cpp's quantize_row_iq4_nl_impl without an importance matrix). 0 for an all-zero group.
float iq4_group_scale(const float* x) {
  constexpr int kTries = 7;
  float amax = 0.f, max = 0.f;
  for (int j = 0; j < 32; ++j)
    if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), max = x[j];
  if (amax < 1e-15f) return 0.f;
  const auto fit = [&](float id, float& sumqx, float& sumq2) {
    // nearest_index for the whole group, one table pair at a time: the compiler makes the inner
    // loop vector compares.
    float v[32];
    int index[32] = {};
    for (int j = 0; j < 32; ++j) v[j] = id * x[j];
    for (int k = 0; k < 15; ++k) {
      const float lower = kIq4Values[k], upper = kIq4Values[k + 1];
      for (int j = 0; j < 32; ++j) index[j] += !(v[j] - lower < upper - v[j]);
    }
    sumqx = sumq2 = 0.f;
    for (int j = 0; j < 32; ++j) {
      const float q = kIq4Values[index[j]];
      const float w = x[j] * x[j];
      sumqx += w * q * x[j];
      sumq2 += w * q * q;
    }
  };
  float sumqx, sumq2;
  fit(1.f / (-max / kIq4Values[0]), sumqx, sumq2);
  float d = sumq2 > 0.f ? sumqx / sumq2 : 0.f;
  float best = d * sumqx;
  for (int t = -kTries; t <= kTries; ++t) {
    fit((static_cast<float>(t) + kIq4Values[0]) / max, sumqx, sumq2);
    if (sumq2 > 0.f && sumqx * sumqx > best * sumq2) {
      d = sumqx / sumq2;
      best = d * sumqx;
    }
  }
  return d;
}

void grid_indices(const float* x, float id, uint8_t* l) {
  for (int j = 0; j < 32; ++j) l[j] = static_cast<uint8_t>(nearest_index(kIq4Values, id * x[j]));
}

}  // namespace

void dequantize_mxfp4(const BlockMXFP4* b, float* out, int64_t n) {
  for (int64_t blk = 0; blk < n / kMxfp4Block; ++blk) {
    const float d = mxfp4_scale(b[blk].e);
    for (int j = 0; j < kMxfp4Block; ++j) out[blk * kMxfp4Block + j] = d * kMxfp4Values[nibble(b[blk].qs, j)];
  }
}

void dequantize_iq4_nl(const BlockIQ4_NL* b, float* out, int64_t n) {
  for (int64_t blk = 0; blk < n / kIq4NlBlock; ++blk) {
    const float d = fp16_to_fp32(b[blk].d);
    for (int j = 0; j < kIq4NlBlock; ++j) out[blk * kIq4NlBlock + j] = d * kIq4Values[nibble(b[blk].qs, j)];
  }
}

void dequantize_iq4_xs(const BlockIQ4_XS* b, float* out, int64_t n) {
  for (int64_t blk = 0; blk < n / kQK; ++blk) {
    const float d = fp16_to_fp32(b[blk].d);
    for (int g = 0; g < 8; ++g) {
      const float dg = d * static_cast<float>(iq4_xs_scale(b[blk], g));
      for (int j = 0; j < 32; ++j) out[blk * kQK + 32 * g + j] = dg * kIq4Values[nibble(b[blk].qs + 16 * g, j)];
    }
  }
}

void quantize_mxfp4(const float* x, BlockMXFP4* y, int64_t n) {
  for (int64_t blk = 0; blk < n / kMxfp4Block; ++blk) {
    const float* xb = x + blk * kMxfp4Block;
    float amax = 0.f;
    for (int j = 0; j < kMxfp4Block; ++j) amax = std::max(amax, std::fabs(xb[j]));
    // The exponent that puts the largest magnitude in [4, 8) times the scale, where the table's
    // top values (8, 12) are.
    const uint8_t e = amax > 0.f ? static_cast<uint8_t>(std::floor(std::log2(amax)) - 2 + 127) : 0;
    const float d = mxfp4_scale(e);
    y[blk].e = e;
    uint8_t l[kMxfp4Block];
    for (int j = 0; j < kMxfp4Block; ++j) {
      // The first value of least error (the table is not sorted: +0 wins over -0).
      int best = 0;
      float best_err = std::fabs(kMxfp4Values[0] * d - xb[j]);
      for (int i = 1; i < 16; ++i) {
        const float err = std::fabs(kMxfp4Values[i] * d - xb[j]);
        if (err < best_err) best = i, best_err = err;
      }
      l[j] = static_cast<uint8_t>(best);
    }
    pack_nibbles(l, y[blk].qs);
  }
}

void quantize_iq4_nl(const float* x, BlockIQ4_NL* y, int64_t n) {
  for (int64_t blk = 0; blk < n / kIq4NlBlock; ++blk) {
    const float* xb = x + blk * kIq4NlBlock;
    const float d = iq4_group_scale(xb);
    y[blk].d = fp32_to_fp16(d);
    uint8_t l[32];
    grid_indices(xb, d != 0.f ? 1.f / d : 0.f, l);
    pack_nibbles(l, y[blk].qs);
  }
}

void quantize_iq4_xs(const float* x, BlockIQ4_XS* y, int64_t n) {
  for (int64_t blk = 0; blk < n / kQK; ++blk) {
    const float* xb = x + blk * kQK;
    float scales[8], max_scale = 0.f, amax_scale = 0.f;
    for (int g = 0; g < 8; ++g) {
      scales[g] = iq4_group_scale(xb + 32 * g);
      if (std::fabs(scales[g]) > amax_scale) amax_scale = std::fabs(scales[g]), max_scale = scales[g];
    }
    // The super-block scale maps the largest group scale to -32, the end of the 6-bit range.
    const float d = -max_scale / 32.f;
    BlockIQ4_XS& b = y[blk];
    b.d = fp32_to_fp16(d);
    b.scales_h = 0;
    std::memset(b.scales_l, 0, sizeof b.scales_l);
    const float id = d != 0.f ? 1.f / d : 0.f;
    for (int g = 0; g < 8; ++g) {
      const int ls = std::clamp(static_cast<int>(std::nearbyint(id * scales[g])), -32, 31);
      const float dl = d * static_cast<float>(ls);
      uint8_t l[32];
      grid_indices(xb + 32 * g, dl != 0.f ? 1.f / dl : 0.f, l);
      pack_nibbles(l, b.qs + 16 * g);
      const int biased = ls + 32;
      b.scales_l[g / 2] = static_cast<uint8_t>(b.scales_l[g / 2] | ((biased & 0x0f) << (4 * (g % 2))));
      b.scales_h = static_cast<uint16_t>(b.scales_h | ((biased >> 4) << (2 * g)));
    }
  }
}

float dot_mxfp4_scalar(const BlockMXFP4* w, const BlockQ8_0* x, int n_blocks) {
  float s = 0.f;
  for (int b = 0; b < n_blocks; ++b)
    s += static_cast<float>(table_dot32(kMxfp4Values, w[b].qs, x[b].qs)) * (mxfp4_scale(w[b].e) * fp16_to_fp32(x[b].d));
  return s;
}

float dot_iq4_nl_scalar(const BlockIQ4_NL* w, const BlockQ8_0* x, int n_blocks) {
  float s = 0.f;
  for (int b = 0; b < n_blocks; ++b)
    s += static_cast<float>(table_dot32(kIq4Values, w[b].qs, x[b].qs)) * (fp16_to_fp32(w[b].d) * fp16_to_fp32(x[b].d));
  return s;
}

float dot_iq4_xs_scalar(const BlockIQ4_XS* w, const BlockQ8_K* x, int n_blocks) {
  float s = 0.f;
  for (int b = 0; b < n_blocks; ++b) {
    int32_t sumi = 0;
    for (int g = 0; g < 8; ++g) sumi += iq4_xs_scale(w[b], g) * table_dot32(kIq4Values, w[b].qs + 16 * g, x[b].qs + 32 * g);
    s += static_cast<float>(sumi) * (fp16_to_fp32(w[b].d) * x[b].d);
  }
  return s;
}

}  // namespace hearth::runtime
