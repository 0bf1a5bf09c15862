// Prompt-lookup drafting: proposes the next tokens of a conversation from the conversation
// itself. Code being edited, a summary quoting its source, a story repeating its phrases: the
// last few tokens have often appeared before, and what followed them then is a good guess for
// what follows now. It needs no second model and costs a scan of the history.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace hearth::runtime {

struct NgramDraftOptions {
  int max_ngram = 4;  // the longest suffix looked for
  // The shortest. One token matches often and is right less often; whether such drafts are
  // worth sending is the draft pace's call, from what they cost (cluster/draft_pace.h).
  int min_ngram = 1;
};

// Up to `k` tokens that followed the most recent earlier occurrence of the longest suffix of
// `history` (max_ngram down to min_ngram tokens) found elsewhere in it; empty when none is.
std::vector<int32_t> ngram_draft(std::span<const int32_t> history, int k, const NgramDraftOptions& options = {});

}  // namespace hearth::runtime
