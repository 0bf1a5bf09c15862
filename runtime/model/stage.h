// A pipeline stage: layers [first, last) of one model, plus the embedding and/or output head.
//
//   auto weights = std::make_shared<StageWeights>(file, config, StageSpec{0, 5, true, true});
//   Stage stage(weights, StageOptions{}, pool);
//   SeqChunk chunk{.seq = 1, .pos = 0, .n_tokens = 5};
//   auto logits = stage.forward({.chunks = {&chunk, 1}, .tokens = prompt_ids});
//
// A batch holds one or more chunks, each a run of consecutive tokens of one sequence (a prompt
// being prefilled, or one decode token). All chunks pass the weights together (one matrix-matrix
// product), then attend to their own sequence's KV cache. Each sequence has its own cache, so
// several conversations can be in progress on one stage.
//
// Hidden states between stages are plain f32 arrays of n_tokens rows of config().hidden_width(boundary)
// (n_embd, plus Gemma 4's per-layer inputs of the layers still to come), so stages [0,2) then
// [2,5) give bit-identical results to one stage [0,5).
//
// Thread safety: one thread calls forward()/release() at a time; the work inside runs on `pool`.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "runtime/kernels/aligned_vector.h"
#include "runtime/kernels/kernels.h"
#include "runtime/model/expert_ffn.h"
#include "runtime/model/kv_cache.h"
#include "runtime/model/kv_layout.h"
#include "runtime/model/layer_offload.h"
#include "runtime/model/layer_pager.h"
#include "runtime/model/matmul.h"
#include "runtime/model/matmul_offload.h"
#include "runtime/kernels/thread_pool.h"
#include "runtime/model/weights.h"

namespace hearth::runtime {

struct StageOptions {
  int n_ctx = 0;           // tokens per sequence; 0 = the model's training context, at most 4096
  int max_batch = 256;     // tokens per forward() call
  int max_sequences = 16;  // sequences holding a KV cache at once
  // What the KV cache stores (kv_rows.h): f32 is what the reference fixtures use, so the library
  // defaults to it; the programs default to f16 (half the memory; the note on issue 15 has the
  // logit differences) and q8_0 needs heads of a multiple of 32.
  TensorType kv_type = TensorType::F32;
  // Where the products of the matrices it holds run (a GPU, runtime/gpu/gpu.h); the rest, and
  // everything else of a layer, run on the CPU. Not owned; must outlive the stage.
  MatmulOffload* offload = nullptr;
  // Where its first layers run whole (a GPU), with their KV caches: [first_layer, layers->end()).
  // Not owned; must outlive the stage.
  LayerOffload* layers = nullptr;
  // Layers whose largest matrices are read from the model file as each pass reaches them, not
  // kept in memory (layer_pager.h); empty: none (lay_out_for_cpu may then move them into memory).
  PagingPlan paging;
  // Chunks may end in drafts (speculative decoding): recurrent layers then keep a second state
  // per sequence, the checkpoint before a draft. memory_bytes() counts it; it is allocated by a
  // sequence's first draft, which works without this too, uncounted.
  bool drafts = false;
};

// A run of consecutive tokens of one sequence within a batch.
struct SeqChunk {
  uint64_t seq = 0;  // caller-chosen sequence id
  int pos = 0;       // position of the first token; must be <= the sequence's current length
                     // (a smaller value rewinds the cache, e.g. to regenerate)
  int n_tokens = 0;
  // Rows of logits the output stage returns for it: its last `logits` tokens (speculative
  // decoding verifies a draft with one row per drafted token, plus one).
  int logits = 1;
  // Its last `drafts` tokens are a draft that may be rejected: recurrent layers keep their state
  // from before them, which the next chunk may go back to. All of the chunk (drafts == n_tokens)
  // continues the draft of the chunk before: the state from before that one stays the one kept
  // (a draft model feeds its own draft a token at a time). The pipeline's chunks have drafts <
  // n_tokens, the last stage checking the draft with the logits of the token before it.
  int drafts = 0;
};

struct StageInput {
  std::span<const SeqChunk> chunks;
  std::span<const int32_t> tokens;  // embedding stage: one id per token of the batch
  std::span<const float> hidden;    // other stages: [n_tokens x config().hidden_width(first_layer)]
  bool all_logits = false;          // output stage: logits for every token, not just each chunk's last rows
};

// Lays `weights` out for this CPU (StageWeights::hold_in_memory) before a Stage with `options`
// runs them: every matrix but those options.offload computes moves to memory on 2 MiB pages,
// the dense ones the kernels read faster interleaved so rewritten. Nothing for a stage that pages
// (options.paging), whose layers are read from the file again, nor for weights larger than
// `weight_room`, what the device's memory leaves them beside the stage's caches and buffers (0:
// not known): moved pages are the process's own, which the kernel cannot drop and read again
// from the file as it does mapped ones, so a stage that does not fit would be killed where it
// was merely slow.
StageWeights::HeldBytes lay_out_for_cpu(StageWeights& weights, const StageOptions& options, uint64_t weight_room,
                                        ThreadPool& pool);

class Stage {
 public:
  Stage(std::shared_ptr<const StageWeights> weights, const StageOptions& options, ThreadPool& pool);

