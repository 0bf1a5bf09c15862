// Keys and values of one sequence for the layers of one stage, and the recurrent state of the
// layers that keep one instead (Qwen 3.5's gated delta-nets).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "runtime/kernels/aligned_vector.h"
#include "runtime/kernels/kernels.h"
#include "runtime/model/kv_rows.h"

namespace hearth::runtime {

class KvCache {
 public:
  // Allocates the whole context up front: no allocation happens while tokens are added. Layer l
  // holds rows of layer_kv_dims[l] elements (layers may differ: Gemma 4's sliding and full
  // layers) of `type` (kv_rows.h: f32, f16 or q8_0): n_ctx rows, or layer_rows[l] when given,
  // and fewer rows than n_ctx make a ring that keeps only the latest positions (a sliding-window
  // layer's; partitioner/model_spec.h's kv_cache_rows says how many it needs).
  KvCache(int n_ctx, const std::vector<int>& layer_kv_dims, const std::vector<int64_t>& layer_state_floats = {},
          TensorType type = TensorType::F32, const std::vector<int>& layer_rows = {});
  // Every layer with rows of kv_dim floats.
  KvCache(int n_layers, int n_ctx, int kv_dim) : KvCache(n_ctx, std::vector<int>(static_cast<size_t>(n_layers), kv_dim)) {}

  int n_ctx() const { return n_ctx_; }
  int length() const { return length_; }  // positions [0, length) hold valid entries
  // The furthest any chunk has reached since the sequence last started at 0: a ring's rows may
  // still hold positions up to there (an earlier, longer turn; a rejected draft), which a chunk
  // going back must not need to read past.
  int reach() const { return reach_; }
  // A chunk of n positions from pos was stored: the sequence now ends there.
  void advance(int pos, int n) {
    length_ = pos + n;
    reach_ = pos == 0 ? length_ : std::max(reach_, length_);
  }
  TensorType type() const { return type_; }

  // Stores the key and value rows of stage-local layer `l` at position `pos`, converted to the
  // cache's type (q8_0 rounds as `k` quantizes activations).
  void store(int l, int pos, const float* key, const float* value, const KernelTable& k);
  // Layer l's rows (a ring when rows(l) < n_ctx).
  KvRows keys(int l) const { return rows_of(k_, l); }
  KvRows values(int l) const { return rows_of(v_, l); }
  int rows(int l) const { return rows_[static_cast<size_t>(l)]; }
  // The recurrent state of stage-local layer `l` (zero for a new sequence).
  float* state(int l) { return state_.data() + state_start_[static_cast<size_t>(l)]; }
  // Back to the state of no tokens (a sequence that starts over).
  void clear_state() { std::fill(state_.begin(), state_.end(), 0.f); }
  bool has_state() const { return !state_.empty(); }

  // A recurrent state cannot take back a rejected draft the way keys and values are overwritten,
  // so a chunk that ends in a draft keeps a checkpoint: every layer's state after the chunk's
  // certain tokens, i.e. at length checkpoint(). Only the next chunk may go back there; a chunk
  // without a draft drops it. (-1: none.)
  int checkpoint() const { return checkpoint_; }
  // The chunk about to run saves the state at length `len` (save_checkpoint, layer by layer).
  void expect_checkpoint(int len);
  void drop_checkpoint() { checkpoint_ = -1; }
  // Layer l has just computed position `pos`: saves its state if that makes the checkpoint's length.
  void save_checkpoint(int l, int pos);
  // Keeps every layer's state as it is now as the checkpoint (a chunk that is all draft, with none).
  void save_checkpoint_now(int len);
  // Every layer's state back to the checkpoint's.
  void restore_checkpoint() { std::copy(saved_.begin(), saved_.end(), state_.begin()); }
  uint64_t bytes() const { return k_.size() + v_.size() + (state_.size() + saved_.size()) * sizeof(float); }

 private:
  KvRows rows_of(const HugePageVector<uint8_t>& half, int l) const;

  int n_ctx_;
  TensorType type_;
  std::vector<int> kv_dims_;
  std::vector<int> rows_;            // of each layer: n_ctx, or a ring's
  std::vector<size_t> row_bytes_;    // of each layer's rows
  std::vector<size_t> layer_start_;  // first byte of each layer's rows
  int length_ = 0;
  int reach_ = 0;
  HugePageVector<uint8_t> k_;  // on 2 MiB pages: attention reads them in short strided pieces
  HugePageVector<uint8_t> v_;
  std::vector<size_t> state_start_;
  std::vector<float> state_;
  std::vector<size_t> state_size_;  // floats of each layer's state
  int checkpoint_ = -1;
  std::vector<float> saved_;  // the checkpoint's states (allocated by the first draft)
};

}  // namespace hearth::runtime
