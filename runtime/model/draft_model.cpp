#include "runtime/model/draft_model.h"

#include <algorithm>
#include <stdexcept>

namespace hearth::runtime {

namespace {

// The same ids must mean the same pieces, or a draft is noise (and an id may be out of range).
void check_vocabulary(const Vocab& draft, const Vocab& target, const std::string& path) {
  if (draft.size() != target.size())
    throw std::invalid_argument(path + " has a vocabulary of " + std::to_string(draft.size()) + " tokens, the model " +
                                std::to_string(target.size()) + ": a draft model must share the model's vocabulary");
  for (int32_t id = 0; id < target.size(); ++id)
    if (draft.tokens[static_cast<size_t>(id)] != target.tokens[static_cast<size_t>(id)])
      throw std::invalid_argument(path + "'s token " + std::to_string(id) +
                                  " is not the model's: a draft model must share its vocabulary");
}

}  // namespace

DraftModel::DraftModel(const std::string& path, const Vocab& target, int n_ctx, int max_sequences, int threads)
    : file_(GgufFile::open(path)), config_(read_model_config(file_)), max_sequences_(std::max(1, max_sequences)), pool_(threads) {
  check_vocabulary(load_vocab(file_.metadata()), target, path);
  auto weights = std::make_shared<StageWeights>(file_, config_, StageSpec{0, config_.n_layer, true, true});
  weight_bytes_ = weights->mapped_bytes();
  lay_out_for_cpu(*weights, StageOptions{}, 0, pool_);  // a draft model is small beside its target
  stage_ =
      // 256 tokens a step, as the target's stages: a sliding-window draft model's ring then
      // takes back any draft the head allows (at most 128) without feeding the history again.
      std::make_unique<Stage>(
          weights, StageOptions{.n_ctx = n_ctx, .max_batch = 256, .max_sequences = max_sequences_, .drafts = true}, pool_);
}

int32_t DraftModel::feed(uint64_t seq, std::span<const int32_t> tokens, size_t from, bool draft) {
  std::span<const float> logits;
  const size_t chunk_max = static_cast<size_t>(stage_->max_batch());
  for (size_t at = from; at < tokens.size();) {
    const size_t n = std::min(chunk_max, tokens.size() - at);
    const SeqChunk chunk{
        .seq = seq, .pos = static_cast<int>(at), .n_tokens = static_cast<int>(n), .drafts = draft ? static_cast<int>(n) : 0};
    logits = stage_->forward({.chunks = {&chunk, 1}, .tokens = tokens.subspan(at, n)});
    at += n;
  }
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

void DraftModel::make_room(uint64_t seq) {
  recent_.remove(seq);
  recent_.push_back(seq);
  while (recent_.size() > static_cast<size_t>(max_sequences_)) {
    forget(recent_.front());
  }
}

std::vector<int32_t> DraftModel::propose(uint64_t seq, std::span<const int32_t> history, int k) {
  if (k <= 0 || history.empty() || history.size() + static_cast<size_t>(k) > static_cast<size_t>(stage_->n_ctx())) return {};
  make_room(seq);
  std::vector<int32_t>& held = held_[seq];
  const size_t same =
      static_cast<size_t>(std::mismatch(held.begin(), held.end(), history.begin(), history.end()).first - held.begin());
  // The last token is computed again if it is held already: its logits give the first draft token.
  // A sliding-window draft model's ring goes back only so far, and recurrent layers only to their
  // state before the last draft (the tokens since computed again): past that, the history is fed
  // again.
  size_t from = std::min(same, history.size() - 1);
  if (!stage_->can_continue(seq, static_cast<int>(from))) {
    const int checkpoint = stage_->checkpoint(seq);
    const bool back = checkpoint >= 0 && static_cast<size_t>(checkpoint) <= from && stage_->can_continue(seq, checkpoint);
    from = back ? static_cast<size_t>(checkpoint) : 0;
  }
  held.assign(history.begin(), history.end());
  std::vector<int32_t> draft{feed(seq, held, from, false)};
  // Its own tokens are fed as a draft: recurrent layers keep their state from before them.
  while (draft.size() < static_cast<size_t>(k)) {
    held.push_back(draft.back());
    draft.push_back(feed(seq, held, held.size() - 1, true));
  }
  return draft;
}

void DraftModel::forget(uint64_t seq) {
  stage_->release(seq);
  held_.erase(seq);
  recent_.remove(seq);
}

}  // namespace hearth::runtime
