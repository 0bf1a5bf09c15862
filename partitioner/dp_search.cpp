#include "partitioner/dp_search.h"

#include <algorithm>
#include <span>

#include "partitioner/metrics.h"

namespace hearth::partitioner {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Memory reach of a non-head stage starting at block i on device d (§4.4, jmax):
// the last end < L it can take without the LM head, and whether it fits to the end
// with the LM head. Memory grows with the range, so both are monotone in the end.
struct Reach {
  std::vector<std::vector<int>> max_end;  // [d][i], in [i, L - 1]
  std::vector<std::vector<char>> to_end;  // [d][i]: [i, L) + LM head fits
};

Reach compute_reach(const CostModel& cm) {
  const int n_layers = cm.n_layers();
  Reach r;
  r.max_end.assign(cm.n_devices(), std::vector<int>(n_layers, 0));
  r.to_end.assign(cm.n_devices(), std::vector<char>(n_layers, 0));
  for (int d = 0; d < cm.n_devices(); ++d) {
    for (int i = 0; i < n_layers; ++i) {
      int j = i;
      while (j + 1 < n_layers && cm.fits(d, i, j + 1, false, false)) ++j;
      r.max_end[d][i] = j;
      r.to_end[d][i] = cm.fits(d, i, n_layers, false, true);
    }
  }
  return r;
}

// Walks every transition of §5.6 once, in topological node order. Ops decides what a
// label is: seed(j) starts the head on blocks [0, j); begin() prepares the hop d -> e
// from cell (node, i); relax() appends e's stage [i, j). seed/relax return false to
// stop growing j (their costs are monotone in j).
template <class Ops>
void run_dp(const CostModel& cm, const SearchSpace& space, Ops& ops) {
  const int n_layers = cm.n_layers();
  const int head = space.device_of_node[space.start];
  for (int j = 0; j <= n_layers; ++j) {
    if (!cm.fits(head, 0, j, true, j == n_layers)) break;
    if (can_cut(cm.spec(), j) && !ops.seed(j)) break;
  }
  const Reach reach = compute_reach(cm);
  for (int node = space.start; node < space.n_nodes(); ++node) {
    if (space.next[node].empty()) continue;
    const int g = space.group_of_node[node];
    for (int i = 0; i < n_layers; ++i) {
      if (!ops.reached(node, i)) continue;
      for (int nx : space.next[node]) {
        const int e = space.device_of_node[nx];
        // Two devices of one group are distinct: price the hop between its
        // first two members (all links inside a group are alike).
        const int d = space.group_of_node[nx] == g ? space.groups[g][1] : space.device_of_node[node];
        if (!ops.begin(node, i, d, e)) continue;
        const int jmax = reach.max_end[e][i];
        int j = i + 1;
        while (j <= jmax && (!can_cut(cm.spec(), j) || ops.relax(node, i, nx, e, j))) ++j;
        if (j > jmax && reach.to_end[e][i]) ops.relax(node, i, nx, e, n_layers);
      }
    }
  }
}

// ---- min-sum labels: ring time R(m) under a period cap theta ----

class SumOps {
 public:
  SumOps(const CostModel& cm, const SearchSpace& space, int mi, double theta)
      : cm_(cm),
        n_layers_(cm.n_layers()),
        mi_(mi),
        theta_(theta),
        start_(space.start),
        head_(space.device_of_node[space.start]),
        hop_tokens_(cm.micro_batches()[mi]),
        back_bytes_(cm.micro_batches()[mi] * kTokenIdBytes),
        value_(cells(space), kInf),
        parent_node_(cells(space), -1),
        parent_first_(cells(space), 0) {}

  bool seed(int j) {
    const double t = cm_.decode_time_at(mi_, head_, 0, j, j == n_layers_);
    if (t > theta_) return false;
    value_[cell(start_, j)] = t;
    return true;
  }
  bool reached(int node, int i) const { return value_[cell(node, i)] < kInf; }
  bool begin(int /*node*/, int i, int d, int e) {
    hop_ = cm_.activation_hop_time(d, e, hop_tokens_, i);
    return hop_ <= theta_;
  }
  bool relax(int node, int i, int nx, int e, int j) {
    const bool last = j == n_layers_;
    const double t = cm_.decode_time_at(mi_, e, i, j, last);
    if (t > theta_) return false;
    double v = value_[cell(node, i)] + hop_ + t;  // same order as ring_times()
    if (last) {
      const double back = cm_.hop_time(e, head_, back_bytes_);
      if (back > theta_) return true;
      v += back;
    }
    const size_t c = cell(nx, j);
    if (v < value_[c]) {
      value_[c] = v;
      parent_node_[c] = node;
      parent_first_[c] = i;
    }
    return true;
  }

  std::optional<DpResult> best(const SearchSpace& space) const {
    int best_node = -1;
    for (int node = 0; node < space.n_nodes(); ++node)
      if (value_[cell(node, n_layers_)] < (best_node < 0 ? kInf : value_[cell(best_node, n_layers_)])) best_node = node;
    if (best_node < 0) return std::nullopt;
    DpResult r;
    r.value = value_[cell(best_node, n_layers_)];
    for (int node = best_node, j = n_layers_; node >= 0;) {
      const size_t c = cell(node, j);
      const int first = parent_node_[c] < 0 ? 0 : parent_first_[c];
      r.path.push_back({node, first, j});
      node = parent_node_[c];
      j = first;
    }
    std::reverse(r.path.begin(), r.path.end());
    return r;
  }

 private:
  size_t cells(const SearchSpace& space) const { return size_t(space.n_nodes()) * (n_layers_ + 1); }
  size_t cell(int node, int j) const { return size_t(node) * (n_layers_ + 1) + j; }

