// What one sequence's caches look like on layers [first, last) of a model: the rows each layer
// keeps (the whole context, or a sliding-window layer's ring), their widths, the recurrent
// states, and so how far back a sequence may go. One place for the stage that allocates them,
// the memory checks that count them and the scheduler that must not rewind past them.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/format/tensor_type.h"
#include "runtime/model/model_config.h"

namespace hearth::runtime {

struct KvLayout {
  int n_ctx = 0;
  std::vector<int> dims;              // elements of a row, per layer (0: no cache of its own)
  std::vector<int> rows;              // rows per layer: n_ctx, or fewer for a ring
  std::vector<int64_t> state_floats;  // recurrent state per layer (0: none)
  // How many positions back from its end a sequence may continue (a chunk at pos < length needs
  // length - pos <= max_rewind, or pos 0): a ring holds max_batch positions more than its window,
  // a recurrent state none; n_ctx when every layer keeps the whole context.
  int max_rewind = 0;
  // Recurrent layers keep, besides their state, the state before a chunk's draft (speculative
  // decoding), and the next chunk may go back to it; how long a draft may be is then bounded by the
  // other layers' rings alone (max_draft; = max_rewind without recurrent layers).
  bool recurrent = false;
  int max_draft = 0;

  // Bytes of one sequence's keys, values and states, in a cache of `type`; with `drafts`, a
  // recurrent layer's state twice (the checkpoint before a draft).
  uint64_t bytes(TensorType type, bool drafts = false) const;
};

// For a stage that takes up to max_batch tokens per step.
KvLayout kv_layout(const ModelConfig& c, int first_layer, int last_layer, int n_ctx, int max_batch);

}  // namespace hearth::runtime
