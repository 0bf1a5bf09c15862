// Hyperparameters of a transformer in the llama family (architectures llama, qwen2, qwen3, phi3,
// gemma3, and the mixture-of-experts qwen3moe, olmoe, gpt-oss and Mixtral-style llama), read from
// GGUF metadata. The architectures differ only in the details below; their metadata keys share the
// layout "<arch>.embedding_length" etc.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "runtime/format/gguf.h"
#include "runtime/model/rope.h"

namespace hearth::runtime {

// Whether an architecture's layers have an optional kind of tensor.
enum class TensorNeed { Absent, Optional, Required };

// The gate's activation in the gated FFN: silu(gate) * up (SwiGLU), gelu(gate) * up (GeGLU,
// the tanh GELU, Gemma), or gpt-oss's clamped SwiGLU (ops.h: swiglu_oai).
enum class FfnActivation { SiLU, GeluTanh, SwigluOai };

// How a MoE router's logits become the chosen experts' weights: a softmax over all experts
// (the top k of it, maybe renormalised), or the top k logits and a softmax over just them (gpt-oss).
enum class ExpertGating { Softmax, SoftmaxOfChosen };

struct ModelConfig {
  std::string arch;     // general.architecture: "llama", "qwen2", "qwen3", "qwen3moe", "gpt-oss", ...
  std::string name;     // general.name, or the file name
  int n_vocab = 0;      // tokens
  int n_embd = 0;       // hidden size
  int n_layer = 0;      // transformer blocks
  int n_head = 0;       // query heads
  int n_head_kv = 0;    // key/value heads (GQA when < n_head)
  int head_dim = 0;     // n_embd / n_head unless the file says otherwise
  int n_ff = 0;  // feed-forward hidden size of a dense layer, the widest if they differ (0 when every layer is MoE and the file
                 // has none)
  int n_ctx_train = 0;  // context length the model was trained for
  int n_rot = 0;        // dimensions of each head that RoPE rotates
  float rms_eps = 1e-5f;
  float rope_base = 10000.f;
  RopeStyle rope_style = RopeStyle::Normal;  // NeoX for qwen2/qwen3
  float rope_freq_scale = 1.f;               // linear RoPE scaling: positions are multiplied by this (1/factor)
  int n_ctx_orig = 0;                        // rope.scaling.original_context_length, 0 if absent; LongRoPE
                                             // (phi3) uses its long factors for contexts beyond it
  TensorNeed qkv_bias = TensorNeed::Absent;  // blk.N.attn_{q,k,v}.bias (qwen2: required)
  TensorNeed out_bias = TensorNeed::Absent;  // blk.N.attn_output.bias (llama: optional)
  TensorNeed qk_norm = TensorNeed::Absent;   // blk.N.attn_{q,k}_norm.weight, per head (qwen3)
  bool qk_norm_whole = false;                // the q/k norms span the whole projection, not one head (olmoe)
  // phi3: Q, K and V are row ranges of one attn_qkv matrix, gate and up of one ffn_up matrix.
  bool fused_qkv = false;
  bool fused_gate_up = false;
  float rope_attn_factor = 1.f;  // rope.scaling.attn_factor: multiplies cos and sin (phi3's LongRoPE)

  // Mixture of experts: every layer's FFN is n_expert SwiGLU experts of width n_ff_exp, of which
  // a router picks n_expert_used per token. n_expert == 0 for a dense model.
  int n_expert = 0;
  int n_expert_used = 0;
  int n_ff_exp = 0;
  bool expert_weights_norm = false;  // the chosen experts' probabilities are rescaled to sum to 1
  ExpertGating expert_gating = ExpertGating::Softmax;
  TensorNeed expert_bias = TensorNeed::Absent;  // router and per-expert biases (gpt-oss)

