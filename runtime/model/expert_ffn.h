// The feed-forward block of a mixture-of-experts layer (qwen3moe, olmoe, Mixtral):
//
//   p = softmax(router · x);  E = the n_expert_used most probable experts;
//   w_e = p_e (divided by the sum over E when the model normalises);
//   out = sum over e in E, most probable first, of w_e · down_e(silu(gate_e · x) * up_e · x)
//
// as llama.cpp computes it. A batch is grouped by expert, so each chosen expert's matrices pass
// once over the tokens that chose it; since every matmul output is computed the same way whatever
// the batch (matmul.h), a token's result does not depend on the other tokens in its batch.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/kernels/kernels.h"
#include "runtime/kernels/thread_pool.h"
#include "runtime/model/matmul.h"
#include "runtime/model/model_config.h"
#include "runtime/model/weights.h"

namespace hearth::runtime {

// The experts one token goes to, most probable first, with their weights.
struct Routing {
  std::vector<int> experts;
  std::vector<float> weights;
};

// Picks the top `k` of `logits` (n_expert router outputs; the lower index first on ties). With
// ExpertGating::Softmax they are weighted by their softmax probability over all experts,
// renormalised over the k when `normalize`; with SoftmaxOfChosen by a softmax over the k logits.
Routing route(std::span<const float> logits, int k, bool normalize, ExpertGating gating = ExpertGating::Softmax);

class ExpertFfn {
 public:
  // Buffers for up to max_tokens tokens per forward(). The scratch given to forward() must hold
  // max(max_tokens, n_expert_used) tokens: decode converts each chosen expert's hidden row in it.
  ExpertFfn(const ModelConfig& config, int max_tokens);

  // out[t] = the layer's MoE output for input xn[t] (the normed hidden state), t < n_tokens. The
  // router reads router_in[t] where the model gives it its own input (Gemma 4), else xn[t].
  void forward(const LayerWeights& w, const float* xn, int n_tokens, float* out, MatmulScratch& scratch, ThreadPool& pool,
               const KernelTable& k, const float* router_in = nullptr);
  // Bytes of expert matrices forward() has read so far: each chosen expert once per call.
  uint64_t bytes_read() const { return bytes_read_; }

 private:
  // Expert e over the tokens that chose it (gathered), its outputs into their slots.
  void run_expert(const LayerWeights& w, int e, const float* xn, MatmulScratch& scratch, ThreadPool& pool, const KernelTable& k);
  static const float* bias_of(const std::vector<float>& biases, size_t e, size_t n);
  // Expert e's bias of its down projection and its output scale (Gemma 4), on rows of y.
  void finish_down(const LayerWeights& w, int e, float* y, int rows) const;
  // The one token's chosen experts together (matmul_experts).
  void decode_one(const LayerWeights& w, const float* xn, MatmulScratch& scratch, ThreadPool& pool, const KernelTable& k);

  int n_embd_, n_expert_, n_used_, n_ff_exp_;
  bool normalize_;
  ExpertGating gating_;
  FfnActivation activation_;
  std::vector<float> logits_;                  // [tokens x n_expert]
  std::vector<int> chosen_;                    // [tokens x n_used]: expert of each (token, slot)
  std::vector<float> weight_;                  // [tokens x n_used]
  std::vector<std::vector<int>> by_expert_;    // per expert: the (token * n_used + slot) that chose it
  std::vector<float> x_, gate_, up_, y_;       // one expert's gathered inputs and outputs; in decode,
                                               // gate_ and up_ hold every chosen expert's rows
  std::vector<WeightMatrix> decode_matrices_;  // decode: gate, up and down of each chosen expert
  std::vector<ExpertTarget> decode_targets_;
  std::vector<float> slot_out_;  // [tokens x n_used x n_embd]
  uint64_t bytes_read_ = 0;
};

}  // namespace hearth::runtime
