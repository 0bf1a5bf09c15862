#include "runtime/kernels/kquants.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/kernels/half.h"

namespace hearth::runtime {

namespace {

int nearest(float v) { return static_cast<int>(std::nearbyint(v)); }

// Per sub-block scale and min for Q4_K/Q5_K (q in 0..n_max): x ~ scale * q - min, min >= 0 as
// llama.cpp stores it. The min is quantized first, then each scale is chosen to cover what is
// left of its sub-block's range (rounded up, so the top value is not clipped).
void quantize_scale_min_block(const float* x, int n_max, uint16_t& d_out, uint16_t& dmin_out, uint8_t packed[12],
                              uint8_t q[kQK]) {
  float lo[8], hi[8], min_needed[8];
  float max_min = 0.f;
  for (int j = 0; j < 8; ++j) {
    lo[j] = 0.f;  // the represented range always includes 0, as llama.cpp's
    hi[j] = -INFINITY;
    for (int l = 0; l < 32; ++l) {
      lo[j] = std::min(lo[j], x[32 * j + l]);
      hi[j] = std::max(hi[j], x[32 * j + l]);
    }
    min_needed[j] = -lo[j];
    max_min = std::max(max_min, min_needed[j]);
  }
  dmin_out = fp32_to_fp16(max_min / 63.f);
  const float dmin = fp16_to_fp32(dmin_out);
  uint8_t sc[8], mn[8];
  float eff_min[8], scale_needed[8], max_scale = 0.f;
  for (int j = 0; j < 8; ++j) {
    mn[j] = dmin > 0.f ? static_cast<uint8_t>(std::clamp(nearest(min_needed[j] / dmin), 0, 63)) : 0;
    eff_min[j] = dmin * mn[j];
    scale_needed[j] = std::max(0.f, (hi[j] + eff_min[j]) / static_cast<float>(n_max));
    max_scale = std::max(max_scale, scale_needed[j]);
  }
  d_out = fp32_to_fp16(max_scale / 63.f);
  const float d = fp16_to_fp32(d_out);
  for (int j = 0; j < 8; ++j) {
    sc[j] = d > 0.f ? static_cast<uint8_t>(std::clamp(static_cast<int>(std::ceil(scale_needed[j] / d)), 0, 63)) : 0;
    const float ds = d * sc[j];
    for (int l = 0; l < 32; ++l)
      q[32 * j + l] = ds > 0.f ? static_cast<uint8_t>(std::clamp(nearest((x[32 * j + l] + eff_min[j]) / ds), 0, n_max)) : 0;
  }
  pack_scale_min(sc, mn, packed);
}

// Sum over sub-blocks j of 32 of sc[j] * dot(q, x) and of m[j] * sum(x), both in integers.
template <typename Block>
float dot_scale_min(const Block& w, const BlockQ8_K& x, const uint8_t q[kQK]) {
  int32_t sumi = 0, summ = 0;
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    unpack_scale_min(w.scales, j, sc, m);
    int32_t dot = 0;
    for (int l = 0; l < 32; ++l) dot += int32_t{q[32 * j + l]} * int32_t{x.qs[32 * j + l]};
    sumi += sc * dot;
    summ += m * (x.bsums[2 * j] + x.bsums[2 * j + 1]);
  }
  return x.d * (fp16_to_fp32(w.d) * static_cast<float>(sumi) - fp16_to_fp32(w.dmin) * static_cast<float>(summ));
}

}  // namespace

void pack_scale_min(const uint8_t scale[8], const uint8_t min[8], uint8_t s[12]) {
  std::memset(s, 0, 12);
  for (int j = 0; j < 4; ++j) {
    s[j] = scale[j] & 63;
    s[j + 4] = min[j] & 63;
  }
  for (int j = 4; j < 8; ++j) {
    s[j + 4] = static_cast<uint8_t>((scale[j] & 0x0f) | ((min[j] & 0x0f) << 4));
    s[j - 4] |= static_cast<uint8_t>((scale[j] >> 4) << 6);
    s[j] |= static_cast<uint8_t>((min[j] >> 4) << 6);
  }
}

void unpack_q4_k(const BlockQ4_K& b, uint8_t q[kQK]) {
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      q[64 * c + l] = b.qs[32 * c + l] & 0x0f;
      q[64 * c + 32 + l] = b.qs[32 * c + l] >> 4;
    }
}