  // Gemma 4 26B-A4B: every layer runs its dense FFN (n_ff, normed before by ffn_norm and after by
  // post_ffw_norm_1) and its experts (pre_ffw_norm_2, post_ffw_norm_2) and adds them; the router
  // reads the unweighted RMS norm of the input times 1 / sqrt(n_embd) times ffn_gate_inp.scale,
  // and each expert's output is scaled by its ffn_down_exps.scale.
  bool moe_beside_dense = false;

  // A shared expert beside the routed ones (Qwen 3.5 MoE): a SwiGLU of width n_ff_shexp every
  // token runs, scaled by sigmoid(ffn_gate_inp_shexp . x); 0 = none.
  int n_ff_shexp = 0;

  bool is_moe() const { return n_expert > 0; }

  // Gemma: a norm after attention and after the FFN (post_attention_norm, post_ffw_norm), GELU,
  // embeddings scaled by sqrt(n_embd), sliding-window layers.
  TensorNeed post_norms = TensorNeed::Absent;
  FfnActivation ffn_activation = FfnActivation::SiLU;
  bool embed_scale = false;
  int n_swa = 0;                  // sliding window: a query at p sees keys p - n_swa < q <= p; 0 = none
  int swa_period = 0;             // layer l slides when l % swa_period < swa_period - 1
  float rope_base_swa = 0;        // RoPE base of sliding layers
  float rope_freq_scale_swa = 1;  // and their linear scaling (Gemma: none; gpt-oss: the model's)
  float logit_softcap = 0;        // logits = c * tanh(logits / c) when > 0
  float attention_scale = 0;      // scores = q.k * this; 0 = 1 / sqrt(head_dim)

  TensorNeed attn_sinks = TensorNeed::Absent;  // one softmax sink logit per head (gpt-oss)
  std::string ffn_norm_tensor = "ffn_norm";    // gpt-oss calls its pre-FFN norm post_attention_norm

  // YaRN RoPE scaling (gpt-oss): per pair, a mix of the scaled and the unscaled angle, by a ramp
  // between the dimensions given by beta_fast and beta_slow; cos and sin times 1 + 0.1 ln(factor).
  bool yarn = false;
  float yarn_beta_fast = 32.f;
  float yarn_beta_slow = 1.f;

  // Gemma 4: layers of two shapes. Sliding layers have a head size and rotated dimensions of
  // their own, each layer its own KV head count; the full layers rotate with rope_freqs (their
  // "proportional" RoPE) and may have no attn_v, using K's projection (before its norm) as V; V is
  // RMS-normalised without a weight; each layer's output is scaled by a scalar.
  std::vector<bool> swa_layers;       // which layers slide, when the file says it layer by layer
  int head_dim_swa = 0;               // 0 = head_dim
  int n_rot_swa = 0;                  // 0 = n_rot
  std::vector<int> n_head_kv_layers;  // empty = n_head_kv everywhere
  std::vector<int> n_ff_layers;       // feed_forward_length per layer when the file gives an array; empty = n_ff everywhere
  bool v_from_k = false;              // a layer without attn_v takes V from attn_k
  bool v_norm = false;
  TensorNeed layer_out_scale = TensorNeed::Absent;  // blk.N.layer_output_scale.weight, one value
  // Gemma 4 E2B/E4B. Per-layer embeddings: besides the token embedding, each layer l adds a
  // gated projection of its own input vector of n_embd_per_layer values, computed once per token
  // from the token's row of per_layer_token_embd and a projection of its embedding. A later
  // stage cannot compute them (the first stage holds those tables), so they travel with the
  // hidden state: hidden_width() counts them. Shared KV: the last layers (from n_layer_kv on)
  // keep no KV cache and attend over that of kv_source(l), the last earlier layer of their kind.
  int n_embd_per_layer = 0;  // 0 = none
  int n_layer_kv = 0;        // layers [0, n_layer_kv) have a KV cache of their own; 0 = all

