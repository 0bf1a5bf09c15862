#include "partitioner/planner.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "partitioner/baselines.h"
#include "partitioner/dp_search.h"
#include "partitioner/evaluate.h"
#include "partitioner/explain.h"
#include "partitioner/metrics.h"
#include "partitioner/search_space.h"

namespace hearth::partitioner {

namespace {

constexpr int kExactFrontCap = 4096;   // Pareto labels per DP cell before ttft stops being exact
constexpr int kFastFrontCap = 4;       // the same on the fast path (as good as 16 on 8-24 devices, 4x faster)
constexpr double kMaxDpCells = 2.5e6;  // DP cells (node x end block) the exact search may allocate (~40 MB)
constexpr int kLocalSearchPasses = 3;  // adjacent-swap passes over the best order on the fast path
// Sizing the exact search (calibrated on 6-10 devices x 80 blocks, where the
// estimate overshoots the real work 5-20x): period-capped runs mostly stop early,
// ttft labels carry K chunk times and fronts hold a few labels.
constexpr double kThroughputRunsPerBatch = 4;
constexpr double kTtftLabelsPerCell = 4;

struct Found {
  std::vector<StageRange> ranges;
  PlanScore score;
};

struct SearchOutcome {
  std::optional<Found> best;
  bool exact = true;
};

void keep_better(const CostModel& cm, const SearchSpace& space, const std::optional<DpResult>& r, SearchOutcome& out) {
  if (!r) return;
  out.exact = out.exact && r->exact;
  Found f{to_ranges(space, r->path), {}};
  f.score = score(cm, f.ranges, cm.options().objective);
  if (!out.best || better(f.score, out.best->score)) out.best = std::move(f);
}

// ---- throughput: threshold search on the period (§5.3) ----

// Every value the period Phi(m) of some plan can take: each device's stage times
// over every block range that fits, and every hop. Phi of any plan is one of them.
std::vector<double> period_thresholds(const CostModel& cm, const SearchSpace& space, int mi) {
  std::vector<int> devices(space.device_of_node);
  std::sort(devices.begin(), devices.end());
  devices.erase(std::unique(devices.begin(), devices.end()), devices.end());
  const int n_layers = cm.n_layers(), head = space.device_of_node[space.start];
  const int m = cm.micro_batches()[mi];
  std::vector<double> t;
  for (int d : devices) {
    for (int first = 0; first < n_layers; ++first) {
      for (int last = first + (d == head && first == 0 ? 0 : 1); last <= n_layers; ++last) {
        if (!cm.fits(d, first, last, d == head && first == 0, last == n_layers)) break;
        t.push_back(cm.decode_time_at(mi, d, first, last, last == n_layers));
      }
    }
  }
  // Hops between any two devices, same group included, at every boundary a stage may start at
  // (they differ only where the rows carry per-layer inputs).
  const bool widths_differ = cm.spec().n_embd_per_layer > 0;
  for (int d = 0; d < cm.n_devices(); ++d) {
    for (int e = 0; e < cm.n_devices(); ++e) {
      if (!widths_differ) t.push_back(cm.activation_hop_time(d, e, m, n_layers));
      for (int b = 1; widths_differ && b < n_layers; ++b)
        if (can_cut(cm.spec(), b)) t.push_back(cm.activation_hop_time(d, e, m, b));
    }
    t.push_back(cm.hop_time(d, head, m * kTokenIdBytes));
  }
  std::sort(t.begin(), t.end());
  t.erase(std::unique(t.begin(), t.end()), t.end());
  return t;
}

// Best plans for X(m) = min(B/R, B/(G Phi)). With f(theta) = B / minR(theta) rising
// and B/(G theta) falling in theta, the optimum sits where they cross: binary-search
// the first threshold with minR(theta) <= G theta, then try it and its predecessor.
void search_throughput_at(const CostModel& cm, const SearchSpace& space, int mi, SearchOutcome& out) {
  const double g = std::ceil(double(std::max(1, cm.options().streams)) / cm.throughput_streams(mi));
  if (g <= 1) return keep_better(cm, space, min_ring_time(cm, space, mi, kNoLimit), out);
  const std::vector<double> thresholds = period_thresholds(cm, space, mi);
  std::map<int, std::optional<DpResult>> cache;
  auto run = [&](int k) -> const std::optional<DpResult>& {
    auto it = cache.find(k);
    if (it == cache.end()) it = cache.emplace(k, min_ring_time(cm, space, mi, thresholds[k])).first;
    return it->second;
  };
  int lo = 0, hi = static_cast<int>(thresholds.size());
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    const std::optional<DpResult>& r = run(mid);
    if (r && r->value <= g * thresholds[mid]) hi = mid;
    else lo = mid + 1;
  }
  if (lo < static_cast<int>(thresholds.size())) keep_better(cm, space, run(lo), out);
  if (lo > 0) keep_better(cm, space, run(lo - 1), out);
}

SearchOutcome search_space(const CostModel& cm, const SearchSpace& space, int front_cap) {
  SearchOutcome out;
  switch (cm.options().objective) {
    case Objective::latency:
      keep_better(cm, space, min_ring_time(cm, space, cm.micro_batch_index(cm.latency_rows()), kNoLimit), out);
      break;
    case Objective::throughput:
      for (int mi = 0; mi < static_cast<int>(cm.micro_batches().size()); ++mi)
        if (cm.throughput_streams(mi) > 0) search_throughput_at(cm, space, mi, out);
      break;
    case Objective::ttft:
      for (int s = 0; s < static_cast<int>(cm.chunk_schedules().size()); ++s)
        keep_better(cm, space, min_ttft(cm, space, s, front_cap), out);
      break;
  }
  return out;
}

// DP runs one search needs, to size the work before choosing the exact path.
double dp_runs(const CostModel& cm) {
  switch (cm.options().objective) {
    case Objective::latency: return 1;
    case Objective::throughput: {  // ~log2(thresholds) runs per m, most of them cut short by the cap
      double candidates = 0;
      for (int mi = 0; mi < static_cast<int>(cm.micro_batches().size()); ++mi) candidates += cm.throughput_streams(mi) > 0;
      return candidates * kThroughputRunsPerBatch;
    }
    case Objective::ttft: {
      double chunks = 0;  // a label costs a pass over its chunks; fronts hold several labels
      for (const auto& s : cm.chunk_schedules()) chunks += kTtftLabelsPerCell * static_cast<double>(s.size());
      return chunks;
    }
  }
  return 1;
}

bool exact_search_affordable(const CostModel& cm) {
  const double nodes = typed_space_nodes(cm);
  const double work = nodes * (cm.n_devices() - 1) * cm.n_layers() * (cm.n_layers() + 1) / 2 * dp_runs(cm);
  return nodes * (cm.n_layers() + 1) <= kMaxDpCells && work <= cm.options().exact_work_limit;
}

// ---- fast path: fixed orders with skipping (§5.5) ----

std::vector<std::vector<int>> seed_orders(const CostModel& cm) {
  std::vector<int> others(cm.n_devices() - 1);
  std::iota(others.begin(), others.end(), 1);
  auto with_head = [](std::vector<int> rest) {
    rest.insert(rest.begin(), 0);
    return rest;
  };
  std::vector<std::vector<int>> orders{with_head(others)};
  std::vector<int> by_speed = others;  // fastest full-model decode first
  std::stable_sort(by_speed.begin(), by_speed.end(), [&](int a, int b) {
    return cm.decode_time(a, 0, cm.n_layers(), false, 1) < cm.decode_time(b, 0, cm.n_layers(), false, 1);
  });
  orders.push_back(with_head(by_speed));
  std::vector<int> by_memory = others;  // roomiest first
  std::stable_sort(by_memory.begin(), by_memory.end(),
                   [&](int a, int b) { return cm.devices()[a].usable_memory_bytes > cm.devices()[b].usable_memory_bytes; });
  orders.push_back(with_head(by_memory));
  std::vector<int> nearest{0}, left = others;  // nearest neighbour on one token's hop time (its narrowest row)
  const int n_layers = cm.n_layers();
  while (!left.empty()) {
    auto it = std::min_element(left.begin(), left.end(), [&](int a, int b) {
      return cm.activation_hop_time(nearest.back(), a, 1, n_layers) < cm.activation_hop_time(nearest.back(), b, 1, n_layers);
    });
    nearest.push_back(*it);
    left.erase(it);
  }
  orders.push_back(nearest);
  std::sort(orders.begin(), orders.end());
  orders.erase(std::unique(orders.begin(), orders.end()), orders.end());
  return orders;
}

SearchOutcome search_order(const CostModel& cm, const std::vector<int>& order) {
  return search_space(cm, ordered_space(order), kFastFrontCap);
}

// Best of the seed orders, then (for latency, where one order costs one DP run)
// adjacent swaps while they help. Not exact: orders outside this neighbourhood are never tried.
std::optional<Found> fast_search(const CostModel& cm) {
  std::optional<Found> best;
  std::vector<int> best_order;
  for (const std::vector<int>& order : seed_orders(cm)) {
    SearchOutcome o = search_order(cm, order);
    if (o.best && (!best || better(o.best->score, best->score))) {
      best = o.best;
      best_order = order;
    }
  }
  if (!best || cm.options().objective != Objective::latency) return best;
  for (int pass = 0; pass < kLocalSearchPasses; ++pass) {
    bool improved = false;
    for (size_t p = 1; p + 1 < best_order.size(); ++p) {
      std::vector<int> order = best_order;
      std::swap(order[p], order[p + 1]);
      SearchOutcome o = search_order(cm, order);
      if (o.best && better(o.best->score, best->score)) {
        best = o.best;
        best_order = order;
        improved = true;
      }
    }
    if (!improved) break;
  }
  return best;
}

// ---- algorithms ----

PlanResult failure(Infeasible e) { return {std::nullopt, std::move(e)}; }

PlanResult success(const CostModel& cm, const std::vector<StageRange>& ranges, bool exact) {
  PartitionPlan plan = assemble_plan(cm, ranges);
  plan.exact = exact;
  return {std::move(plan), {}};
}

PlanResult run_dp(const CostModel& cm) {
  if (exact_search_affordable(cm)) {
    SearchOutcome o = search_space(cm, typed_space(cm), kExactFrontCap);
    if (!o.best) return failure(diagnose_infeasible(cm));
    return success(cm, o.best->ranges, o.exact);
  }
  std::optional<Found> f = fast_search(cm);
  if (!f) return failure(diagnose_infeasible(cm));
  return success(cm, f->ranges, false);
}

PlanResult run_exhaustive(const CostModel& cm) {
  ExhaustiveResult r = exhaustive_search(cm);
  if (r.too_large)
    return failure({Infeasibility::too_large,
                    "exhaustive search would score more than " + std::to_string(kMaxExhaustivePlans) +
                        " plans; use the dp algorithm for this many devices and blocks",
                    0});
  if (!r.best) return failure(diagnose_infeasible(cm));
  return success(cm, *r.best, true);
}

PlanResult run_baseline(const CostModel& cm, const std::vector<StageRange>& ranges, std::string_view what) {
  for (const StageRange& r : ranges)
    if (!can_cut(cm.spec(), r.first_layer))
      return failure({Infeasibility::invalid_input,
                      std::string(what) + " starts a stage at layer " + std::to_string(r.first_layer) +
                          ", whose layers read the KV cache of an earlier layer: use the dp planner",
                      0});
  std::vector<Infeasible> overflows = memory_overflows(cm, ranges, what);
  if (!overflows.empty()) return failure(overflows.front());
  return success(cm, ranges, true);
}

}  // namespace

PlanResult plan_partition(const ModelSpec& spec, std::span<const DeviceProfile> devices, const LinkTable& links,
                          const PartitionOptions& options) {
  std::vector<std::string> problems = validate_inputs(spec, devices, links, options);
  if (!problems.empty()) {
    std::string message = "invalid planner input: " + problems.front();
    if (problems.size() > 1) message += " (and " + std::to_string(problems.size() - 1) + " more)";
    return failure({Infeasibility::invalid_input, message, 0});
  }
  const CostModel cm(spec, devices, links, options);
  switch (options.algorithm) {
    case Algorithm::dp: return run_dp(cm);
    case Algorithm::exhaustive: return run_exhaustive(cm);
    case Algorithm::memory: return run_baseline(cm, memory_split(cm), "memory split");
    case Algorithm::equal: return run_baseline(cm, equal_split(cm), "equal split");
  }
  return failure({Infeasibility::invalid_input, "unknown algorithm", 0});
}

}  // namespace hearth::partitioner