void unpack_q5_k(const BlockQ5_K& b, uint8_t q[kQK]) {
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      q[64 * c + l] = static_cast<uint8_t>((b.qs[32 * c + l] & 0x0f) | (((b.qh[l] >> (2 * c)) & 1) << 4));
      q[64 * c + 32 + l] = static_cast<uint8_t>((b.qs[32 * c + l] >> 4) | (((b.qh[l] >> (2 * c + 1)) & 1) << 4));
    }
}

void unpack_q6_k(const BlockQ6_K& b, int8_t q[kQK]) {
  for (int h = 0; h < 2; ++h) {
    const uint8_t* ql = b.ql + 64 * h;
    const uint8_t* qh = b.qh + 32 * h;
    int8_t* out = q + 128 * h;
    for (int l = 0; l < 32; ++l) {
      out[l] = static_cast<int8_t>(((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32);
      out[l + 32] = static_cast<int8_t>(((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32);
      out[l + 64] = static_cast<int8_t>(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
      out[l + 96] = static_cast<int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
    }
  }
}

namespace {

// Q4_K and Q5_K share their 6-bit scales and mins per 32 values; they differ only in how a block's
// quants unpack.
template <typename Block, void (*Unpack)(const Block&, uint8_t*)>
void dequantize_scale_min(const Block* b, float* out, int64_t n) {
  uint8_t q[kQK];
  for (int64_t i = 0; i < n / kQK; ++i, out += kQK) {
    Unpack(b[i], q);
    const float d = fp16_to_fp32(b[i].d), dmin = fp16_to_fp32(b[i].dmin);
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      unpack_scale_min(b[i].scales, j, sc, m);
      const float ds = d * sc, dm = dmin * m;
      for (int l = 0; l < 32; ++l) out[32 * j + l] = ds * q[32 * j + l] - dm;
    }
  }
}

}  // namespace

void dequantize_q4_k(const BlockQ4_K* b, float* out, int64_t n) { dequantize_scale_min<BlockQ4_K, unpack_q4_k>(b, out, n); }

void dequantize_q5_k(const BlockQ5_K* b, float* out, int64_t n) { dequantize_scale_min<BlockQ5_K, unpack_q5_k>(b, out, n); }

void dequantize_q6_k(const BlockQ6_K* b, float* out, int64_t n) {
  int8_t q[kQK];
  for (int64_t i = 0; i < n / kQK; ++i, out += kQK) {
    unpack_q6_k(b[i], q);
    const float d = fp16_to_fp32(b[i].d);
    for (int j = 0; j < 16; ++j) {
      const float ds = d * b[i].scales[j];
      for (int l = 0; l < 16; ++l) out[16 * j + l] = ds * q[16 * j + l];
    }
  }
}

void dequantize_q8_k(const BlockQ8_K* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i, out += kQK)
    for (int l = 0; l < kQK; ++l) out[l] = b[i].d * b[i].qs[l];
}

void quantize_q4_k(const float* x, BlockQ4_K* y, int64_t n) {
  uint8_t q[kQK];
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    quantize_scale_min_block(x, 15, y[i].d, y[i].dmin, y[i].scales, q);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) y[i].qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
  }
}

void quantize_q5_k(const float* x, BlockQ5_K* y, int64_t n) {
  uint8_t q[kQK];
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    quantize_scale_min_block(x, 31, y[i].d, y[i].dmin, y[i].scales, q);
    std::memset(y[i].qh, 0, sizeof y[i].qh);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) {
        const uint8_t a = q[64 * c + l], b = q[64 * c + 32 + l];
        y[i].qs[32 * c + l] = static_cast<uint8_t>((a & 0x0f) | ((b & 0x0f) << 4));
        y[i].qh[l] |= static_cast<uint8_t>(((a >> 4) << (2 * c)) | ((b >> 4) << (2 * c + 1)));
      }
  }
}

