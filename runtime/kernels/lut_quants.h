// The 4-bit table types (MXFP4, IQ4_NL, IQ4_XS): their value tables and scales, dequantization,
// llama.cpp's quantizers for the model writer, and the scalar reference kernels of the KernelTable.
//
// Block layouts are in tensor_type.h. A weight is a scale times one of 16 signed integers picked
// by its nibble, so a block's dot product with Q8_0 activations (MXFP4, IQ4_NL) or a Q8_K
// sub-block (IQ4_XS) is an exact integer sum of table values times activations, scaled once: the
// same integer lanes as Q4_0 and the K-quants, with a table lookup instead of an offset.
#pragma once

#include <cstdint>

#include "runtime/format/tensor_type.h"

namespace hearth::runtime {

// FP4 E2M1 values doubled (0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives, times 2).
inline constexpr int8_t kMxfp4Values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
// IQ4_NL's grid (also IQ4_XS's), ascending.
inline constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// An MXFP4 block's scale, 2^(e - 128): half the E8M0 value, as the table values are doubled.
// Exact for every e (e < 2 gives a subnormal float).
inline float mxfp4_scale(uint8_t e) {
  const uint32_t bits = e < 2 ? 0x00200000u << e : static_cast<uint32_t>(e - 1) << 23;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

// The signed 6-bit scale (-32..31) of sub-block j (0..7) of an IQ4_XS super-block.
inline int iq4_xs_scale(const BlockIQ4_XS& b, int j) {
  const int low = (b.scales_l[j / 2] >> (4 * (j % 2))) & 0x0f;
  const int high = (b.scales_h >> (2 * j)) & 3;
  return (low | (high << 4)) - 32;
}

// n elements (a multiple of the block) <-> blocks.
void dequantize_mxfp4(const BlockMXFP4* b, float* out, int64_t n);
void dequantize_iq4_nl(const BlockIQ4_NL* b, float* out, int64_t n);
void dequantize_iq4_xs(const BlockIQ4_XS* b, float* out, int64_t n);
// llama.cpp's quantizers: MXFP4's (quantize_row_mxfp4_ref) bit for bit; IQ4_NL's and IQ4_XS's
// search of the block scale without an importance matrix (quantize_iq4_nl / quantize_iq4_xs).
void quantize_mxfp4(const float* x, BlockMXFP4* y, int64_t n);
void quantize_iq4_nl(const float* x, BlockIQ4_NL* y, int64_t n);
void quantize_iq4_xs(const float* x, BlockIQ4_XS* y, int64_t n);

// Scalar reference kernels (the "scalar" KernelTable): per block (IQ4_XS: per super-block) the
// exact integer sum, then s += float(sum) * (scale_w * scale_x).
float dot_mxfp4_scalar(const BlockMXFP4* w, const BlockQ8_0* x, int n_blocks);
float dot_iq4_nl_scalar(const BlockIQ4_NL* w, const BlockQ8_0* x, int n_blocks);
float dot_iq4_xs_scalar(const BlockIQ4_XS* w, const BlockQ8_K* x, int n_blocks);

}  // namespace hearth::runtime
