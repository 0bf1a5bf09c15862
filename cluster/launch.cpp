#include "cluster/launch.h"

#include <algorithm>
#include <sstream>
#include <stdexcept>

namespace hearth::cluster {

const char* to_string(LaunchState s) {
  switch (s) {
    case LaunchState::kStaging: return "staging";
    case LaunchState::kLoading: return "loading";
    case LaunchState::kReady: return "ready";
    case LaunchState::kWaitingForDevice: return "waiting for a device";
    case LaunchState::kFailed: return "failed";
  }
  return "unknown";
}

bool can_move(LaunchState from, LaunchState to) {
  using S = LaunchState;
  switch (from) {
    case S::kStaging: return to == S::kLoading || to == S::kFailed;
    case S::kLoading: return to == S::kReady || to == S::kWaitingForDevice || to == S::kFailed;
    case S::kReady: return to == S::kLoading || to == S::kWaitingForDevice || to == S::kFailed;
    case S::kWaitingForDevice: return to == S::kLoading || to == S::kWaitingForDevice || to == S::kFailed;
    case S::kFailed: return false;
  }
  return false;
}

void LaunchedPlan::move_to(LaunchState to) {
  if (!can_move(state_, to))
    throw std::logic_error(std::string("launch: no transition from ") + to_string(state_) + " to " + to_string(to));
  state_ = to;
}

bool LaunchedPlan::staged_everywhere() const {
  return !stages.empty() &&
         std::all_of(stages.begin(), stages.end(), [](const PlannedStage& s) { return s.state == StageState::kStaged; });
}

const char* to_string(StageState s) {
  switch (s) {
    case StageState::kAssigned: return "assigned";
    case StageState::kReceiving: return "receiving";
    case StageState::kStaged: return "staged";
    case StageState::kLoading: return "loading";
    case StageState::kReady: return "ready";
    case StageState::kFailed: return "failed";
  }
  return "unknown";
}

std::vector<std::pair<std::string, int>> parse_split(const std::string& text) {
  std::vector<std::pair<std::string, int>> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    const size_t colon = item.rfind(':');
    if (colon == std::string::npos || colon == 0)
      throw Failure(ErrorCategory::BAD_REQUEST, "--split entry '" + item + "' is not NAME:LAYERS");
    int n = -1;
    try {
      n = std::stoi(item.substr(colon + 1));
    } catch (const std::exception&) {
    }
    if (n < 0) throw Failure(ErrorCategory::BAD_REQUEST, "--split entry '" + item + "' has an invalid layer count");
    out.emplace_back(item.substr(0, colon), n);
  }
  if (out.empty()) throw Failure(ErrorCategory::BAD_REQUEST, "--split is empty");
  return out;
}

std::vector<partitioner::DeviceProfile> profiles_of(const std::vector<const Device*>& devices) {
  std::vector<partitioner::DeviceProfile> profiles;
  for (const Device* d : devices) profiles.push_back(d->profile);
  return profiles;
}

void carry_choices(const LaunchedPlan& from, LaunchedPlan& to) {
  to.options = from.options;
  to.wire_type = from.wire_type;
  to.draft = from.draft;
  to.draft_max = from.draft_max;
  to.draft_bytes = from.draft_bytes;
  to.partition = from.partition;
  to.wanted = from.wanted;
  to.events = from.events;
}

std::vector<std::pair<int, int>> fallback_sizes(int ctx, int streams) {
  std::vector<std::pair<int, int>> sizes;
  for (int k = streams; k >= 1; k /= 2) sizes.emplace_back(ctx, k);
  for (int c = ctx / 2; c >= 256; c /= 2) sizes.emplace_back(c, 1);
  return sizes;
}

partitioner::PartitionPlan plan_by_planner(const partitioner::ModelSpec& spec, const std::vector<const Device*>& devices,
                                           const partitioner::LinkTable& links, const partitioner::PartitionOptions& options) {
  const partitioner::PlanResult result = partitioner::plan_partition(spec, profiles_of(devices), links, options);
  if (!result.ok()) throw Failure(ErrorCategory::NO_CAPACITY, result.error.message);
  return *result.plan;
}

partitioner::PartitionPlan plan_by_split(const std::string& split, const partitioner::ModelSpec& spec,
                                         const std::vector<const Device*>& devices, const partitioner::LinkTable& links,
                                         const partitioner::PartitionOptions& options) {
  const std::vector<partitioner::DeviceProfile> profiles = profiles_of(devices);
  std::vector<partitioner::StageRange> ranges;
  int layer = 0;
  for (const auto& [name, count] : parse_split(split)) {
    int index = -1;
    for (size_t i = 0; i < devices.size(); ++i)
      if (devices[i]->profile.name == name || (i == 0 && name == "head")) index = static_cast<int>(i);
    if (index < 0) throw Failure(ErrorCategory::NOT_FOUND, "--split names '" + name + "', which is not a live device");
    ranges.push_back({index, layer, layer + count});
    layer += count;
  }
  for (const auto& problem : partitioner::validate_ranges(spec.n_layers, static_cast<int>(profiles.size()), ranges))
    throw Failure(ErrorCategory::BAD_REQUEST, "--split: " + problem);
  partitioner::PartitionPlan plan = partitioner::assemble_plan(spec, profiles, links, options, ranges);
  const auto problems = partitioner::validate_plan(spec, profiles, options, plan);
  if (!problems.empty()) throw Failure(ErrorCategory::NO_CAPACITY, "--split does not fit: " + problems.front());
  return plan;
}

}  // namespace hearth::cluster
