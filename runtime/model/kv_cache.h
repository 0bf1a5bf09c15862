// Keys and values of one sequence for the layers of one stage.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace hearth::runtime {

class KvCache {
 public:
  // Allocates the whole context up front: no allocation happens while tokens are added.
  KvCache(int n_layers, int n_ctx, int kv_dim);

  int n_ctx() const { return n_ctx_; }
  int length() const { return length_; }  // positions [0, length) hold valid entries
  void set_length(int n) { length_ = n; }

  // Row of kv_dim floats for stage-local layer `l` at position `pos`.
  float* k(int l, int pos) { return k_.data() + offset(l, pos); }
  float* v(int l, int pos) { return v_.data() + offset(l, pos); }
  const float* k(int l, int pos) const { return k_.data() + offset(l, pos); }
  const float* v(int l, int pos) const { return v_.data() + offset(l, pos); }
  uint64_t bytes() const { return (k_.size() + v_.size()) * sizeof(float); }

 private:
  size_t offset(int l, int pos) const {
    return (static_cast<size_t>(l) * static_cast<size_t>(n_ctx_) + static_cast<size_t>(pos)) * static_cast<size_t>(kv_dim_);
  }
  int n_ctx_;
  int kv_dim_;
  int length_ = 0;
  std::vector<float> k_;  // [n_layers][n_ctx][kv_dim]
  std::vector<float> v_;  // [n_layers][n_ctx][kv_dim]
};

}  // namespace hearth::runtime
