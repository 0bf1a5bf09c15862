// Where speculative decoding's drafts come from, chosen per launch (`hearth launch --draft`).
// The head's scheduler asks its source for a few tokens to follow a conversation, sends them
// down the pipeline behind the conversation's newest token, and the last stage keeps what the
// target model agrees with (runtime/model/draft_check.h).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "runtime/text/vocab.h"

namespace hearth::cluster {

class DraftSource {
 public:
  virtual ~DraftSource() = default;
  // Up to `k` tokens to follow `history` (conversation `seq` so far, its newest token last);
  // fewer, or none, when the source has no good guess.
  virtual std::vector<int32_t> propose(uint64_t seq, std::span<const int32_t> history, int k) = 0;
  // The conversation ended: whatever the source kept for it may go.
  virtual void forget(uint64_t /*seq*/) {}
  // What `hearth status` calls it ("ngram").
  virtual std::string name() const = 0;
};

// What a draft source is made for: the target's vocabulary (a draft model must share it), and
// the conversations it will follow.
struct DraftTarget {
  const runtime::Vocab& vocab;
  int n_ctx = 0;
  int max_sequences = 1;
  int threads = 1;  // a draft model's compute threads
};

// What a launch asks for: "none" (or ""), "ngram", a draft model ("FILE.gguf": a small model of
// the same vocabulary, run whole on the head, its greedy continuation proposed), or
// "oracle:FILE", a benchmark's upper bound: FILE holds the token ids (whitespace-separated) the
// target generates for a prompt, as `hearth generate --ids FILE` writes them; while a
// conversation follows them it is drafted what comes next, so every draft is accepted and
// drafting costs nothing. nullptr for none; throws std::invalid_argument naming the choices for
// anything else, and for a file that cannot be read or a model that cannot draft for this one.
std::unique_ptr<DraftSource> make_draft_source(const std::string& choice, const DraftTarget& target);
// Whether `choice` names a source (without opening any file).
bool is_draft_choice(const std::string& choice);
// Whether it is a draft model (its weights count on the head's memory).
bool is_draft_model(const std::string& choice);

}  // namespace hearth::cluster
