// Y = X W^T for a weight matrix used in place: the decode (1 token) and prefill (many tokens)
// paths of every weight type.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/kernels.h"
#include "runtime/thread_pool.h"
#include "runtime/weights.h"

namespace hearth::runtime {

// Reusable buffers for activations converted to a weight's dot type. Sized once for the largest
// batch and row, so no allocation happens per token.
class MatmulScratch {
 public:
  MatmulScratch(int max_tokens, int64_t max_n_in);
  BlockQ8_0* q8(int token, int64_t n_in) { return q8_.data() + static_cast<int64_t>(token) * (n_in / kQ8_0Block); }
  BlockQ8_K* q8k(int token, int64_t n_in) { return q8k_.data() + static_cast<int64_t>(token) * (n_in / kQK); }

 private:
  std::vector<BlockQ8_0> q8_;
  std::vector<BlockQ8_K> q8k_;
};

// y[t * w.n_out + r] = dot(row r of w, x[t * w.n_in ...]) for t in [0, n_tokens).
// REQUIRES: n_tokens <= the scratch's max_tokens, w.n_in <= its max_n_in.
void matmul(const WeightMatrix& w, const float* x, int n_tokens, float* y, MatmulScratch& scratch,
            ThreadPool& pool, const KernelTable& k);

}  // namespace hearth::runtime
