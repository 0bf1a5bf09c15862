#include "partitioner/search_space.h"

namespace hearth::partitioner {

namespace {

bool same_link(const Link& a, const Link& b) {
  return a.bandwidth_bytes_per_s == b.bandwidth_bytes_per_s && a.latency_s == b.latency_s;
}

// True when swapping devices a and b changes no cost: same figures, and every
// link to or from a third device (and between the two) looks the same.
bool interchangeable(const CostModel& cm, int a, int b) {
  if (!same_figures(cm.devices()[a], cm.devices()[b])) return false;
  const LinkTable& links = cm.links();
  if (!same_link(links.between(a, b), links.between(b, a))) return false;
  for (int x = 0; x < cm.n_devices(); ++x) {
    if (x == a || x == b) continue;
    if (!same_link(links.between(a, x), links.between(b, x))) return false;
    if (!same_link(links.between(x, a), links.between(x, b))) return false;
  }
  return true;
}

// Groups devices 1..N-1 greedily; a device joins a group only if it is
// interchangeable with every member, so any permutation inside a group is a symmetry.
std::vector<std::vector<int>> device_groups(const CostModel& cm) {
  std::vector<std::vector<int>> groups{{0}};
  for (int d = 1; d < cm.n_devices(); ++d) {
    bool placed = false;
    for (size_t g = 1; g < groups.size() && !placed; ++g) {
      bool all = true;
      for (int member : groups[g]) all = all && interchangeable(cm, member, d);
      if (all) {
        groups[g].push_back(d);
        placed = true;
      }
    }
    if (!placed) groups.push_back({d});
  }
  return groups;
}

}  // namespace

// Node id = counts_index x (T + 1) + last_group, where counts_index encodes how many
// devices of each group 1..T are used (mixed radix). Adding a device adds a stride,
// so successors have larger ids.
SearchSpace typed_space(const CostModel& cm) {
  SearchSpace space;
  space.groups = device_groups(cm);
  const int n_types = static_cast<int>(space.groups.size());  // T + 1, head included
  std::vector<long> stride(n_types, 0);
  long n_counts = 1;
  for (int t = 1; t < n_types; ++t) {
    stride[t] = n_counts;
    n_counts *= static_cast<long>(space.groups[t].size()) + 1;
  }
  const long n_nodes = n_counts * n_types;
  space.group_of_node.resize(n_nodes);
  space.device_of_node.resize(n_nodes);
  space.next.resize(n_nodes);
  for (long ci = 0; ci < n_counts; ++ci) {
    for (int last = 0; last < n_types; ++last) {
      const long node = ci * n_types + last;
      space.group_of_node[node] = last;
      space.device_of_node[node] = space.groups[last][0];
      auto count = [&](int t) { return (ci / stride[t]) % (long(space.groups[t].size()) + 1); };
      const bool valid = last == 0 ? ci == 0 : count(last) >= 1;
      if (!valid) continue;
      for (int t = 1; t < n_types; ++t)
        if (count(t) < long(space.groups[t].size())) space.next[node].push_back(static_cast<int>((ci + stride[t]) * n_types + t));
    }
  }
  space.start = 0;
  return space;
}

double typed_space_nodes(const CostModel& cm) {
  const std::vector<std::vector<int>> groups = device_groups(cm);
  double n = static_cast<double>(groups.size());
  for (size_t t = 1; t < groups.size(); ++t) n *= static_cast<double>(groups[t].size()) + 1;
  return n;
}

SearchSpace ordered_space(std::span<const int> order) {
  SearchSpace space;
  const int n = static_cast<int>(order.size());
  for (int s = 0; s < n; ++s) {
    space.groups.push_back({order[s]});
    space.group_of_node.push_back(s);
    space.device_of_node.push_back(order[s]);
    std::vector<int> next;
    for (int t = s + 1; t < n; ++t) next.push_back(t);
    space.next.push_back(std::move(next));
  }
  space.start = 0;
  return space;
}

double estimated_relaxations(const SearchSpace& space, int n_layers) {
  double edges = 0;
  for (const std::vector<int>& next : space.next) edges += static_cast<double>(next.size());
  return edges * n_layers * (n_layers + 1) / 2.0;
}

std::vector<StageRange> to_ranges(const SearchSpace& space, std::span<const PathStage> path) {
  std::vector<int> used(space.groups.size(), 0);
  std::vector<StageRange> ranges;
  for (const PathStage& p : path) {
    const int g = space.group_of_node[p.node];
    ranges.push_back({space.groups[g][used[g]++], p.first_layer, p.last_layer});
  }
  return ranges;
}

}  // namespace hearth::partitioner
