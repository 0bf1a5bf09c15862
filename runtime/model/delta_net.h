// A gated delta-net layer's recurrence (Qwen 3.5's linear attention), token by token.
//
// Each value head keeps a square matrix S (value head size): per token, S decays by exp(g),
// learns the token's key -> value association by the delta rule, S += k (beta (v - S^T k))^T, and
// answers the query, out = S^T q / sqrt(head size). q, k and v come out of a causal depthwise
// convolution (over the last `kernel` inputs of each channel, then SiLU) of one projection; q and
// k are L2-normalised; value head h reads key head h mod (key heads). The output is RMS-normalised
// per head and gated by SiLU(z). The arithmetic follows llama.cpp's CPU kernels (ggml_ssm_conv,
// ggml_l2_norm, the fused gated_delta_net), so a conversation's state is what it would be there.
//
// A sequence's state lives in its cache (KvCache::state), so the layer needs nothing else to go
// on from where the sequence stopped; it cannot go back (the state of an earlier position is gone).
#pragma once

#include <cstdint>

#include "runtime/kernels/kernels.h"
#include "runtime/kernels/thread_pool.h"
#include "runtime/model/model_config.h"
#include "runtime/model/weights.h"

namespace hearth::runtime {

// The recurrence for one token of one sequence, after the projections:
//   qkv (conv channels), z (d_inner), beta and alpha (value heads): the token's projections;
//   state: the sequence's state for this layer (ModelConfig::ssm_state_floats), updated;
//   out: d_inner floats, the gated, normalised output (before ssm_out);
//   scratch: conv channels + value heads x value head size floats.
// The value heads run as tasks of `pool`.
void delta_net_token(const ModelConfig& c, const LayerWeights& w, const float* qkv, const float* z, const float* beta,
                     const float* alpha, float* state, float* out, float* scratch, ThreadPool& pool, const KernelTable& k);

}  // namespace hearth::runtime
