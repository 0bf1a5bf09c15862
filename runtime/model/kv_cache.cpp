#include "runtime/model/kv_cache.h"

#include <new>
#include <stdexcept>
#include <string>

namespace hearth::runtime {

namespace {

// Both halves of a conversation's cache, or an error that says what was asked for (a huge
// --ctx used to surface as "std::bad_alloc").
std::vector<float> allocate(int n_layers, int n_ctx, int kv_dim) {
  const size_t n = static_cast<size_t>(n_layers) * static_cast<size_t>(n_ctx) * static_cast<size_t>(kv_dim);
  try {
    return std::vector<float>(n);
  } catch (const std::bad_alloc&) {
    throw std::runtime_error("the KV cache of one conversation (" + std::to_string(n_layers) + " layers x " +
                             std::to_string(n_ctx) + " tokens x " + std::to_string(kv_dim) + " values, " +
                             std::to_string(2 * n * sizeof(float) / 1000000) +
                             " MB) does not fit in this device's memory: use a smaller context (--ctx)");
  }
}

}  // namespace

KvCache::KvCache(int n_layers, int n_ctx, int kv_dim)
    : n_ctx_(n_ctx), kv_dim_(kv_dim), k_(allocate(n_layers, n_ctx, kv_dim)), v_(allocate(n_layers, n_ctx, kv_dim)) {}

}  // namespace hearth::runtime
