#include "runtime/model/kv_cache.h"

namespace hearth::runtime {

KvCache::KvCache(int n_layers, int n_ctx, int kv_dim)
    : n_ctx_(n_ctx),
      kv_dim_(kv_dim),
      k_(static_cast<size_t>(n_layers) * static_cast<size_t>(n_ctx) * static_cast<size_t>(kv_dim)),
      v_(k_.size()) {}

}  // namespace hearth::runtime
