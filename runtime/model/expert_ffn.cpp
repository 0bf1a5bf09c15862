#include "runtime/model/expert_ffn.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "runtime/model/ops.h"

namespace hearth::runtime {

namespace {

// ggml's softmax: exponentials in float, their sum in double, one float scale.
std::vector<float> softmax(std::span<const float> x) {
  const float max = *std::max_element(x.begin(), x.end());
  std::vector<float> p(x.size());
  double sum = 0;
  for (size_t i = 0; i < x.size(); ++i) sum += static_cast<double>(p[i] = std::exp(x[i] - max));
  const auto scale = static_cast<float>(1.0 / sum);
  for (float& v : p) v *= scale;
  return p;
}

}  // namespace

Routing route(std::span<const float> logits, int k, bool normalize, ExpertGating gating) {
  const std::vector<float> p =
      gating == ExpertGating::Softmax ? softmax(logits) : std::vector<float>(logits.begin(), logits.end());
  std::vector<int> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return p[static_cast<size_t>(a)] > p[static_cast<size_t>(b)]; });
  Routing r;
  r.experts.assign(order.begin(), order.begin() + k);
  for (int e : r.experts) r.weights.push_back(p[static_cast<size_t>(e)]);
  if (gating == ExpertGating::SoftmaxOfChosen) r.weights = softmax(r.weights);
  if (normalize) {
    double total = 0;
    for (float w : r.weights) total += w;
    const auto t = static_cast<float>(total);
    for (float& w : r.weights) w /= t;
  }
  return r;
}

ExpertFfn::ExpertFfn(const ModelConfig& c, int max_tokens)
    : n_embd_(c.n_embd),
      n_expert_(c.n_expert),
      n_used_(c.n_expert_used),
      n_ff_exp_(c.n_ff_exp),
      normalize_(c.expert_weights_norm),
      gating_(c.expert_gating),
      activation_(c.ffn_activation),
      logits_(static_cast<size_t>(max_tokens) * c.n_expert),
      chosen_(static_cast<size_t>(max_tokens) * c.n_expert_used),
      weight_(chosen_.size()),
      by_expert_(static_cast<size_t>(c.n_expert)),
      x_(static_cast<size_t>(max_tokens) * c.n_embd),
      gate_(static_cast<size_t>(std::max(max_tokens, c.n_expert_used)) * c.n_ff_exp),
      up_(gate_.size()),
      y_(x_.size()),
      slot_out_(chosen_.size() * static_cast<size_t>(c.n_embd)) {}

// Expert e's bias of n elements, or null when the model has none.
const float* ExpertFfn::bias_of(const std::vector<float>& biases, size_t e, size_t n) {
  return biases.empty() ? nullptr : biases.data() + e * n;
}

void ExpertFfn::run_expert(const LayerWeights& w, int e, const float* xn, MatmulScratch& scratch, ThreadPool& pool,
                           const KernelTable& k) {
  const auto E = static_cast<size_t>(n_embd_), K = static_cast<size_t>(n_used_);
  const std::vector<int>& slots = by_expert_[static_cast<size_t>(e)];
  if (slots.empty()) return;
  const int m = static_cast<int>(slots.size());
  for (int i = 0; i < m; ++i)
    std::copy_n(xn + static_cast<size_t>(slots[static_cast<size_t>(i)]) / K * E, E, &x_[static_cast<size_t>(i) * E]);
  const WeightMatrix gate = w.gate_exps.expert(e), up = w.up_exps.expert(e), down = w.down_exps.expert(e);
  const auto F = static_cast<size_t>(n_ff_exp_), ue = static_cast<size_t>(e);
  matmul_swiglu(gate, up, x_.data(), m, gate_.data(), up_.data(), scratch, pool, k, activation_, bias_of(w.gate_exps_bias, ue, F),
                bias_of(w.up_exps_bias, ue, F));
  matmul(down, gate_.data(), m, y_.data(), scratch, pool, k);
  finish_down(w, e, y_.data(), m);
  bytes_read_ += gate.bytes() + up.bytes() + down.bytes();
  for (int i = 0; i < m; ++i)
    std::copy_n(&y_[static_cast<size_t>(i) * E], E, &slot_out_[static_cast<size_t>(slots[static_cast<size_t>(i)]) * E]);
}