  const StageSpec& spec() const { return weights_->spec(); }
  const ModelConfig& config() const { return weights_->config(); }
  int n_ctx() const { return n_ctx_; }
  int max_batch() const { return options_.max_batch; }
  // How many positions back a sequence may continue (kv_layout.h), counted from the furthest it
  // has reached since it last started at 0 (KvCache::reach).
  int max_rewind() const { return kv_.max_rewind; }
  // Whether a chunk of `seq` may start at `pos` (<= length(seq)) as far as the caches go: at 0,
  // or within max_rewind() of its reach; with recurrent layers at its end or at the checkpoint
  // before the last chunk's draft (KvCache::checkpoint), within the rings' reach (kv_layout.h).
  bool can_continue(uint64_t seq, int pos) const;
  // The length at which `seq`'s recurrent layers kept their state before its draft; -1: none.
  int checkpoint(uint64_t seq) const;

  // Runs the batch through this stage's layers. Returns hidden states [n_tokens x hidden_width(last_layer)], or on
  // the output stage logits [rows x n_vocab] (rows: each chunk's `logits`, in order, or every token
  // with all_logits). The span
  // stays valid until the next call. Throws std::invalid_argument, before changing any state,
  // when the input is inconsistent (bad ids, sizes, positions, too many tokens or sequences).
  std::span<const float> forward(const StageInput& input);

  // Frees a sequence's KV cache. Unknown ids are ignored.
  void release(uint64_t seq);
  // Tokens held for `seq` (0 if unknown).
  int length(uint64_t seq) const;
  size_t n_sequences() const { return caches_.size(); }
  // Bytes of weight matrices forward() has read so far: each matrix once per call, and of a
  // MoE layer's experts only those some token chose (what a benchmark divides by its time).
  uint64_t weight_bytes_read() const { return dense_bytes_read_ + (experts_ ? experts_->bytes_read() : 0); }
  const KernelTable& kernels() const { return kernels_; }
  // Memory the stage holds besides its weights when n_sequences caches are full: its buffers,
  // and a KV cache (n_ctx rows, a sliding-window layer's ring) and recurrent states (two with
  // StageOptions::drafts) per sequence. What a budget subtracts before it decides what of the
  // weights must be paged.
  uint64_t memory_bytes(int n_sequences) const;
  // What paging read from storage, and how much of it the stage waited for (null: no paging).
  const LayerPager* pager() const { return pager_.get(); }
  // Why StageOptions::layers could not take the layers it offered (its caches did not fit...);
  // empty when it did or none was offered.
  const std::string& layers_refused() const { return layers_refused_; }

