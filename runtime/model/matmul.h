// Y = X W^T for weight matrices used in place: the decode (1 token) and prefill (many tokens)
// paths of every weight type.
//
// Activations are converted once per call to the weights' dot type, then tasks of rows run on
// the pool, each through the table's gemm kernel (register tiles of rows x tokens). Every output
// is computed exactly as the dot kernel computes it, so results do not depend on the batch size,
// on which other tokens share the batch, or on the thread count (rows are split, never a sum).
#pragma once

#include <cstdint>
#include <span>
#include <stdexcept>
#include <vector>

#include "runtime/kernels/aligned_vector.h"
#include "runtime/kernels/kernels.h"
#include "runtime/kernels/thread_pool.h"
#include "runtime/model/weights.h"

namespace hearth::runtime {

// Reusable buffers for activations converted to a weight's dot type. Sized once for the largest
// batch and row, so no allocation happens per token. The f16 buffer (2 bytes per element, the
// largest) only where f16 weights will read it.
class MatmulScratch {
 public:
  MatmulScratch(int max_tokens, int64_t max_n_in, bool f16_weights = true);
  BlockQ8_0* q8(int token, int64_t n_in) { return q8_.data() + static_cast<int64_t>(token) * (n_in / kQ8_0Block); }
  BlockQ8_K* q8k(int token, int64_t n_in) { return q8k_.data() + static_cast<int64_t>(token) * (n_in / kQK); }
  // A kernel table's packed activations (KernelTable::pack), `bytes` per token.
  uint8_t* packed(int token, size_t bytes) { return packed_.data() + static_cast<size_t>(token) * bytes; }
  uint16_t* f16(int token, int64_t n_in) {
    if (f16_.empty()) throw std::logic_error("f16 weights met a matmul scratch made without f16 room");
    return f16_.data() + static_cast<int64_t>(token) * f16_stride(n_in);
  }
  // Elements between two tokens' f16 activations: whole cache lines, and never a multiple of
  // 1 KiB, so that a tile's tokens fall in different L1 sets. Rows of 2048 elements are 4 KiB
  // apart, where a 4 x 3 tile's 3 tokens and 4 weight rows all met in one set of 8 ways: 1.59-1.62
  // FMAs per cycle in a 5632 x 2048 x 120 gemm on AVX2, 1.70-1.73 with a line between tokens.
  static int64_t f16_stride(int64_t n_in) {
    const int64_t line = 64 / sizeof(uint16_t);
    const int64_t padded = (n_in + line - 1) / line * line;
    return padded % 512 == 0 ? padded + line : padded;
  }
  uint64_t bytes() const {
    return q8_.size() * sizeof(BlockQ8_0) + q8k_.size() * sizeof(BlockQ8_K) + packed_.size() + f16_.size() * sizeof(uint16_t);
  }

 private:
  std::vector<BlockQ8_0> q8_;
  std::vector<BlockQ8_K> q8k_;
  std::vector<uint8_t> packed_;  // room for the largest layout of any table this CPU supports
  AlignedVector<uint16_t> f16_;
};

// y[t * w.n_out + r] = dot(row r of w, x[t * w.n_in ...]) for t in [0, n_tokens).
// REQUIRES: n_tokens <= the scratch's max_tokens, w.n_in <= its max_n_in.
void matmul(const WeightMatrix& w, const float* x, int n_tokens, float* y, MatmulScratch& scratch, ThreadPool& pool,
            const KernelTable& k);

// Biases (either may be null) then the gate's activation, over n elements of one token: what
// matmul_swiglu() does to its projections (and a stage to projections computed elsewhere).
void gated(FfnActivation activation, float* gate, float* up, const float* gate_bias, const float* up_bias, size_t n);

// One weight of a fused matmul and its output ([n_tokens x w->n_out]).
struct MatmulTarget {
  const WeightMatrix* w;
  float* y;
};

// Several weights over the same input (Q, K and V), in one parallel loop: the input is
// converted once and the pool is woken once. REQUIRES: the same n_in, at most 4 targets.
void matmul_many(std::span<const MatmulTarget> targets, const float* x, int n_tokens, MatmulScratch& scratch, ThreadPool& pool,
                 const KernelTable& k);

// SwiGLU's two projections in one pass: gate_out = silu(x Wg^T) * (x Wu^T). Each task computes
// the same rows of both and applies swiglu() to them while they are in cache. up_out is a buffer
// of the same size for the up projection. REQUIRES: gate and up of the same shape.
// With another activation the gate is GELU's (GeGLU, geglu()) or gpt-oss's (swiglu_oai()); with
// biases (n_out each, or null) they are added to the projections before it.
void matmul_swiglu(const WeightMatrix& gate, const WeightMatrix& up, const float* x, int n_tokens, float* gate_out, float* up_out,
                   MatmulScratch& scratch, ThreadPool& pool, const KernelTable& k, FfnActivation activation = FfnActivation::SiLU,
                   const float* gate_bias = nullptr, const float* up_bias = nullptr);

// One expert of a mixture-of-experts layer for one token: its SwiGLU projections and down
// projection, and where their outputs go (gate_out, up_out: [w_gate->n_out]; y: [w_down->n_out]).
struct ExpertTarget {
  const WeightMatrix* gate;
  const WeightMatrix* up;
  const WeightMatrix* down;
  float* gate_out;
  float* up_out;
  float* y;
  const float* gate_bias = nullptr;  // (gate->n_out), or null
  const float* up_bias = nullptr;
};

// A decoded token through several experts: y = down(silu(gate x) * up x) for each, in two parallel
// loops over all of them (one for gate and up, which share x, one for the downs) rather than two
// per expert. Each output is computed exactly as matmul_swiglu() and matmul() compute it.
// REQUIRES: every expert of the same shapes and types; gate_out of consecutive experts
// consecutive (expert i's at gate_out of expert 0 + i * gate->n_out); at most max_tokens experts
// (the scratch holds their down inputs as it holds tokens).
void matmul_experts(std::span<const ExpertTarget> experts, const float* x, MatmulScratch& scratch, ThreadPool& pool,
                    const KernelTable& k, FfnActivation activation = FfnActivation::SiLU);

}  // namespace hearth::runtime
