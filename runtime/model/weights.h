// The weights one pipeline stage needs, mapped from the GGUF file range by range.
//
// A stage [first, last) maps only its layers' tensors (plus the embedding and/or output head if
// it holds them); nothing else of the file is mapped, so other layers never enter its memory.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/format/gguf.h"
#include "runtime/format/mapped_file.h"
#include "runtime/model/model_config.h"
#include "runtime/format/tensor_type.h"
#include "runtime/kernels/huge_pages.h"
#include "runtime/kernels/interleaved_rows.h"
#include "runtime/kernels/kernels.h"
#include "runtime/kernels/thread_pool.h"

namespace hearth::runtime {

// A 2-D weight, read where it lies (the file's mapping, or the stage's memory after
// StageWeights::hold_in_memory): n_out rows of n_in elements, row-major, or with
// interleaved rows (StageWeights::hold_in_memory) groups of 8 rows in their kernel's layout.
struct WeightMatrix {
  TensorType type = TensorType::F32;
  const uint8_t* data = nullptr;
  int64_t n_in = 0;        // elements per row (GGUF ne[0])
  int64_t n_out = 0;       // rows (GGUF ne[1])
  uint64_t row_bytes = 0;  // bytes per row
  RowLayout layout = RowLayout::kRows;
  // Row r; with interleaved rows, for r a multiple of 8, the group r starts.
  const uint8_t* row(int64_t r) const { return data + static_cast<uint64_t>(r) * row_bytes; }
  uint64_t bytes() const { return row_bytes * static_cast<uint64_t>(n_out); }
};

// A 3-D GGUF tensor [n_in, n_out, n_expert]: one matrix per expert, stored back to back; or rows
// of each (a fused gate-up tensor's gate or up half: stride says how far apart experts are).
struct ExpertMatrix {
  WeightMatrix first;  // expert 0
  int n_expert = 0;
  uint64_t stride = 0;  // bytes from one expert to the next; 0 = first.bytes()
  WeightMatrix expert(int e) const {
    WeightMatrix m = first;
    m.data += static_cast<uint64_t>(e) * (stride ? stride : first.bytes());
    return m;
  }
};

// Vectors of optional tensors are empty when the model has none (ModelConfig says which kinds an
// architecture may or must have).
struct LayerWeights {
  std::vector<float> attn_norm;       // (n_embd)
  WeightMatrix wq;                    // (n_embd) -> (n_head * head_dim)
  WeightMatrix wk;                    // (n_embd) -> (n_head_kv * head_dim)
  WeightMatrix wv;                    // (n_embd) -> (n_head_kv * head_dim); no rows when V is K's (Gemma 4)
  WeightMatrix wo;                    // (n_head * head_dim) -> (n_embd)
  std::vector<float> bq, bk, bv;      // biases of wq, wk, wv (qwen2; optional in llama)
  std::vector<float> bo;              // bias of wo (optional in llama)
  std::vector<float> q_norm;          // (head_dim): RMSNorm weight of each query head before RoPE (qwen3);
                                      // (n_head * head_dim) when it spans the whole projection (olmoe)
  std::vector<float> k_norm;          // (head_dim) or (n_head_kv * head_dim): the same for the keys
  std::vector<float> ffn_norm;        // (n_embd)
  std::vector<float> post_attn_norm;  // (n_embd): Gemma's norm of the attention output
  std::vector<float> post_ffn_norm;   // (n_embd): and of the FFN output
  std::vector<float> attn_sinks;      // (n_head): gpt-oss's per-head softmax sink logits
  std::vector<float> out_scale;       // (1): Gemma 4 scales the layer's output by it
  // Dense FFN (not MoE):
  WeightMatrix w_gate;  // (n_embd) -> (n_ff)
  WeightMatrix w_up;    // (n_embd) -> (n_ff)
  WeightMatrix w_down;  // (n_ff) -> (n_embd)
  // Gated delta-net (ModelConfig::is_recurrent; such a layer has no wq..wo):
  WeightMatrix ssm_qkv;               // attn_qkv: (n_embd) -> convolution channels (q, k, v)
  WeightMatrix ssm_z;                 // attn_gate: (n_embd) -> (d_inner), the output gate
  WeightMatrix ssm_beta, ssm_alpha;   // (n_embd) -> (value heads)
  WeightMatrix ssm_out;               // (d_inner) -> (n_embd)
  std::vector<float> ssm_conv;        // (channels x taps): each channel's taps, oldest input first
  std::vector<float> ssm_dt_bias;     // (value heads)
  std::vector<float> ssm_a;           // (value heads): -exp(A_log)
  std::vector<float> ssm_norm;        // (value head size)
  // Mixture of experts (ModelConfig::is_moe):
  WeightMatrix router;     // ffn_gate_inp: (n_embd) -> (n_expert) logits
  ExpertMatrix gate_exps;  // (n_embd) -> (n_ff_exp), per expert
  ExpertMatrix up_exps;    // (n_embd) -> (n_ff_exp), per expert
  ExpertMatrix down_exps;  // (n_ff_exp) -> (n_embd), per expert
  // The shared expert (ModelConfig::n_ff_shexp > 0): its SwiGLU and the gate of its output.
  WeightMatrix gate_shexp, up_shexp;  // (n_embd) -> (n_ff_shexp)
  WeightMatrix down_shexp;            // (n_ff_shexp) -> (n_embd)
  std::vector<float> gate_inp_shexp;  // (n_embd): sigmoid(this . x) scales the shared expert
  // Biases (gpt-oss), empty when the model has none: of the router (n_expert), and of each
  // expert's gate, up (n_expert x n_ff_exp) and down (n_expert x n_embd), expert by expert.
  std::vector<float> router_bias, gate_exps_bias, up_exps_bias, down_exps_bias;
  // Gemma 4 26B-A4B (ModelConfig::moe_beside_dense): the dense FFN's after-norm, the experts'
  // before- and after-norms, the router input's scale and each expert's output scale.
  std::vector<float> post_ffn_norm_1, pre_ffn_norm_2, post_ffn_norm_2;  // (n_embd)
  std::vector<float> router_scale;                                      // (n_embd)
  std::vector<float> down_exps_scale;                                   // (n_expert), empty = 1
  // Per-layer embeddings (ModelConfig::n_embd_per_layer > 0): the gate of the layer's input
  // vector, its projection back to the stream, and that projection's norm.
  WeightMatrix ple_gate;             // inp_gate: (n_embd) -> (n_embd_per_layer)
  WeightMatrix ple_proj;             // proj: (n_embd_per_layer) -> (n_embd)
  std::vector<float> ple_post_norm;  // post_norm: (n_embd)
};

// A layer's matrices read once per step (the experts apart: a step reads only the routed ones).
std::array<const WeightMatrix*, 18> step_matrices(const LayerWeights& w);
std::array<WeightMatrix*, 18> step_matrices(LayerWeights& w);

// What the first stage turns token ids into per-layer inputs with (Gemma 4 E2B/E4B).
struct PerLayerEmbedding {
  WeightMatrix token_embd;       // per_layer_token_embd: (n_layer x n_embd_per_layer) per token
  WeightMatrix model_proj;       // per_layer_model_proj: (n_embd) -> (n_layer x n_embd_per_layer)
  std::vector<float> proj_norm;  // per_layer_proj_norm: (n_embd_per_layer)
};

// Which part of the model a stage runs.
struct StageSpec {
  int first_layer = 0;         // inclusive
  int last_layer = 0;          // exclusive
  bool has_embedding = false;  // turns token ids into hidden states (first stage)
  bool has_output = false;     // final norm + output head, produces logits (last stage)

