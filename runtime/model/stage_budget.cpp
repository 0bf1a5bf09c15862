#include "runtime/model/stage_budget.h"

#include <stdexcept>
#include <string>

namespace hearth::runtime {

StageBudget budget_stage(const std::shared_ptr<const StageWeights>& weights, const StageOptions& options, uint64_t budget,
                         ThreadPool& pool) {
  StageOptions resident = options;
  resident.offload = nullptr;
  resident.layers = nullptr;
  resident.paging = {};
  // A stage not yet run allocates its buffers but no cache: memory_bytes() counts both.
  StageBudget b{.other_bytes = Stage(weights, resident, pool).memory_bytes(options.max_sequences)};
  if (b.other_bytes >= budget)
    throw std::invalid_argument("a memory budget of " + std::to_string(budget / 1000000) + " MB leaves nothing for the weights: " +
                                "the KV caches and buffers take " + std::to_string(b.other_bytes / 1000000) +
                                " MB; use a smaller context or fewer conversations");
  b.paging = choose_paging(*weights, budget - b.other_bytes);
  return b;
}

}  // namespace hearth::runtime
