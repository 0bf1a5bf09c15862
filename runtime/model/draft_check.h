// Checks a draft against the target model's logits: the step of speculative decoding that keeps
// only what the target itself would have produced.
//
// The drafts hearth makes are deterministic (a token is proposed or it is not: n-gram lookup, a
// greedy draft model), so the standard rule (accept draft token d with probability
// min(1, p(d) / q(d)), else sample from the residual max(0, p - q) renormalised) has q = a point
// mass at d: accept with probability p(d), else sample from p with d removed. Drawing x from p and
// accepting d iff x == d is that same rule (P(d) = p(d); after a rejection, x is distributed as p
// without d), and it makes one draw per token, like plain sampling. So with the same seed a
// speculative run draws the same random numbers at the same positions as a plain one: its tokens
// are the plain run's tokens whenever the logits are (greedy included), and a replay after a lost
// device (SamplingParams::draws_done) still skips one draw per token.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "runtime/model/sampler.h"

namespace hearth::runtime {

struct DraftVerdict {
  int accepted = 0;    // leading draft tokens the target agrees with
  int32_t token = -1;  // the target's own token after them (a correction, or one past the draft)
};

// `rows`: (draft.size() + 1) x n_vocab logits, row j computed after the draft's first j tokens.
// Samples row by row with `sampler` (which records every token it gives) until a sample differs
// from the draft or the draft ends.
DraftVerdict check_draft(Sampler& sampler, std::span<const float> rows, size_t n_vocab, std::span<const int32_t> draft);

}  // namespace hearth::runtime
