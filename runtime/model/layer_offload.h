// The seam through which a stage runs its first layers whole somewhere else (a GPU:
// runtime/gpu/gpu.h): norms, projections, RoPE, attention with its own KV cache there, the FFN and
// the residuals, the hidden state crossing once each way per forward() instead of once per
// product (MatmulOffload). The stage keeps the bookkeeping: which sequence has which cache slot,
// positions, and the RoPE angles, so that both sides rotate by the same numbers.
#pragma once

#include <span>

#include "runtime/format/tensor_type.h"

namespace hearth::runtime {

struct LayerOffloadBatch {
  int n_tokens = 0;
  std::span<const int> pos;     // each token's position in its sequence
  std::span<const int> slot;    // each token's sequence's cache slot, below prepare()'s sequences
  std::span<const float> rope;  // each token's n_rot / 2 cosines, then as many sines
};

class LayerOffload {
 public:
  virtual ~LayerOffload() = default;
  // The end of the stage's first layers it runs whole, [first_layer, end()); first_layer: none.
  virtual int end() const = 0;
  // Sizes its caches and buffers for a stage, empty, and returns the token that stage passes to
  // forward(): one stage uses it at a time, and once a prepare() succeeds an earlier stage's
  // token is refused (its caches are gone). May run fewer layers than offered (end() then says
  // how many); throws (a GpuError), leaving an earlier stage's caches as they were, when none fits.
  virtual uint64_t prepare(int n_ctx, int max_sequences, int max_batch, TensorType kv_type) = 0;
  // Runs the layers on x ([n_tokens x n_embd], the hidden state in and out), storing each token's
  // keys and values in its slot at its position (a smaller position than before rewinds).
  virtual void forward(uint64_t token, float* x, const LayerOffloadBatch& batch) = 0;
};

}  // namespace hearth::runtime
