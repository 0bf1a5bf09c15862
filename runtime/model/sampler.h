// Turns logits into the next token: greedy, or seeded sampling with the usual filters.
//
// The sampler is plain data plus a seeded generator, so it can travel with a sequence to the
// pipeline's last stage and give the same tokens there as on a single device.
#pragma once

#include <cstdint>
#include <deque>
#include <span>
#include <vector>

namespace hearth::runtime {

struct SamplingParams {
  float temperature = 0.8f;     // 0 = greedy (argmax)
  int top_k = 40;               // 0 = off
  float top_p = 0.95f;          // 1 = off
  float min_p = 0.05f;          // 0 = off; drops tokens below min_p x the top probability
  float repeat_penalty = 1.0f;  // 1 = off; divides positive (multiplies negative) logits of recent tokens
  int repeat_last_n = 64;       // how many recent tokens the penalty looks at
  uint64_t seed = 0;
  // Random draws an earlier run of this sequence already made (one per token sampled with a
  // temperature): a sequence replayed after a device was lost skips them, so it goes on with the
  // same random stream and gives the same tokens as if nothing had happened.
  uint64_t draws_done = 0;
};

// xoshiro256** seeded through splitmix64: the same stream on every platform and compiler,
// unlike std::uniform_real_distribution.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next();
  double uniform();  // [0, 1)

 private:
  uint64_t s_[4];
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // Chooses a token from logits (n_vocab floats) and records it as accepted.
  int32_t sample(std::span<const float> logits);
  // Records a token that was not sampled (the prompt), for the repetition penalty.
  void accept(int32_t token);
  const SamplingParams& params() const { return params_; }

 private:
  struct Candidate {
    int32_t id;
    float logit;
  };
  void apply_penalty();
  SamplingParams params_;
  Rng rng_;
  std::deque<int32_t> recent_;
  std::vector<Candidate> cand_;  // reused between calls
  std::vector<double> probs_;
};

}  // namespace hearth::runtime
