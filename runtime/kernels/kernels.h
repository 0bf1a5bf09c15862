// Dot-product kernels behind one seam: a table of function pointers chosen once for this CPU.
//
// Activations are converted once per token to the "dot type" of the weight (Q8_0 for Q8_0, Q4_0,
// Q5_0, MXFP4 and IQ4_NL weights, Q8_K for the K-quants and IQ4_XS, f16 for f16, as llama.cpp
// does; f32 otherwise), then every weight row is dotted with them
// block by block in the weights' packed form. The scalar table is the reference every SIMD table
// (AVX2, AVX-512 on x86-64; NEON, NEON with the dot-product extension on AArch64) is tested against.
//
// Batch invariance. Each table also has a matrix kernel per weight type (gemm_*), which computes
// many rows against many tokens at once in register tiles, so that a row's weights are loaded
// once for several tokens (prefill) and an activation once for several rows (decode). Every
// output element of a gemm kernel is computed with exactly the operations, in the same order, as
// that table's dot kernel on the same row and token, whatever the number of rows and tokens and
// wherever the element falls in a tile. So a token's result does not depend on the batch it is
// in, which the cluster needs: it batches several sequences' tokens together and must still
// produce bit-identical tokens to a single device. tests/kernels_test.cpp checks it bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "runtime/format/tensor_type.h"
#include "runtime/kernels/interleaved_rows.h"

