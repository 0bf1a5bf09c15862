#include "runtime/model/draft_check.h"

#include <stdexcept>

namespace hearth::runtime {

DraftVerdict check_draft(Sampler& sampler, std::span<const float> rows, size_t n_vocab, std::span<const int32_t> draft) {
  if (rows.size() != (draft.size() + 1) * n_vocab)
    throw std::invalid_argument("check_draft: one row of logits per draft token, plus one");
  DraftVerdict v;
  for (size_t j = 0;; ++j) {
    v.token = sampler.sample(rows.subspan(j * n_vocab, n_vocab));
    if (j == draft.size() || v.token != draft[j]) return v;
    ++v.accepted;
  }
}

}  // namespace hearth::runtime
