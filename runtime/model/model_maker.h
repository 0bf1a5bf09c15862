// Writes llama, qwen2, qwen3, qwen3moe, olmoe, phi3, gemma3, gemma4, qwen35, qwen35moe and gpt-oss GGUF models of a real shape with random weights: the
// fixtures of tests and benchmarks (`hearth mkmodel`). No download is ever needed to test hearth.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "partitioner/model_spec.h"
#include "runtime/format/tensor_type.h"

namespace hearth::runtime {

struct RandomModelShape {
  int n_vocab = 512;
  int n_embd = 128;
  int n_layer = 4;
  int n_head = 4;
  int n_head_kv = 2;
  int n_ff = 384;
  int n_ctx = 512;
  float rope_base = 10000.f;
  float rms_eps = 1e-5f;
  int head_dim = 0;  // 0 = n_embd / n_head; another value is written as attention.key_length
  // Mixture of experts (qwen3moe, olmoe, or llama as Mixtral): 0 experts = dense.
  int n_expert = 0;
  int n_expert_used = 0;
  int n_ff_exp = 0;  // expert FFN width; olmoe and Mixtral files say it as feed_forward_length
};

// "tiny", "tinyllama-1.1b", "llama-2-7b", and the MoE shapes "tiny-moe", "qwen3-30b-a3b".
std::optional<RandomModelShape> random_model_preset(const std::string& name);
std::vector<std::string> random_model_preset_names();

// "llama", "qwen2", "qwen3", "qwen3moe", "olmoe", "phi3", "gemma3", "gemma4", "qwen35", "qwen35moe", "gpt-oss".
std::vector<std::string> random_model_arch_names();

struct MakeModelOptions {
  RandomModelShape shape;
  std::string arch = "llama";  // qwen2 adds Q/K/V biases, qwen3 per-head Q/K norms, qwen3moe and
                               // olmoe experts (llama has them when the shape does)
  // Matrices; norms and biases stay f32 as in real files. A K-quant matrix whose rows are not a
  // multiple of 256 falls back to another type for that tensor, as llama-quantize does
  // (k_quant_fallback).
  TensorType type = TensorType::F32;
  // The 3-D expert matrices' type, if not `type` (gpt-oss is published with MXFP4 experts and
  // the rest in another type).
  std::optional<TensorType> expert_type;
  uint64_t seed = 1;
  float weight_std = 0.02f;  // of the uniform distribution the weights are drawn from
  std::string vocab_from;    // copy tokenizer.* from this GGUF (n_vocab follows it)
  // The byte-level vocabulary's last pseudo-words replaced by these control tokens ("<think>",
  // "<|im_start|>"...), and a tokenizer.chat_template: a chat model's shape for the tests.
  std::vector<std::string> control_tokens;
  std::string chat_template;
  std::string name = "hearth-random";
  int threads = 0;                       // 0 = all hardware threads
  bool tied_output = false;              // no output.weight: the head reuses token_embd
  std::vector<float> rope_freq_factors;  // written as rope_freqs.weight (Llama 3) if not empty
  float rope_scaling_factor = 0.f;       // > 0: linear RoPE scaling by this factor
  int sliding_window = 512;              // gemma3, gemma4 (5 of every 6 layers), gpt-oss (every other layer): tokens a
                                         // sliding-window layer sees
  // gemma4 only. Every full_layer_period-th layer is a full one (6: the 31B layout; 5: E2B/E4B).
  // Per-layer embeddings of this many values per layer (E2B/E4B: 256), and the last
  // shared_kv_layers layers reading the cache of an earlier one (E2B: 20 of 35); 0 = none.
  int full_layer_period = 6;
  int per_layer_embd = 0;
  int shared_kv_layers = 0;
  // gemma4: the full layers' KV heads (0 = half the sliding layers' when even, else as many)
  // and whether they take V from K (26B-A4B, 31B) or have a V projection (E2B, E4B); whether
  // the shared-KV layers' FFN is twice as wide (E2B; feed_forward_length is then per layer).
  int full_kv_heads = 0;
  bool full_v_from_k = true;
  bool double_wide_shared_ffn = false;
  // qwen35, qwen35moe: the gated delta-nets' key and value heads and their size (0 = half the
  // attention heads, as many as them, and the attention's head size); qwen35moe's shared
  // expert width (0 = the routed experts').
  int ssm_k_heads = 0;
  int ssm_v_heads = 0;
  int ssm_head_dim = 0;
  int n_ff_shared_expert = 0;
};

// Sets the shape, architecture and layout options that write a file of a planner preset's shape
// (`hearth mkmodel --preset gemma-4-e2b`), leaving the rest of `options` (type, seed, ...) as
// they are. Throws std::invalid_argument for a shape mkmodel cannot write (Gemma 4 full layers
// whose heads are not twice the sliding ones', Qwen 3.5 full layers other than every fourth).
void apply_preset_layout(const partitioner::ModelShape& shape, MakeModelOptions& options);

// The type llama-quantize-like writers use for a matrix of `type` whose rows do not divide into
// 256-element super-blocks.
TensorType k_quant_fallback(TensorType type);

// Writes the model to `path`. The default vocabulary is byte-level (every text encodes) padded
// with pseudo-words up to n_vocab, so generated text is visibly noise. Throws on bad options.
void make_random_model(const std::string& path, const MakeModelOptions& options);

}  // namespace hearth::runtime