  static StageSpec whole(int n_layer) { return {0, n_layer, true, true}; }
};

class StageWeights {
 public:
  // Maps the tensors of `spec` from `file`; throws GgufError when a tensor is missing, has the
  // wrong shape, or has a type this runtime cannot compute with.
  StageWeights(const GgufFile& file, const ModelConfig& config, const StageSpec& spec);

  const ModelConfig& config() const { return config_; }
  const StageSpec& spec() const { return spec_; }
  const WeightMatrix& token_embd() const { return token_embd_; }  // valid if has_embedding
  const WeightMatrix& output() const { return output_; }          // valid if has_output
  const PerLayerEmbedding& per_layer_embd() const { return per_layer_embd_; }  // has_embedding, n_embd_per_layer > 0
  const std::vector<float>& output_norm() const { return output_norm_; }
  // The per-dimension RoPE frequency factors (n_rot / 2) for a context of n_ctx tokens, empty if
  // the model has none: Llama 3's rope_freqs, or phi3's LongRoPE factors (the long ones beyond the
  // original context, as llama.cpp chooses).
  const std::vector<float>& rope_factors(int n_ctx) const;
  const LayerWeights& layer(int l) const { return layers_[static_cast<size_t>(l - spec_.first_layer)]; }
  // Bytes of tensor data this stage maps (or mapped, before hold_in_memory()).
  uint64_t mapped_bytes() const;
  // The model file, and the offset in it of a byte of this stage's weights (what a LayerPager reads).
  const std::string& path() const { return path_; }
  uint64_t file_offset(const uint8_t* mapped) const;
  // For a stage that reads the file ranges `paged` ([begin, end), sorted) itself: no readahead
  // around the mapping's faults (it would bring paged bytes into the page cache, which a memory
  // cgroup charges, and under a tight limit evict the resident weights for them), what of them
  // is mapped unmapped (so the page cache can let it go), and the rest of the mapping read in now.
  // REQUIRES: nothing held in memory (hold_in_memory; throws std::logic_error).
  void prepare_for_paging(const std::vector<std::pair<uint64_t, uint64_t>>& paged) const;

