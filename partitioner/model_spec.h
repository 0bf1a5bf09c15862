#pragma once
// What the planner knows about a model: per-block weight bytes and FLOPs, plus the
// dimensions that size the KV cache, activations and scratch buffers.
//
// A ModelSpec comes either from a GGUF file (runtime's extractor) or from a
// ModelShape (a config.json-like summary) through model_spec_from_shape(), e.g.
//   auto shape = *preset_shape("llama-3-8b"); shape.weight_type = "q4_0";
//   ModelSpec spec = model_spec_from_shape(shape);

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hearth::partitioner {

struct ModelSpec {
  std::string name;
  int n_layers = 0;                           // transformer blocks
  std::vector<double> layer_weight_bytes;     // bytes per block, [n_layers]
  std::vector<double> layer_flops_per_token;  // FLOP per token per block, linear layers only, [n_layers]
  std::string weight_type;                    // GGUF type name of the block weights ("q4_0", ...)
  double embedding_bytes = 0;                 // bytes, token embedding table (n_vocab, n_embd)
  double per_layer_input_bytes = 0;           // bytes, Gemma 4 E2B/E4B's per-layer tables, also on the first stage
  double output_bytes = 0;                    // bytes, final norm + LM head (n_embd, n_vocab)
  double output_flops_per_token = 0;          // FLOP per sampled token in the LM head
  bool tied_embeddings = false;               // LM head reuses the embedding table
  int n_head = 0;                             // query heads
  int n_kv_head = 0;                          // key/value heads (GQA)
  int head_dim = 0;                           // elements per head
  int n_embd = 0;                             // hidden size d_model
  int n_ff = 0;                               // feed-forward hidden size (of one expert in a MoE model)
  int n_vocab = 0;                            // vocabulary size
  // Mixture of experts: memory holds every expert, but a token reads only the n_expert_used its
  // router picks. layer_expert_bytes is the part of layer_weight_bytes that is routed experts
  // (empty for a dense model); layer_flops_per_token already counts only the used experts.
  int n_expert = 0;
  int n_expert_used = 0;
  std::vector<double> layer_expert_bytes;  // bytes per block, [n_layers] or empty
  // Recurrent layers (Qwen 3.5's gated delta-nets) keep no KV cache but a state of fixed size per
  // stream, whatever the context: its bytes per block, [n_layers] (0 for a layer with a KV cache)
  // or empty when every layer has a KV cache.
  std::vector<double> layer_state_bytes;
  // Boundaries no stage may start at, [n_layers + 1] or empty (every one allowed): a layer that
  // reads an earlier layer's KV cache (Gemma 4's shared-KV layers) must be on that layer's stage.
  std::vector<bool> no_cut_at;
  // Layers that read another layer's KV cache and hold none (Gemma 4's shared-KV layers; they
  // still read it, so their time is as any layer's): [n_layers] or empty.
  std::vector<bool> layer_shares_kv;
  // Gemma 4 E2B/E4B: values per layer of the per-layer inputs the first stage computes; a hop
  // into the stage starting at block b carries those of blocks b..L-1 beside the n_embd hidden
  // state. 0 = none.
  int n_embd_per_layer = 0;
  // Sliding-window layers (Gemma, gpt-oss): the keys a layer's queries see, [n_layers] (0 for a
  // layer that sees all) or empty (none slides). Such a layer keeps a ring of kv_cache_rows.
  std::vector<int> layer_window;
};

// Whether a stage may start at layer `boundary` (0 and n_layers always may).
bool can_cut(const ModelSpec& spec, int boundary);

// Rows of KV cache one sequence needs in a layer that sees the last `window` positions (0: all)
// when a step brings at most `max_batch` of its tokens: a sliding-window layer keeps a ring of
// its latest window + max_batch positions (a step stores all its keys before its first token
// attends), never more than the context. The runtime allocates this and the planner counts it.
int kv_cache_rows(int window, int n_ctx, int max_batch);

// Bytes of block `layer` that a step of `tokens` tokens reads: all of a dense block; of a MoE
// block, everything but the experts, plus the experts at least one of the tokens picks, expected
// over uniform routing (n_expert * (1 - (1 - used / n_expert)^tokens) of them).
double layer_read_bytes(const ModelSpec& spec, int layer, double tokens);
// What one decoded token reads of all the blocks (for a dense model, all their bytes).
double active_weight_bytes(const ModelSpec& spec);

// A model's architecture in the terms of a Hugging Face config.json (Llama-style
// decoder: GQA attention, SwiGLU feed-forward, RMSNorm).
struct ModelShape {
  std::string name;
  int n_layers = 0;
  int n_embd = 0;
  int n_ff = 0;
  int n_head = 0;
  int n_kv_head = 0;
  int n_vocab = 0;
  std::string weight_type = "f16";  // GGUF type name of the matmul weights
  double bytes_per_weight = 0;      // bytes per weight incl. block scales; 0 = from weight_type
  bool tied_embeddings = false;     // LM head shares the embedding table (Llama 3.2, small Qwen2.5)
  bool qkv_bias = false;            // q/k/v projections carry biases (Qwen2)
  int head_dim = 0;                 // 0 = n_embd / n_head
  int n_expert = 0;                 // MoE: experts per block (n_ff is then one expert's width)
  int n_expert_used = 0;            // MoE: experts per token
  // MoE: the GGUF type of the expert matrices where a release fixes it whatever the rest is
  // quantized to (gpt-oss's experts are published in MXFP4); empty = weight_type.
  std::string expert_type;

  // Layers of two kinds: every full_attention_period-th one (l % period == period - 1) attends
  // over the whole context; the others slide over a window (Gemma) or, when linear_v_heads > 0,
  // are gated delta-nets that keep a fixed state instead of a KV cache (Qwen 3.5). 0 = all full.
  int full_attention_period = 0;
  int sliding_window = 0;  // tokens a sliding layer sees (Gemma 3: 1024, gpt-oss: 128); 0 = none slides
  // Gemma 4's full layers: heads of their own size, their own KV head count, and K standing in
  // for V (no V projection). 0 = as the other layers.
  int head_dim_full = 0;
  int n_kv_head_full = 0;
  bool full_k_is_v = false;
  // Gemma 4 E2B/E4B: per-layer embeddings of this many values per layer (a table of n_vocab x
  // n_layers x this on the first stage, a gate and projection in each layer), and the last
  // n_shared_kv_layers layers reading an earlier layer's cache (no K/V of their own; E2B's
  // also have an FFN twice as wide).
  int n_embd_per_layer = 0;
  int n_shared_kv_layers = 0;
  bool shared_kv_double_ffn = false;
  int n_ff_dense = 0;          // MoE: a dense FFN of this width beside the experts (Gemma 4 26B-A4B)
  int n_ff_shared_expert = 0;  // MoE: an always-on shared expert of this width (Qwen 3.5), gated
  // Qwen 3.5's gated delta-net layers: key and value heads of linear_head_dim, a causal
  // convolution of linear_conv_kernel taps.
  int linear_k_heads = 0;
  int linear_v_heads = 0;
  int linear_head_dim = 128;
  int linear_conv_kernel = 4;
  bool attn_output_gate = false;  // the query projection also yields a per-head gate (Qwen 3.5)
};

// Bytes per weight of a GGUF type including block scales (q4_0: 18 bytes per 32
// weights), or nothing for an unknown type.
std::optional<double> bytes_per_weight(std::string_view weight_type);

// Weight type names bytes_per_weight() knows, e.g. for CLI help.
std::vector<std::string_view> weight_type_names();

// Builds the spec of a Llama-style decoder. Norms and biases are counted as f32.
// Throws std::invalid_argument when a dimension is not positive or the weight
// type is unknown and bytes_per_weight is 0 (a configuration error).
ModelSpec model_spec_from_shape(const ModelShape& shape);

// Shape of a well-known model by name ("llama-3-8b", "qwen2.5-7b", ...), with
// weight_type "f16"; nothing for an unknown name.
std::optional<ModelShape> preset_shape(std::string_view name);
std::vector<std::string> preset_names();

// Bytes of a full copy of the weights (one embedding table when tied): roughly the GGUF size.
double total_weight_bytes(const ModelSpec& spec);

}  // namespace hearth::partitioner
