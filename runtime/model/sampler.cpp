#include "runtime/model/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

namespace hearth::runtime {

namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

Rng::Rng(uint64_t seed) {
  for (auto& s : s_) s = splitmix64(seed);
}

uint64_t Rng::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  for (uint64_t i = 0; i < params.draws_done; ++i) rng_.next();  // sample() draws once per token (uniform())
}

void Sampler::accept(int32_t token) {
  if (params_.repeat_last_n <= 0) return;
  recent_.push_back(token);
  while (recent_.size() > static_cast<size_t>(params_.repeat_last_n)) recent_.pop_front();
}

void Sampler::apply_penalty() {
  if (params_.repeat_penalty == 1.0f || recent_.empty()) return;
  const std::unordered_set<int32_t> seen(recent_.begin(), recent_.end());
  for (auto& c : cand_) {
    if (!seen.count(c.id)) continue;
    c.logit = c.logit > 0 ? c.logit / params_.repeat_penalty : c.logit * params_.repeat_penalty;
  }
}

int32_t Sampler::sample(std::span<const float> logits) {
  cand_.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) cand_[i] = {static_cast<int32_t>(i), logits[i]};
  apply_penalty();
  // Sorted by logit, ties by id, so every filter below and the greedy choice are deterministic.
  const auto better = [](const Candidate& a, const Candidate& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  };

  int32_t chosen;
  if (params_.temperature <= 0.f) {
    chosen = std::min_element(cand_.begin(), cand_.end(), better)->id;
  } else {
    size_t n = cand_.size();
    if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n) {
      n = static_cast<size_t>(params_.top_k);
      std::partial_sort(cand_.begin(), cand_.begin() + static_cast<std::ptrdiff_t>(n), cand_.end(), better);
    } else {
      std::sort(cand_.begin(), cand_.end(), better);
    }
    // Softmax at temperature 1 for the probability filters (as llama.cpp orders them: top-k,
    // top-p, min-p, then temperature).
    probs_.resize(n);
    double sum = 0;
    for (size_t i = 0; i < n; ++i) sum += probs_[i] = std::exp(static_cast<double>(cand_[i].logit - cand_[0].logit));
    if (params_.top_p < 1.f) {
      double cum = 0;
      for (size_t i = 0; i < n; ++i) {
        cum += probs_[i] / sum;
        if (cum >= params_.top_p) {
          n = i + 1;
          break;
        }
      }
    }
    if (params_.min_p > 0.f) {
      size_t keep = 1;
      while (keep < n && probs_[keep] >= params_.min_p * probs_[0]) ++keep;
      n = keep;
    }
    double total = 0;
    for (size_t i = 0; i < n; ++i)
      total += probs_[i] = std::exp(static_cast<double>(cand_[i].logit - cand_[0].logit) / params_.temperature);
    const double r = rng_.uniform() * total;
    double cum = 0;
    chosen = cand_[n - 1].id;
    for (size_t i = 0; i < n; ++i) {
      cum += probs_[i];
      if (r < cum) {
        chosen = cand_[i].id;
        break;
      }
    }
  }
  accept(chosen);
  return chosen;
}

}  // namespace hearth::runtime
