#pragma once
// The state graph the planner's DP walks (§5.2). A node stands for "these devices
// are used so far and this one holds the last stage"; an edge appends one device.
// Node ids are topologically ordered: successors always have larger ids.
//
// Two spaces are built:
//  - typed_space: every ordered subset of devices, with interchangeable devices
//    (same figures, same links) grouped into types so that 3 identical Pis give
//    4 states instead of 8 (PipeEdge's multiset state). Exact.
//  - ordered_space: devices in one given order, any of them skipped. O(N) nodes;
//    the fast path for many devices. Exact only for that order.

#include <span>
#include <vector>

#include "partitioner/cost_model.h"
#include "partitioner/plan.h"

namespace hearth::partitioner {

struct SearchSpace {
  std::vector<int> group_of_node;        // device group of each node's last stage
  std::vector<int> device_of_node;       // representative device of that group (for costs)
  std::vector<std::vector<int>> next;    // successor nodes
  std::vector<std::vector<int>> groups;  // device indices per group, ascending; groups[0] = {head}
  int start = 0;                         // node of the head alone
  int n_nodes() const { return static_cast<int>(device_of_node.size()); }
};

// A stage found by the DP, before groups are resolved to concrete devices.
struct PathStage {
  int node = 0;
  int first_layer = 0;
  int last_layer = 0;
};

SearchSpace typed_space(const CostModel& cm);
// Nodes typed_space(cm) would have, computed without building it.
double typed_space_nodes(const CostModel& cm);
SearchSpace ordered_space(std::span<const int> order);  // REQUIRES: order[0] is the head (0)

// Upper estimate of DP relaxations (edge x start layer x end layer) of one DP run.
double estimated_relaxations(const SearchSpace& space, int n_layers);

// Resolves groups to devices: the k-th use of a group takes its k-th lowest index,
// so equal plans come out identical (ties break by device index).
std::vector<StageRange> to_ranges(const SearchSpace& space, std::span<const PathStage> path);

}  // namespace hearth::partitioner
