// Keys and values of one sequence for the layers of one stage.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace hearth::runtime {

class KvCache {
 public:
  // Allocates the whole context up front: no allocation happens while tokens are added. Layer l
  // holds rows of layer_kv_dims[l] floats (layers may differ: Gemma 4's sliding and full layers).
  KvCache(int n_ctx, const std::vector<int>& layer_kv_dims);
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
  uint64_t bytes() const { return (k_.size() + v_.size()) * sizeof(float); }

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
};

}  // namespace hearth::runtime