namespace hearth::runtime {

// y[t * ldy + r] = dot(row r of W, token t of X) for r < n_rows, t < n_tokens. Row r of W starts
// at w + r * w_stride bytes, token t of X (already in the weight's dot type) at x + t * x_stride
// bytes; n is the number of elements per row.
using GemmKernel = void (*)(const void* w, size_t w_stride, int n_rows, const void* x, size_t x_stride, int n_tokens, int n,
                            float* y, size_t ldy);

struct KernelTable {
  std::string_view name;  // "scalar", "avx2", "avx512", "neon", "neon-dotprod"
  float (*dot_f32)(const float* w, const float* x, int n);
  // f16 weights meet f16 activations (rounded to nearest even by f32_to_f16), as llama.cpp's
  // do: half the bytes of f32 activations to load in a prefill tile, and llama.cpp's outputs.
  float (*dot_f16)(const uint16_t* w, const uint16_t* x, int n);
  float (*dot_bf16)(const uint16_t* w, const float* x, int n);
  float (*dot_q8_0)(const BlockQ8_0* w, const BlockQ8_0* x, int n_blocks);
  float (*dot_q4_0)(const BlockQ4_0* w, const BlockQ8_0* x, int n_blocks);
  float (*dot_q5_0)(const BlockQ5_0* w, const BlockQ8_0* x, int n_blocks);
  float (*dot_q4_k)(const BlockQ4_K* w, const BlockQ8_K* x, int n_blocks);
  float (*dot_q5_k)(const BlockQ5_K* w, const BlockQ8_K* x, int n_blocks);
  float (*dot_q6_k)(const BlockQ6_K* w, const BlockQ8_K* x, int n_blocks);
  float (*dot_mxfp4)(const BlockMXFP4* w, const BlockQ8_0* x, int n_blocks);
  float (*dot_iq4_nl)(const BlockIQ4_NL* w, const BlockQ8_0* x, int n_blocks);
  float (*dot_iq4_xs)(const BlockIQ4_XS* w, const BlockQ8_K* x, int n_blocks);
  // x[n] -> n f16 values, rounded to nearest even (F16C's vcvtps2ph) in every implementation.
  void (*f32_to_f16)(const float* x, uint16_t* y, int n);
  // x[n] -> n/32 Q8_0 blocks; rounding is to nearest even in every implementation.
  void (*quantize_q8_0)(const float* x, BlockQ8_0* y, int n);
  // x[n] -> n/256 Q8_K blocks, bit-identical in every implementation.
  void (*quantize_q8_k)(const float* x, BlockQ8_K* y, int n);
  // Matrix kernels, each equal output for output to the dot kernel of its type (see above).
  // For quantized weights they read the activations of a token "packed": the dot type's blocks
  // (Q8_0, Q8_K) as they are, or, where packed_bytes() is not 0, a layout of the table's own
  // made by pack() once per matmul and token and shared by every row (e.g. regrouped bytes with
  // sums and scales precomputed, so that decode can take rows one at a time).
  GemmKernel gemm_f32, gemm_f16, gemm_bf16, gemm_q8_0, gemm_q4_0, gemm_q5_0, gemm_q4_k, gemm_q5_k, gemm_q6_k, gemm_mxfp4,
      gemm_iq4_nl, gemm_iq4_xs;
  // Q4_0 and Q4_K rows interleaved by eights (interleaved_rows.h), null where the table has no
  // kernel for them (then a stage leaves its rows as they are). w points at a group, n_rows is a
  // multiple of 8; outputs are the same bits as gemm_q4_0's and gemm_q4_k's on the rows before
  // interleaving, from the same activations.
  GemmKernel gemm_q4_0_x8, gemm_q4_k_x8;
  // Bytes of one token's packed activations for `weight` and rows of n elements; 0 = the blocks.
  size_t (*packed_bytes)(TensorType weight, int n);
  // One token's dot-type blocks (n elements) -> its packed activations for `weight`.
  void (*pack)(TensorType weight, const void* blocks, void* out, int n);
  // Attention's scores: s[r * s_stride + j] = the dot product of query row r (at q + r * q_stride)
  // and key j (at k + j * k_stride), n elements each, for r < n_q and j < n_keys; strides in
  // floats. Unlike the gemm kernels these need not equal dot_f32: the SIMD x86 tables keep a
  // score's elements in 8 vector lanes (element i in lane i % 8) and add the lanes of several scores
  // at once in one tree, instead of a horizontal sum per score (which cost as much as the
  // products); avx512 carries two keys' 8 lanes in a vector, so avx2 and avx512 give a score the
  // same bits. A score's bits are the same wherever it lies, however many rows and keys come with
  // it (batch invariance).
  void (*attention_scores)(const float* k, size_t k_stride, int n_keys, const float* q, size_t q_stride, int n_q, int n,
                           float* s, size_t s_stride);
  // y[i] += a * x[i] for i < n (attention's weighted sum of values).
  void (*axpy)(float a, const float* x, float* y, int n);
  // Attention's weighted sum of values: for each head h < n_q and each key j < n_keys in order,
  // out[h * n + i] += (p[h * p_stride + j] * inv[h]) * v[j * v_stride + i] for i < n, each term
  // added as axpy adds it. The same bits as those n_q x n_keys axpy calls, without reloading
  // and storing `out` for every key.
  void (*weighted_sum)(const float* p, size_t p_stride, const float* inv, int n_q, const float* v, size_t v_stride, int n_keys,
                       int n, float* out);
  // Attention's softmax numerators: s[j] = exp(s[j] - max) for j < n; returns their sum, in
  // double. Each table its own exp (the SIMD ones a polynomial within 2 ulp of std::exp), the
  // same for an element wherever it lies in s.
  double (*exp_sum)(float* s, int n, float max);
  // y[i] = x[i] as f32 for i < n (exact): an f16 KV cache read back for attention.
  void (*f16_to_f32)(const uint16_t* x, float* y, int n);
  // attention_scores and weighted_sum reading an f16 cache's keys and values where they lie
  // (k_stride and v_stride in halves, the other strides in floats): the bits of the f32 kernels on the rows converted by
  // f16_to_f32, without the pass that converts them (at a conversation's depth the rows come from memory, once per token). Null
  // where a table has none: attention then reads rows back a tile at a time.
  void (*attention_scores_f16)(const uint16_t* k, size_t k_stride, int n_keys, const float* q, size_t q_stride, int n_q, int n,
                               float* s, size_t s_stride) = nullptr;
  void (*weighted_sum_f16)(const float* p, size_t p_stride, const float* inv, int n_q, const uint16_t* v, size_t v_stride,
                           int n_keys, int n, float* out) = nullptr;
};

// The gemm kernel of `t` in `k` for rows laid out as `layout` (nullptr where the table has none).
GemmKernel gemm_kernel(const KernelTable& k, TensorType t, RowLayout layout = RowLayout::kRows);

// The type activations are converted to before a dot product with weights of type `t`: Q8_0,
// Q8_K, F16, or F32 (used as is).
TensorType dot_type(TensorType t);

// Every quantized weight type the tables compute (the ones whose dot type is Q8_0 or Q8_K).
inline constexpr TensorType kQuantizedWeightTypes[] = {TensorType::Q8_0, TensorType::Q4_0,  TensorType::Q5_0,
                                                       TensorType::Q4_K, TensorType::Q5_K,  TensorType::Q6_K,
                                                       TensorType::MXFP4, TensorType::IQ4_NL, TensorType::IQ4_XS};

const KernelTable& scalar_kernels();
// Every table this CPU supports (checked at run time), scalar first, fastest last.
std::vector<const KernelTable*> supported_kernels();
// The fastest table this CPU supports, or the one the environment variable HEARTH_KERNELS names
// ("scalar", "avx2", "avx512", "neon", "neon-dotprod"), to compare tables on one machine. Chosen once per process.
const KernelTable& best_kernels();

// Dequantizes one row of n elements of any computable type (and of Q8_K) into f32.
void dequantize_row(TensorType type, const void* row, float* out, int64_t n);
// Quantizes n floats into one row of any computable type (used by the model writer). f32, f16,
// bf16, q8_0, q4_0, q5_0 and mxfp4 are bit-compatible with llama.cpp's reference quantizers, iq4_nl
// and iq4_xs follow its search without an importance matrix (lut_quants.h); the K-quants use a
// simpler quantizer (kquants.h) whose blocks llama.cpp reads the same way.
void quantize_row(TensorType type, const float* x, void* out, int64_t n);

}  // namespace hearth::runtime
