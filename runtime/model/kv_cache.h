// Keys and values of one sequence for the layers of one stage, and the recurrent state of the
// layers that keep one instead (Qwen 3.5's gated delta-nets).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace hearth::runtime {

class KvCache {
 public:
  // Allocates the whole context up front: no allocation happens while tokens are added. Layer l
  // holds rows of layer_kv_dims[l] floats (layers may differ: Gemma 4's sliding and full layers).
  KvCache(int n_ctx, const std::vector<int>& layer_kv_dims, const std::vector<int64_t>& layer_state_floats = {});
  // Every layer with rows of kv_dim floats.
  KvCache(int n_layers, int n_ctx, int kv_dim) : KvCache(n_ctx, std::vector<int>(static_cast<size_t>(n_layers), kv_dim)) {}

  int n_ctx() const { return n_ctx_; }
  int length() const { return length_; }  // positions [0, length) hold valid entries
  void set_length(int n) { length_ = n; }

  // Row of stage-local layer `l` at position `pos`.
  float* k(int l, int pos) { return k_.data() + offset(l, pos); }
  float* v(int l, int pos) { return v_.data() + offset(l, pos); }
  const float* k(int l, int pos) const { return k_.data() + offset(l, pos); }
  const float* v(int l, int pos) const { return v_.data() + offset(l, pos); }
  // The recurrent state of stage-local layer `l` (zero for a new sequence).
  float* state(int l) { return state_.data() + state_start_[static_cast<size_t>(l)]; }
  // Back to the state of no tokens (a sequence that starts over).
  void clear_state() { std::fill(state_.begin(), state_.end(), 0.f); }
  bool has_state() const { return !state_.empty(); }
  uint64_t bytes() const { return (k_.size() + v_.size() + state_.size()) * sizeof(float); }

 private:
  size_t offset(int l, int pos) const {
    const auto layer = static_cast<size_t>(l);
    return layer_start_[layer] + static_cast<size_t>(pos) * static_cast<size_t>(kv_dims_[layer]);
  }
  int n_ctx_;
  std::vector<int> kv_dims_;
  std::vector<size_t> layer_start_;  // first float of each layer's [n_ctx][kv_dim] rows
  int length_ = 0;
  std::vector<float> k_;
  std::vector<float> v_;
  std::vector<size_t> state_start_;
  std::vector<float> state_;
};

}  // namespace hearth::runtime
