#pragma once
// Reference algorithms: brute force (to check the DP) and the splits popular peers
// use (llama.cpp RPC and exo split by memory; distributed-llama splits equally).

#include <optional>
#include <vector>

#include "partitioner/cost_model.h"
#include "partitioner/plan.h"

namespace hearth::partitioner {

inline constexpr long kMaxExhaustivePlans = 5'000'000;  // plans scored before giving up

struct ExhaustiveResult {
  std::optional<std::vector<StageRange>> best;  // nothing when no plan fits memory
  long plans = 0;                               // plans scored
  bool too_large = false;                       // stopped after max_plans
};

// Scores every plan (head first, any subset and order of the other devices, every
// split; the head may hold no blocks) by cm.options().objective and keeps the first
// best in enumeration order (devices by index, shorter head ranges first).
// Refuses up front (too_large) when the plan count ignoring memory exceeds max_plans.
ExhaustiveResult exhaustive_search(const CostModel& cm, long max_plans = kMaxExhaustivePlans);

// Plans the exhaustive search would score if every split fitted memory.
double exhaustive_plan_count(int n_devices, int n_layers);

// All devices in the given order, blocks in proportion to usable memory, assigned
// like llama.cpp's tensor split: block l goes to the first device whose cumulative
// share exceeds l / n_layers. Devices whose share rounds to no blocks drop out
// (the head stays, as a thin stage). Memory limits are not checked.
std::vector<StageRange> memory_split(const CostModel& cm);

// All devices in the given order with equal block counts; the first n_layers % N
// devices take one more. Memory limits are not checked.
std::vector<StageRange> equal_split(const CostModel& cm);

}  // namespace hearth::partitioner
