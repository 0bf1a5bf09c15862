#include "runtime/model/ngram_draft.h"

#include <algorithm>

namespace hearth::runtime {

std::vector<int32_t> ngram_draft(std::span<const int32_t> history, int k, const NgramDraftOptions& options) {
  const size_t len = history.size();
  if (k <= 0) return {};
  for (int n = std::min<int>(options.max_ngram, static_cast<int>(len) - 1); n >= std::max(1, options.min_ngram); --n) {
    const auto suffix = history.subspan(len - static_cast<size_t>(n));
    // Most recent first: a conversation's latest repetition predicts it best. `start` is where an
    // earlier occurrence begins; it must leave at least one token after it.
    for (size_t start = len - static_cast<size_t>(n); start-- > 0;) {
      if (!std::equal(suffix.begin(), suffix.end(), history.begin() + static_cast<long>(start))) continue;
      const size_t from = start + static_cast<size_t>(n);
      const size_t take = std::min(static_cast<size_t>(k), len - from);
      return {history.begin() + static_cast<long>(from), history.begin() + static_cast<long>(from + take)};
    }
  }
  return {};
}

}  // namespace hearth::runtime
