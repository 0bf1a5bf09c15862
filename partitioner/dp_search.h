#pragma once
// The exact label-setting DP of §5.2 over a SearchSpace, in two flavours:
//  - min_ring_time: min-sum of stage and hop times (the ring time R(m)), optionally
//    restricted to stages and hops of at most `theta` seconds. With theta = inf this
//    is objective (a); the planner's threshold search over theta turns it into an
//    exact maximiser of throughput X(m) = min(B/R, B/(G Phi)) (§5.3).
//  - min_ttft: labels are vectors of chunk completion times at the last stage; a
//    label is kept unless another one is no later for every chunk (Pareto front),
//    which is exact because the flow-shop recurrence is monotone (§5.4).

#include <limits>
#include <optional>
#include <vector>

#include "partitioner/cost_model.h"
#include "partitioner/search_space.h"

namespace hearth::partitioner {

struct DpResult {
  std::vector<PathStage> path;  // stages in pipeline order
  double value = 0;             // seconds: R(m) or TTFT
  bool exact = true;            // false when a Pareto front hit its cap and dropped labels
};

inline constexpr double kNoLimit = std::numeric_limits<double>::infinity();

// Least R(m), m = micro_batches()[mi], over plans in `space` whose stage times
// (LM head included) and hop times are all <= theta; nothing if none fits.
std::optional<DpResult> min_ring_time(const CostModel& cm, const SearchSpace& space, int mi, double theta);

// Least TTFT for chunk schedule `schedule`; fronts keep at most `front_cap` labels.
std::optional<DpResult> min_ttft(const CostModel& cm, const SearchSpace& space, int schedule, int front_cap);

}  // namespace hearth::partitioner
