#include "runtime/model/kv_cache.h"

#include <new>
#include <stdexcept>
#include <string>

namespace hearth::runtime {

namespace {

// Both halves of a conversation's cache, or an error that says what was asked for (a huge
// --ctx used to surface as "std::bad_alloc").
std::vector<float> allocate(size_t n, size_t n_layers, int n_ctx) {
  try {
    return std::vector<float>(n);
  } catch (const std::bad_alloc&) {
    throw std::runtime_error("the KV cache of one conversation (" + std::to_string(n_layers) + " layers x " +
                             std::to_string(n_ctx) + " tokens, " + std::to_string(2 * n * sizeof(float) / 1000000) +
                             " MB) does not fit in this device's memory: use a smaller context (--ctx)");
  }
}

// Floats per half: the sum over layers of n_ctx x kv_dim (each layer's start recorded).
size_t layout(int n_ctx, const std::vector<int>& dims, std::vector<size_t>& starts) {
  size_t n = 0;
  for (int d : dims) {
    starts.push_back(n);
    n += static_cast<size_t>(n_ctx) * static_cast<size_t>(d);
  }
  return n;
}

}  // namespace

KvCache::KvCache(int n_ctx, const std::vector<int>& layer_kv_dims, const std::vector<int64_t>& layer_state_floats)
    : n_ctx_(n_ctx), kv_dims_(layer_kv_dims) {
  const size_t n = layout(n_ctx, kv_dims_, layer_start_);
  k_ = allocate(n, kv_dims_.size(), n_ctx);
  v_ = allocate(n, kv_dims_.size(), n_ctx);
  size_t states = 0;
  for (int64_t f : layer_state_floats) {
    state_start_.push_back(states);
    states += static_cast<size_t>(f);
  }
  state_.assign(states, 0.f);
}

}  // namespace hearth::runtime