  bool has_own_kv(int l) const { return n_layer_kv == 0 || l < n_layer_kv; }
  int kv_source(int l) const { return has_own_kv(l) ? l : n_layer_kv - (is_swa(l) ? 2 : 1); }
  // Floats per token of the hidden state entering layer `boundary` from another stage: the
  // residual stream, then the per-layer inputs of layers [boundary, n_layer).
  int64_t hidden_width(int boundary) const { return n_embd + static_cast<int64_t>(n_layer - boundary) * n_embd_per_layer; }
  // The first layer a stage holding layer `l` must also hold (the source of the KV cache it
  // reads); l itself for most layers.
  int first_layer_with(int l) const { return std::min(l, kv_source(l)); }
  // Whether a stage may start at layer b: no layer from b on reads the cache of one before it.
  bool stage_may_start_at(int b) const {
    for (int l = b; l < n_layer; ++l)
      if (first_layer_with(l) < b) return false;
    return true;
  }

  // Qwen 3.5: gated delta-net layers (linear attention keeping a recurrent state per sequence
  // instead of a KV cache) with a full-attention layer every full_attention_interval-th; the full
  // layers' attn_q also yields a per-head output gate (output x sigmoid(gate)).
  int full_attention_interval = 0;  // 0 = no recurrent layers
  int ssm_conv_kernel = 0;          // causal depthwise convolution taps (its state: the last taps - 1 inputs)
  int ssm_d_state = 0;              // key head size
  int ssm_n_group = 0;              // key heads
  int ssm_dt_rank = 0;              // value heads
  int ssm_d_inner = 0;              // value heads x value head size
  bool attn_output_gate = false;

  bool is_recurrent(int l) const { return full_attention_interval > 0 && (l + 1) % full_attention_interval != 0; }
  int ssm_head_v_dim() const { return ssm_dt_rank > 0 ? ssm_d_inner / ssm_dt_rank : 0; }
  int ssm_conv_channels() const { return ssm_d_inner + 2 * ssm_n_group * ssm_d_state; }
  // Floats of a recurrent layer's state for one sequence: the convolution's last inputs, then a
  // value-head-size square matrix per value head.
  int64_t ssm_state_floats() const {
    return static_cast<int64_t>(ssm_conv_kernel - 1) * ssm_conv_channels() +
           static_cast<int64_t>(ssm_dt_rank) * ssm_head_v_dim() * ssm_head_v_dim();
  }

  bool is_swa(int layer) const {
    if (!swa_layers.empty()) return swa_layers[static_cast<size_t>(layer)];
    return n_swa > 0 && layer % swa_period < swa_period - 1;
  }
  int layer_head_dim(int l) const { return is_swa(l) && head_dim_swa > 0 ? head_dim_swa : head_dim; }
  int layer_n_rot(int l) const { return is_swa(l) && n_rot_swa > 0 ? n_rot_swa : n_rot; }
  int layer_n_ff(int l) const { return n_ff_layers.empty() ? n_ff : n_ff_layers[static_cast<size_t>(l)]; }
  int layer_n_head_kv(int l) const { return n_head_kv_layers.empty() ? n_head_kv : n_head_kv_layers[static_cast<size_t>(l)]; }
  int layer_q_dim(int l) const { return n_head * layer_head_dim(l); }
  int layer_kv_dim(int l) const { return is_recurrent(l) ? 0 : layer_n_head_kv(l) * layer_head_dim(l); }
  int layer_cache_dim(int l) const { return has_own_kv(l) ? layer_kv_dim(l) : 0; }  // of its own KV cache
  // The widest layer's (for buffers): the same as q_dim() and kv_dim() unless layers differ.
  int max_q_dim() const;
  int max_kv_dim() const;

  int q_dim() const { return n_head * head_dim; }
  int kv_dim() const { return n_head_kv * head_dim; }
};

// Reads and checks the hyperparameters; throws GgufError naming the key that is missing or
// inconsistent, or listing the supported architectures (or RoPE scalings) when the file's is
// unknown.
ModelConfig read_model_config(const GgufFile& file);

}  // namespace hearth::runtime