void ExpertFfn::decode_one(const LayerWeights& w, const float* xn, MatmulScratch& scratch, ThreadPool& pool,
                           const KernelTable& k) {
  const auto F = static_cast<size_t>(n_ff_exp_), E = static_cast<size_t>(n_embd_);
  std::vector<WeightMatrix>& m = decode_matrices_;
  std::vector<ExpertTarget>& targets = decode_targets_;
  m.clear();
  targets.clear();
  for (int s = 0; s < n_used_; ++s) {
    const int e = chosen_[static_cast<size_t>(s)];
    m.insert(m.end(), {w.gate_exps.expert(e), w.up_exps.expert(e), w.down_exps.expert(e)});
    bytes_read_ += m[m.size() - 3].bytes() + m[m.size() - 2].bytes() + m.back().bytes();
  }
  for (size_t s = 0; s < static_cast<size_t>(n_used_); ++s) {
    const auto e = static_cast<size_t>(chosen_[s]);
    targets.push_back({&m[3 * s], &m[3 * s + 1], &m[3 * s + 2], &gate_[s * F], &up_[s * F], &slot_out_[s * E],
                       bias_of(w.gate_exps_bias, e, F), bias_of(w.up_exps_bias, e, F)});
  }
  matmul_experts(targets, xn, scratch, pool, k, activation_);
  for (size_t s = 0; s < static_cast<size_t>(n_used_); ++s) finish_down(w, chosen_[s], &slot_out_[s * E], 1);
}

void ExpertFfn::finish_down(const LayerWeights& w, int e, float* y, int rows) const {
  const auto E = static_cast<size_t>(n_embd_), ue = static_cast<size_t>(e);
  if (!w.down_exps_bias.empty()) add_bias(y, bias_of(w.down_exps_bias, ue, E), rows, n_embd_);
  if (!w.down_exps_scale.empty())
    for (size_t i = 0; i < static_cast<size_t>(rows) * E; ++i) y[i] *= w.down_exps_scale[ue];
}

void ExpertFfn::forward(const LayerWeights& w, const float* xn, int n_tokens, float* out, MatmulScratch& scratch,
                        ThreadPool& pool, const KernelTable& k, const float* router_in) {
  const auto E = static_cast<size_t>(n_embd_), K = static_cast<size_t>(n_used_);
  matmul(w.router, router_in ? router_in : xn, n_tokens, logits_.data(), scratch, pool, k);
  if (!w.router_bias.empty()) add_bias(logits_.data(), w.router_bias.data(), n_tokens, n_expert_);
  for (auto& v : by_expert_) v.clear();
  for (int t = 0; t < n_tokens; ++t) {
    const Routing r =
        route({&logits_[static_cast<size_t>(t) * n_expert_], static_cast<size_t>(n_expert_)}, n_used_, normalize_, gating_);
    for (size_t s = 0; s < K; ++s) {
      const size_t slot = static_cast<size_t>(t) * K + s;
      chosen_[slot] = r.experts[s];
      weight_[slot] = r.weights[s];
      by_expert_[static_cast<size_t>(r.experts[s])].push_back(static_cast<int>(slot));
    }
  }

  // One token (decode): all its experts in two parallel loops. More: each chosen expert over the
  // tokens that chose it. Both compute every output the same way.
  if (n_tokens == 1) {
    decode_one(w, xn, scratch, pool, k);
  } else {
    for (int e = 0; e < n_expert_; ++e) run_expert(w, e, xn, scratch, pool, k);
  }
  // Weighted sum in slot order, as llama.cpp adds the experts' views one after another.
  for (int t = 0; t < n_tokens; ++t) {
    float* o = out + static_cast<size_t>(t) * E;
    for (size_t s = 0; s < K; ++s) {
      const size_t slot = static_cast<size_t>(t) * K + s;
      const float* y = &slot_out_[slot * E];
      const float wt = weight_[slot];
      for (size_t i = 0; i < E; ++i) o[i] = s == 0 ? y[i] * wt : o[i] + y[i] * wt;
    }
  }
}

}  // namespace hearth::runtime
