#include "runtime/model/kv_layout.h"

#include <algorithm>

#include "partitioner/model_spec.h"
#include "runtime/model/kv_rows.h"

namespace hearth::runtime {

uint64_t KvLayout::bytes(TensorType type, bool drafts) const {
  const uint64_t states = drafts ? 2 : 1;
  uint64_t n = 0;
  for (size_t l = 0; l < dims.size(); ++l)
    n += 2 * static_cast<uint64_t>(rows[l]) * kv_row_bytes(type, dims[l]) +
         states * static_cast<uint64_t>(state_floats[l]) * sizeof(float);
  return n;
}

KvLayout kv_layout(const ModelConfig& c, int first_layer, int last_layer, int n_ctx, int max_batch) {
  KvLayout k{.n_ctx = n_ctx, .max_rewind = n_ctx, .max_draft = n_ctx};
  for (int l = first_layer; l < last_layer; ++l) {
    const int rows = partitioner::kv_cache_rows(c.is_swa(l) ? c.n_swa : 0, n_ctx, max_batch);
    k.dims.push_back(c.layer_cache_dim(l));
    k.rows.push_back(rows);
    k.state_floats.push_back(c.is_recurrent(l) ? c.ssm_state_floats() : 0);
    // A layer reading another's cache (Gemma 4's shared KV) is bounded by its source's ring,
    // which has the same window and is on the same stage.
    if (c.is_recurrent(l)) k.recurrent = true;
    else if (rows < n_ctx) k.max_draft = std::min(k.max_draft, rows - c.n_swa);
  }
  k.max_rewind = k.recurrent ? 0 : k.max_draft;
  return k;
}

}  // namespace hearth::runtime