 private:
  int validate(const StageInput& in) const;
  static void keep_checkpoint(KvCache& kc, const SeqChunk& ch);
  void embed(const StageInput& in, int n_tokens);
  void attention(int layer, int n_tokens);
  // w: layer l's weights (its paged matrices in the pager's buffer).
  void layer_forward(int l, const LayerWeights& w, int n_tokens);
  void delta_net_forward(int l, const LayerWeights& w, int n_tokens);  // into tmp_
  void ffn_forward(const LayerWeights& w, int n_tokens);                // the residual FFN half of a layer
  void per_layer_inputs(const StageInput& in, int n_tokens);            // into ple_ (first stage, Gemma 4 E2B/E4B)
  void per_layer_forward(int l, const LayerWeights& w, int n_tokens);   // layer l's per-layer input, added to x_
  void finish_layer(int l, const LayerWeights& w, int n_tokens);        // the FFN, the per-layer input, the output scale
  // Hidden states from or for another stage: the stream in x_, then the per-layer inputs of
  // layers [boundary, n_layer) in ple_.
  void read_hidden(std::span<const float> hidden, int n_tokens);
  std::span<const float> write_hidden(int n_tokens);
  void shared_expert_forward(const LayerWeights& w, int n_tokens);      // added into tmp_
  void dense_and_experts_forward(const LayerWeights& w, int n_tokens);  // Gemma 4 26B-A4B's FFN, into tmp_
  std::span<const float> output_head(const StageInput& in, int n_tokens);
  // The products of a layer: on options_.offload when it holds every weight, else on the CPU.
  void project(std::span<const MatmulTarget> targets, const float* x, int n_tokens);
  void project(const WeightMatrix& w, const float* x, int n_tokens, float* y);
  void project_gated(const WeightMatrix& gate, const WeightMatrix& up, const float* x, int n_tokens, FfnActivation activation);

  std::shared_ptr<const StageWeights> weights_;
  StageOptions options_;
  ThreadPool& pool_;
  const KernelTable& kernels_;
  int n_ctx_;
  RopeSpec rope_;                           // how full layers rotate
  RopeSpec rope_swa_;                       // and sliding-window layers (Gemma: own base, no scaling)
  AlignedVector<float> rope_cos_, rope_sin_;  // (n_rot / 2), angles of one position
  KvLayout kv_;                             // of each sequence's caches on this stage's layers
  bool recurrent_ = false;                  // some layer keeps a recurrent state
  AlignedVector<float> q_gate_;             // Qwen 3.5: the query projection with its gates
  AlignedVector<float> shexp_out_;          // Qwen 3.5 MoE: the shared expert's output; Gemma 4's experts'
  AlignedVector<float> router_in_;          // Gemma 4 26B-A4B: what its router reads
  AlignedVector<float> ssm_qkv_, ssm_z_, ssm_beta_, ssm_alpha_, ssm_y_, ssm_scratch_;  // gated delta-net
  AlignedVector<float> v_norm_ones_;  // the weight of a norm without one (Gemma 4's V)
  // Per-layer embeddings: every layer's inputs, (max_batch, n_layer, n_embd_per_layer); a row's
  // gated input; one token's row of the table; the hidden states a stage hands on with them.
  AlignedVector<float> ple_, ple_gate_, ple_row_, hidden_out_;
  std::map<uint64_t, KvCache> caches_;
  // options_.layers: each sequence's cache slot there, and a batch's positions, slots and RoPE
  // angles for it.
  std::map<uint64_t, int> slots_;
  std::vector<int> offload_pos_, offload_slot_;
  std::string layers_refused_;
  uint64_t layers_token_ = 0;  // options_.layers' for this stage
  AlignedVector<float> offload_rope_;
  void offload_layers(int n_tokens);

  // Working buffers, sized for max_batch tokens at construction.
  MatmulScratch scratch_;
  AlignedVector<float> x_, xn_, q_, k_, v_, attn_, gate_, up_, tmp_;
  // Attention's tokens at a time per sequence (a prompt chunk's), and its buffers for them.
  static constexpr int kTokenBlock = 8;
  AlignedVector<float> scores_;   // (n_head, kTokenBlock, n_ctx)
  AlignedVector<float> qpack_;    // (n_head, kTokenBlock, head_dim)
  AlignedVector<float> inv_;      // (n_head, kTokenBlock): the softmax's 1 / sums
  AlignedVector<float> kv_tile_;  // (tasks, kKvTileFloats): cached rows read as f32 (not for f32 caches)
  std::vector<KvCache*> row_cache_;
  std::vector<int> row_pos_;
  std::vector<uint64_t> row_seq_;
  AlignedVector<float> logits_;
  std::optional<ExpertFfn> experts_;  // MoE models
  std::unique_ptr<LayerPager> pager_;  // when options_.paging pages some layer
  uint64_t step_bytes_ = 0;           // matrices every forward() reads (all but the experts)
  uint64_t dense_bytes_read_ = 0;
};

}  // namespace hearth::runtime
