// A small model that drafts for a larger one with the same vocabulary: speculative decoding's
// second source beside n-gram lookup. It runs whole on one device (the head), one conversation's
// cache per sequence, and proposes its greedy continuation of a conversation.
//
// Its caches follow the conversation by themselves: each call finds how much of what it holds
// for a sequence the history still starts with, goes back there (an earlier position overwrites
// the cache; recurrent layers go back to their state before its last draft and compute the
// accepted tokens again) and computes only the rest. So rejected drafts, and the target's
// corrections, cost it little to forget.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "runtime/format/gguf.h"
#include "runtime/kernels/thread_pool.h"
#include "runtime/model/model_config.h"
#include "runtime/model/stage.h"
#include "runtime/model/weights.h"
#include "runtime/text/vocab.h"

namespace hearth::runtime {

class DraftModel {
 public:
  // Opens the GGUF at `path`. Throws std::invalid_argument when it cannot draft for a target of
  // vocabulary `target` (another vocabulary), and GgufError for a file that is not a model.
  DraftModel(const std::string& path, const Vocab& target, int n_ctx, int max_sequences, int threads);

  const ModelConfig& config() const { return config_; }
  uint64_t weight_bytes() const { return weight_bytes_; }
  // Up to `k` tokens of its greedy continuation of `history` for conversation `seq` (none when the
  // history and the draft do not fit its context).
  std::vector<int32_t> propose(uint64_t seq, std::span<const int32_t> history, int k);
  void forget(uint64_t seq);

 private:
  // Feeds tokens [from, end) of `tokens` at their positions (as a draft: recurrent layers keep
  // their state from before the first such token); returns the last row's argmax.
  int32_t feed(uint64_t seq, std::span<const int32_t> tokens, size_t from, bool draft);
  void make_room(uint64_t seq);

  GgufFile file_;
  ModelConfig config_;
  uint64_t weight_bytes_ = 0;
  int max_sequences_;
  ThreadPool pool_;
  std::unique_ptr<Stage> stage_;
  std::map<uint64_t, std::vector<int32_t>> held_;  // what each sequence's cache holds
  std::list<uint64_t> recent_;                     // least recently used first
};

}  // namespace hearth::runtime
