#pragma once
// Checks and predictions for any plan, including hand-written splits (`--split`):
//   auto plan = assemble_plan(spec, devices, links, options, ranges);
//   for (auto& problem : validate_plan(spec, devices, options, plan)) ...
// Pure functions; thread-safe.

#include <span>
#include <string>
#include <vector>

#include "partitioner/cost_model.h"
#include "partitioner/plan.h"

namespace hearth::partitioner {

// Problems with planner inputs (empty device list, non-positive sizes, rates or
// options, links to unknown devices); empty when the inputs are usable.
std::vector<std::string> validate_inputs(const ModelSpec& spec, std::span<const DeviceProfile> devices, const LinkTable& links,
                                         const PartitionOptions& options);

// Turns stage ranges into a full plan: per-stage memory, headroom and times, the
// prediction, and reasons for every device left out.
// REQUIRES: validate_inputs() is empty and validate_ranges() is empty.
PartitionPlan assemble_plan(const ModelSpec& spec, std::span<const DeviceProfile> devices, const LinkTable& links,
                            const PartitionOptions& options, std::span<const StageRange> ranges);
PartitionPlan assemble_plan(const CostModel& cm, std::span<const StageRange> ranges);

// Predicted figures of a plan from its stages' devices and layer ranges (other
// fields are ignored). Returns an all-zero Prediction when the plan's structure is
// invalid (see validate_plan); a plan that overflows memory is still evaluated.
Prediction evaluate_plan(const ModelSpec& spec, std::span<const DeviceProfile> devices, const LinkTable& links,
                         const PartitionOptions& options, const PartitionPlan& plan);

// Structural problems of stage ranges: head first, devices distinct and known,
// blocks [0, n_layers) covered once, contiguous and in order, only the head empty.
std::vector<std::string> validate_ranges(int n_layers, int n_devices, std::span<const StageRange> ranges);

// validate_ranges() plus embedding/LM-head flags and each stage's memory against
// its device's usable memory (recomputed, not read from the plan). Empty = valid.
std::vector<std::string> validate_plan(const ModelSpec& spec, std::span<const DeviceProfile> devices,
                                       const PartitionOptions& options, const PartitionPlan& plan);

std::vector<StageRange> ranges_of(const PartitionPlan& plan);

}  // namespace hearth::partitioner
