// Conversations' KV caches kept on the stages after their requests end, so that the next turn of
// a conversation prefills only what is new.
//
// A chat client sends the whole history with every turn. When a request ends, its sequence keeps
// its caches on every stage (nothing is sent) and this table remembers which tokens they hold. A
// new request takes the kept sequence whose tokens share the longest prefix with its prompt: the
// stages rewind that sequence to the shared prefix (a chunk at an earlier position overwrites the
// rest), and only the prompt's remaining tokens go down the pipeline. An edited last message or a
// regenerate shares all but the tail, so they reuse what they can too.
//
// Kept sequences hold slots the plan reserved (every stage sized its memory for `max_sequences`
// caches), so the scheduler evicts the least recently kept one when a new conversation needs a
// slot. Pure bookkeeping: the scheduler sends the releases.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace hearth::cluster {

class PromptCache {
 public:
  // A request reuses a kept sequence only when they share at least this fraction of the kept
  // tokens: the same conversation, not merely the same system prompt, whose cache is worth more
  // to the conversation it belongs to than the few tokens another one would save.
  static constexpr double kMinShare = 0.5;

  // `max_rewind`: how many positions back from the furthest a kept sequence reached the stages
  // can cut it. A model with recurrent layers (Qwen 3.5's delta-nets) cannot at all (0): its
  // state holds every token, so only a request that extends all of a kept sequence's tokens may
  // reuse it. Sliding-window layers keep a ring a batch longer than their window
  // (runtime/model/kv_layout.h), so a request may reuse a sequence only to within that many
  // positions of its reach.
  explicit PromptCache(size_t max_rewind) : max_rewind_(max_rewind) {}

  struct Hit {
    uint64_t seq = 0;
    size_t reuse = 0;  // leading prompt tokens the sequence's caches already hold
    size_t reach = 0;  // the furthest position the stages stored for it (the request inherits it)
  };

  // Remembers that sequence `seq` holds caches for `tokens`, in order (its most recent use), and
  // that the stages stored it as far as `reach` (beyond the tokens: a rejected draft's tail, an
  // earlier turn that went further; at least tokens.size()).
  void keep(uint64_t seq, std::vector<int32_t> tokens, size_t reach = 0);
  // Takes out the kept sequence that shares the longest prefix with `prompt`, reusing at most
  // `max_reuse` tokens (the caller keeps at least one token to compute, and more when its sampler
  // must see them). None when no kept sequence shares enough (kMinShare).
  std::optional<Hit> take(std::span<const int32_t> prompt, size_t max_reuse);
  // Takes out the least recently kept sequence (its caches are to be freed); none when empty.
  std::optional<uint64_t> evict_oldest();
  // Takes out every kept sequence.
  std::vector<uint64_t> clear();
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    uint64_t seq = 0;
    std::vector<int32_t> tokens;
    size_t reach = 0;
    uint64_t used = 0;  // when kept, by a counter
  };
  size_t max_rewind_;
  std::vector<Entry> entries_;  // few: one per stream of the plan
  uint64_t clock_ = 0;
};

}  // namespace hearth::cluster
