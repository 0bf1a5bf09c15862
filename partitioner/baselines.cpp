#include "partitioner/baselines.h"

#include <algorithm>

#include "partitioner/metrics.h"

namespace hearth::partitioner {

namespace {

class Exhaustive {
 public:
  Exhaustive(const CostModel& cm, long max_plans)
      : cm_(cm), n_layers_(cm.n_layers()), max_plans_(max_plans), used_(cm.n_devices(), 0) {}

  ExhaustiveResult run() {
    used_[0] = 1;
    for (int j = 0; j <= n_layers_ && !result_.too_large; ++j) {
      if (!cm_.fits(0, 0, j, true, j == n_layers_)) break;
      if (!can_cut(cm_.spec(), j)) continue;
      stages_.push_back({0, 0, j});
      extend(j);
      stages_.pop_back();
    }
    return result_;
  }

 private:
  void extend(int done) {
    if (done == n_layers_) return score_current();
    for (int e = 1; e < cm_.n_devices() && !result_.too_large; ++e) {
      if (used_[e]) continue;
      used_[e] = 1;
      for (int j = done + 1; j <= n_layers_ && cm_.fits(e, done, j, false, j == n_layers_); ++j) {
        if (!can_cut(cm_.spec(), j)) continue;
        stages_.push_back({e, done, j});
        extend(j);
        stages_.pop_back();
      }
      used_[e] = 0;
    }
  }

  void score_current() {
    if (++result_.plans > max_plans_) {
      result_.too_large = true;
      return;
    }
    const PlanScore s = score(cm_, stages_, cm_.options().objective);
    if (!result_.best || better(s, best_score_)) {
      best_score_ = s;
      result_.best = stages_;
    }
  }

  const CostModel& cm_;
  int n_layers_;
  long max_plans_;
  std::vector<char> used_;
  std::vector<StageRange> stages_;
  PlanScore best_score_;
  ExhaustiveResult result_;
};

// Consecutive blocks with the same owner become one stage; the head always keeps a stage.
std::vector<StageRange> ranges_from_owners(const CostModel& cm, const std::vector<int>& owner) {
  std::vector<StageRange> ranges{{0, 0, 0}};
  for (int l = 0; l < cm.n_layers(); ++l) {
    if (owner[l] != ranges.back().device) ranges.push_back({owner[l], l, l});
    ranges.back().last_layer = l + 1;
  }
  return ranges;
}

}  // namespace

double exhaustive_plan_count(int n_devices, int n_layers) {
  // k other devices in order: (N-1)!/(N-1-k)! sequences; the head takes h >= 0 blocks
  // and each of the k others >= 1, which is C(L, k) splits.
  double total = 0, orders = 1, splits = 1;
  for (int k = 0; k < n_devices && k <= n_layers; ++k) {
    total += orders * splits;
    orders *= n_devices - 1 - k;
    splits = splits * (n_layers - k) / (k + 1);
  }
  return total;
}

ExhaustiveResult exhaustive_search(const CostModel& cm, long max_plans) {
  if (exhaustive_plan_count(cm.n_devices(), cm.n_layers()) > double(max_plans)) return {std::nullopt, 0, true};
  ExhaustiveResult r = Exhaustive(cm, max_plans).run();
  if (r.too_large) r.best.reset();
  return r;
}

std::vector<StageRange> memory_split(const CostModel& cm) {
  const int n = cm.n_devices();
  std::vector<double> cumulative(n, 0.0);
  double total = 0;
  for (int d = 0; d < n; ++d) total += cm.devices()[d].usable_memory_bytes;
  double sum = 0;
  for (int d = 0; d < n; ++d) {
    sum += cm.devices()[d].usable_memory_bytes;
    cumulative[d] = total > 0 ? sum / total : double(d + 1) / n;
  }
  std::vector<int> owner(cm.n_layers());
  for (int l = 0; l < cm.n_layers(); ++l) {
    const double x = double(l) / cm.n_layers();
    const auto it = std::upper_bound(cumulative.begin(), cumulative.end(), x);
    owner[l] = std::min(n - 1, static_cast<int>(it - cumulative.begin()));
  }
  return ranges_from_owners(cm, owner);
}

std::vector<StageRange> equal_split(const CostModel& cm) {
  const int n = cm.n_devices(), n_layers = cm.n_layers();
  std::vector<int> owner;
  for (int d = 0; d < n; ++d) {
    const int count = n_layers / n + (d < n_layers % n ? 1 : 0);
    owner.insert(owner.end(), count, d);
  }
  return ranges_from_owners(cm, owner);
}

}  // namespace hearth::partitioner
