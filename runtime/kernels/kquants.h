// K-quants (Q4_K, Q5_K, Q6_K) and their activation type Q8_K: unpacking, dequantization, a simple
// quantizer for the model writer, and the scalar reference kernels of the KernelTable.
//
// Block layouts are in tensor_type.h. As in llama.cpp, activations are quantized once per token
// to Q8_K (256 int8 + one float scale + sums of each 16), and a weight row is dotted with them
// super-block by super-block in integers; the weights' mins (Q4_K, Q5_K) and offset of 32 (Q6_K)
// are applied through the Q8_K block sums instead of per element.
#pragma once

#include <cstdint>

#include "runtime/format/tensor_type.h"

namespace hearth::runtime {

// The 6-bit scale and min of sub-block j (0..7) from the packed scales[12] of Q4_K/Q5_K:
// j < 4: low 6 bits of bytes j and j + 4; j >= 4: a nibble of byte j + 4 plus the top two bits
// of bytes j - 4 (scale) and j (min).
inline void unpack_scale_min(const uint8_t* s, int j, uint8_t& scale, uint8_t& min) {
  if (j < 4) {
    scale = s[j] & 63;
    min = s[j + 4] & 63;
  } else {
    scale = static_cast<uint8_t>((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4));
    min = static_cast<uint8_t>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}
// The inverse: packs 8 six-bit scales and mins into scales[12].
void pack_scale_min(const uint8_t scale[8], const uint8_t min[8], uint8_t s[12]);

// Element values of one block before scaling: Q4_K 0..15, Q5_K 0..31, Q6_K -32..31.
void unpack_q4_k(const BlockQ4_K& b, uint8_t q[kQK]);
void unpack_q5_k(const BlockQ5_K& b, uint8_t q[kQK]);
void unpack_q6_k(const BlockQ6_K& b, int8_t q[kQK]);

// n elements (a multiple of 256) <-> blocks.
void dequantize_q4_k(const BlockQ4_K* b, float* out, int64_t n);
void dequantize_q5_k(const BlockQ5_K* b, float* out, int64_t n);
void dequantize_q6_k(const BlockQ6_K* b, float* out, int64_t n);
void dequantize_q8_k(const BlockQ8_K* b, float* out, int64_t n);
// A simple, correct quantizer for the model writer (min/max per sub-block, not llama.cpp's
// error-minimising search): every element lands within about one quantization step.
void quantize_q4_k(const float* x, BlockQ4_K* y, int64_t n);
void quantize_q5_k(const float* x, BlockQ5_K* y, int64_t n);
void quantize_q6_k(const float* x, BlockQ6_K* y, int64_t n);

// Scalar reference kernels (the "scalar" KernelTable).
// Activations: the value of largest magnitude maps to -127 (so its sign decides d's), values are
// rounded to nearest even, as llama.cpp's quantize_row_q8_K.
void quantize_q8_k_scalar(const float* x, BlockQ8_K* y, int n);
float dot_q4_k_scalar(const BlockQ4_K* w, const BlockQ8_K* x, int n_blocks);
float dot_q5_k_scalar(const BlockQ5_K* w, const BlockQ8_K* x, int n_blocks);
float dot_q6_k_scalar(const BlockQ6_K* w, const BlockQ8_K* x, int n_blocks);

}  // namespace hearth::runtime