  const CostModel& cm_;
  int n_layers_, mi_;
  double theta_;
  int start_, head_;
  double hop_tokens_, back_bytes_;
  double hop_ = 0;
  std::vector<double> value_;  // seconds: least R so far per (node, end layer)
  std::vector<int> parent_node_, parent_first_;
};

// ---- Pareto labels: chunk completion times for TTFT ----

class ChunkOps {
 public:
  ChunkOps(const CostModel& cm, const SearchSpace& space, int schedule, int front_cap)
      : cm_(cm),
        space_(space),
        n_layers_(cm.n_layers()),
        schedule_(schedule),
        k_(static_cast<int>(cm.chunk_schedules()[schedule].size())),
        cap_(std::max(1, front_cap)),
        head_(space.device_of_node[space.start]),
        front_(size_t(space.n_nodes()) * (n_layers_ + 1)),
        final_value_(space.n_nodes(), kInf),
        final_label_(space.n_nodes(), -1),
        scratch_(k_) {}

  bool seed(int j) {
    prefill_head(cm_, schedule_, head_, j, scratch_);
    add(space_.start, 0, j, -1);
    return true;
  }
  bool reached(int node, int i) const { return !front_[cell(node, i)].empty(); }
  bool begin(int node, int i, int d, int e) {
    const std::vector<int>& f = front_[cell(node, i)];
    arrivals_.resize(f.size() * k_);
    for (size_t r = 0; r < f.size(); ++r)
      prefill_hop(cm_, schedule_, d, e, i, label(f[r]), std::span<double>(arrivals_).subspan(r * k_, k_));
    return true;
  }
  bool relax(int node, int i, int nx, int e, int j) {
    const std::vector<int>& f = front_[cell(node, i)];
    for (size_t r = 0; r < f.size(); ++r) {
      prefill_stage(cm_, schedule_, e, i, j, std::span<const double>(arrivals_).subspan(r * k_, k_), scratch_);
      add(nx, i, j, f[r]);
    }
    return true;
  }

  std::optional<DpResult> best() const {
    int best_node = -1;
    for (int node = 0; node < space_.n_nodes(); ++node)
      if (final_label_[node] >= 0 && (best_node < 0 || final_value_[node] < final_value_[best_node])) best_node = node;
    if (best_node < 0) return std::nullopt;
    DpResult r;
    r.value = final_value_[best_node];
    r.exact = exact_;
    for (int id = final_label_[best_node]; id >= 0; id = labels_[id].parent)
      r.path.push_back({labels_[id].node, labels_[id].first, labels_[id].last});
    std::reverse(r.path.begin(), r.path.end());
    return r;
  }

 private:
  struct LabelInfo {
    int node, first, last, parent;
  };

  size_t cell(int node, int j) const { return size_t(node) * (n_layers_ + 1) + j; }
  std::span<const double> label(int id) const { return std::span<const double>(pool_).subspan(size_t(id) * k_, k_); }

  int push_label(int node, int first, int last, int parent) {
    pool_.insert(pool_.end(), scratch_.begin(), scratch_.end());
    labels_.push_back({node, first, last, parent});
    return static_cast<int>(labels_.size()) - 1;
  }
  static bool dominates(std::span<const double> a, std::span<const double> b) {
    for (size_t k = 0; k < a.size(); ++k)
      if (a[k] > b[k]) return false;
    return true;
  }

  // Adds scratch_ as the label of stage [first, last) ending at `node`. At the last
  // block only the finished TTFT matters, so one label per node is kept.
  void add(int node, int first, int last, int parent) {
    if (last == n_layers_) {
      const double v = scratch_.back() + ttft_tail(cm_, space_.device_of_node[node], first, head_);
      if (v < final_value_[node]) {
        final_value_[node] = v;
        final_label_[node] = push_label(node, first, last, parent);
      }
      return;
    }
    std::vector<int>& f = front_[cell(node, last)];
    for (int id : f)
      if (dominates(label(id), scratch_)) return;
    std::erase_if(f, [&](int id) { return dominates(scratch_, label(id)); });
    f.push_back(push_label(node, first, last, parent));
    if (static_cast<int>(f.size()) > cap_) drop_worst(f);
  }

  // Over the cap: drop the label whose last chunk finishes latest (no longer exact).
  void drop_worst(std::vector<int>& f) {
    auto worst = std::max_element(f.begin(), f.end(), [&](int a, int b) { return label(a).back() < label(b).back(); });
    f.erase(worst);
    exact_ = false;
  }

  const CostModel& cm_;
  const SearchSpace& space_;
  int n_layers_, schedule_, k_, cap_, head_;
  std::vector<std::vector<int>> front_;  // label ids per (node, end layer)
  std::vector<double> final_value_;      // seconds: best TTFT per node
  std::vector<int> final_label_;
  std::vector<double> pool_;  // seconds: K completion times per label
  std::vector<LabelInfo> labels_;
  std::vector<double> scratch_, arrivals_;
  bool exact_ = true;
};

}  // namespace

std::optional<DpResult> min_ring_time(const CostModel& cm, const SearchSpace& space, int mi, double theta) {
  SumOps ops(cm, space, mi, theta);
  run_dp(cm, space, ops);
  return ops.best(space);
}

std::optional<DpResult> min_ttft(const CostModel& cm, const SearchSpace& space, int schedule, int front_cap) {
  ChunkOps ops(cm, space, schedule, front_cap);
  run_dp(cm, space, ops);
  return ops.best();
}

}  // namespace hearth::partitioner
