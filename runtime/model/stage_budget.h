// What of a stage's weights must be paged (layer_pager.h) for the stage to stay within a memory
// budget: its KV caches and buffers first, then the weights that fit.
#pragma once

#include <cstdint>
#include <memory>

#include "runtime/kernels/thread_pool.h"
#include "runtime/model/layer_pager.h"
#include "runtime/model/stage.h"

namespace hearth::runtime {

struct StageBudget {
  PagingPlan paging;        // empty: everything fits
  uint64_t other_bytes = 0;  // KV caches (options.max_sequences of them, full) and buffers
};

// Throws std::invalid_argument saying what takes the memory when the caches and buffers alone
// exceed `budget`, or even paging every layer's matrices cannot fit it.
StageBudget budget_stage(const std::shared_ptr<const StageWeights>& weights, const StageOptions& options, uint64_t budget,
                         ThreadPool& pool);

}  // namespace hearth::runtime