void quantize_q6_k(const float* x, BlockQ6_K* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    // Per sub-block of 16, a signed scale that maps the value of largest magnitude to -32 (the
    // range is -32..31, as Q4_0 maps to -8); then those scales are quantized to int8.
    float sub[16], max_abs = 0.f;
    for (int j = 0; j < 16; ++j) {
      float amax = 0.f, max = 0.f;
      for (int l = 0; l < 16; ++l)
        if (std::fabs(x[16 * j + l]) > amax) amax = std::fabs(x[16 * j + l]), max = x[16 * j + l];
      sub[j] = max / -32.f;
      max_abs = std::max(max_abs, std::fabs(sub[j]));
    }
    y[i].d = fp32_to_fp16(max_abs / 127.f);
    const float d = fp16_to_fp32(y[i].d);
    uint8_t q[kQK];
    for (int j = 0; j < 16; ++j) {
      y[i].scales[j] = d > 0.f ? static_cast<int8_t>(std::clamp(nearest(sub[j] / d), -128, 127)) : 0;
      const float ds = d * y[i].scales[j];
      for (int l = 0; l < 16; ++l)
        q[16 * j + l] = static_cast<uint8_t>((ds != 0.f ? std::clamp(nearest(x[16 * j + l] / ds), -32, 31) : 0) + 32);
    }
    for (int h = 0; h < 2; ++h)
      for (int l = 0; l < 32; ++l) {
        const uint8_t* v = q + 128 * h;
        y[i].ql[64 * h + l] = static_cast<uint8_t>((v[l] & 0x0f) | ((v[l + 64] & 0x0f) << 4));
        y[i].ql[64 * h + 32 + l] = static_cast<uint8_t>((v[l + 32] & 0x0f) | ((v[l + 96] & 0x0f) << 4));
        y[i].qh[32 * h + l] =
            static_cast<uint8_t>((v[l] >> 4) | ((v[l + 32] >> 4) << 2) | ((v[l + 64] >> 4) << 4) | ((v[l + 96] >> 4) << 6));
      }
  }
}

void quantize_q8_k_scalar(const float* x, BlockQ8_K* y, int n) {
  for (int i = 0; i < n / kQK; ++i, x += kQK) {
    float amax = 0.f, max = 0.f;
    for (int j = 0; j < kQK; ++j)
      if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), max = x[j];
    if (amax == 0.f) {
      std::memset(&y[i], 0, sizeof(BlockQ8_K));
      continue;
    }
    const float iscale = -127.f / max;
    for (int j = 0; j < kQK; ++j) y[i].qs[j] = static_cast<int8_t>(std::min(127, nearest(iscale * x[j])));
    for (int g = 0; g < kQK / 16; ++g) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += y[i].qs[16 * g + l];
      y[i].bsums[g] = static_cast<int16_t>(sum);
    }
    y[i].d = 1.f / iscale;
  }
}

namespace {

// Q4_K and Q5_K differ only in how a block's quants unpack (as in dequantize_scale_min).
template <typename Block, void (*Unpack)(const Block&, uint8_t*)>
float dot_scale_min_blocks(const Block* w, const BlockQ8_K* x, int n_blocks) {
  uint8_t q[kQK];
  float s = 0.f;
  for (int b = 0; b < n_blocks; ++b) {
    Unpack(w[b], q);
    s += dot_scale_min(w[b], x[b], q);
  }
  return s;
}

}  // namespace

float dot_q4_k_scalar(const BlockQ4_K* w, const BlockQ8_K* x, int n_blocks) {
  return dot_scale_min_blocks<BlockQ4_K, unpack_q4_k>(w, x, n_blocks);
}

float dot_q5_k_scalar(const BlockQ5_K* w, const BlockQ8_K* x, int n_blocks) {
  return dot_scale_min_blocks<BlockQ5_K, unpack_q5_k>(w, x, n_blocks);
}

float dot_q6_k_scalar(const BlockQ6_K* w, const BlockQ8_K* x, int n_blocks) {
  int8_t q[kQK];
  float s = 0.f;
  for (int b = 0; b < n_blocks; ++b) {
    unpack_q6_k(w[b], q);
    int32_t sumi = 0;
    for (int j = 0; j < 16; ++j) {
      int32_t dot = 0;
      for (int l = 0; l < 16; ++l) dot += int32_t{q[16 * j + l]} * int32_t{x[b].qs[16 * j + l]};
      sumi += w[b].scales[j] * dot;
    }
    s += fp16_to_fp32(w[b].d) * x[b].d * static_cast<float>(sumi);
  }
  return s;
}

}  // namespace hearth::runtime