  // Moves the matrices a step reads (every layer matrix, the experts, the output head) out of the
  // file's mapping into the process's own memory, on 2 MiB pages (huge_pages.h), and rewrites on
  // the way the dense ones that `kernels` computes faster with interleaved rows (Q4_0 and Q4_K on
  // the x86 tables; interleaved_rows.h) into that layout; except those `keep` says another reader
  // needs where they are (a GPU's). The token embedding, read a row per token, stays mapped
  // (unless the output head is that tensor), and so does every matrix when this process gets no
  // huge pages (then only the interleaved ones move). A stage's weights take the memory they took before: each tensor's file
  // pages leave the mapping and the page cache once copied. The file is not changed. The copies and the permutation are spread
  // over `pool`. Once only; not for a stage that pages (its layers are read from the file again). A failure to get the memory
  // leaves everything mapped (a warning).
  struct HeldBytes {
    uint64_t moved = 0;        // tensor bytes now in the process's memory
    uint64_t interleaved = 0;  // of them, rewritten with interleaved rows
    uint64_t huge = 0;         // the kernel's huge pages under them, as it reports them
  };
  HeldBytes hold_in_memory(const KernelTable& kernels, const std::function<bool(const WeightMatrix&)>& keep, ThreadPool& pool);

 private:
  ModelConfig config_;
  StageSpec spec_;
  std::string path_;
  // A tensor's bytes moved into memory_ (hold_in_memory): where they are, and where the file has them.
  struct MovedSpan {
    const uint8_t* at = nullptr;
    uint64_t bytes = 0;
    uint64_t file_offset = 0;
  };
  // Every matrix of the stage (the experts' first), for moving them.
  std::vector<WeightMatrix*> all_matrices();
  // The dense matrices hold_in_memory() rewrites with interleaved rows.
  std::vector<WeightMatrix*> interleavable_matrices(const KernelTable& kernels,
                                                    const std::function<bool(const WeightMatrix&)>& keep);
  void interleave_in_memory(WeightMatrix& m, ThreadPool& pool);

  std::vector<MappedRegion> regions_;
  HugePageBuffer memory_;  // the weights hold_in_memory() moved
  std::vector<MovedSpan> moved_;
  WeightMatrix token_embd_;
  WeightMatrix output_;
  PerLayerEmbedding per_layer_embd_;
  std::vector<float> output_norm_;
  std::vector<float> rope_freqs_;
  std::vector<float> rope_factors_short_, rope_factors_long_;
  std::vector<LayerWeights> layers_;
};

// Names of the tensors a stage needs, in file order (used by weight streaming and tests).
std::vector<std::string> stage_tensor_names(const GgufFile& file, const ModelConfig& config, const StageSpec& spec);

}  // namespace hearth::runtime
