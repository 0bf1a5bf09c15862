// Dot-product kernels behind one seam: a table of function pointers chosen once for this CPU.
//
// Activations are converted once per token to the "dot type" of the weight (Q8_0 for Q8_0, Q4_0
// and Q5_0 weights, Q8_K for the K-quants, as llama.cpp does; f32 otherwise), then every weight row is dotted with them
// block by block in the weights' packed form. The scalar table is the reference every SIMD table
// is tested against; it is also what non-x86 builds use until their own kernels exist.
#pragma once

#include <cstdint>
#include <string_view>

#include "runtime/tensor_type.h"

namespace hearth::runtime {

struct KernelTable {
  std::string_view name;  // "scalar", "avx2"
  float (*dot_f32)(const float* w, const float* x, int n);
  float (*dot_f16)(const uint16_t* w, const float* x, int n);
  float (*dot_bf16)(const uint16_t* w, const float* x, int n);
  float (*dot_q8_0)(const BlockQ8_0* w, const BlockQ8_0* x, int n_blocks);
  float (*dot_q4_0)(const BlockQ4_0* w, const BlockQ8_0* x, int n_blocks);
  float (*dot_q5_0)(const BlockQ5_0* w, const BlockQ8_0* x, int n_blocks);
  float (*dot_q4_k)(const BlockQ4_K* w, const BlockQ8_K* x, int n_blocks);
  float (*dot_q5_k)(const BlockQ5_K* w, const BlockQ8_K* x, int n_blocks);
  float (*dot_q6_k)(const BlockQ6_K* w, const BlockQ8_K* x, int n_blocks);
  // x[n] -> n/32 Q8_0 blocks; rounding is to nearest even in every implementation.
  void (*quantize_q8_0)(const float* x, BlockQ8_0* y, int n);
  // x[n] -> n/256 Q8_K blocks, bit-identical in every implementation.
  void (*quantize_q8_k)(const float* x, BlockQ8_K* y, int n);
};

// The type activations are converted to before a dot product with weights of type `t`: Q8_0,
// Q8_K, or F32 (used as is).
TensorType dot_type(TensorType t);

const KernelTable& scalar_kernels();
// The fastest table this CPU supports (checked at run time).
const KernelTable& best_kernels();

// Dequantizes one row of n elements of any computable type (and of Q8_K) into f32.
void dequantize_row(TensorType type, const void* row, float* out, int64_t n);
// Quantizes n floats into one row of any computable type (used by the model writer). f32, f16,
// bf16, q8_0, q4_0 and q5_0 are bit-compatible with llama.cpp's reference quantizers; the K-quants use
// a simpler quantizer (kquants.h) whose blocks llama.cpp reads the same way.
void quantize_row(TensorType type, const float* x, void* out, int64_t n);

}  // namespace hearth::runtime
