#include "runtime/model/generator.h"

#include <chrono>
#include <stdexcept>

namespace hearth::runtime {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::span<const float> forward_chain(std::span<Stage* const> stages, const StageInput& input) {
  if (stages.empty()) throw std::invalid_argument("no stages to run");
  std::span<const float> out = stages[0]->forward(input);
  for (size_t i = 1; i < stages.size(); ++i) {
    StageInput next{.chunks = input.chunks, .tokens = {}, .hidden = out, .all_logits = input.all_logits};
    out = stages[i]->forward(next);
  }
  return out;
}

GenerateStats generate(std::span<Stage* const> stages, uint64_t seq, std::span<const int32_t> prompt,
                       const GenerateOptions& options, const Vocab& vocab, const std::function<bool(int32_t)>& on_token) {
  if (prompt.empty()) throw std::invalid_argument("the prompt has no tokens");
  GenerateStats stats;
  stats.prompt_tokens = static_cast<int>(prompt.size());
  Sampler sampler(options.sampling);
  for (int32_t id : prompt) sampler.accept(id);

  const int max_batch = stages.front()->max_batch();
  const auto t0 = std::chrono::steady_clock::now();
  std::span<const float> logits;
  for (size_t at = 0; at < prompt.size(); at += static_cast<size_t>(max_batch)) {
    const int n = static_cast<int>(std::min<size_t>(static_cast<size_t>(max_batch), prompt.size() - at));
    const SeqChunk chunk{seq, static_cast<int>(at), n};
    logits = forward_chain(stages, {.chunks = {&chunk, 1}, .tokens = prompt.subspan(at, static_cast<size_t>(n))});
  }
  stats.prefill_seconds = seconds_since(t0);

  const auto t1 = std::chrono::steady_clock::now();
  int pos = static_cast<int>(prompt.size());
  const int n_ctx = stages.front()->n_ctx();
  for (int i = 0; i < options.n_predict; ++i) {
    const int32_t tok = sampler.sample(logits);
    if (vocab.is_end_of_generation(tok)) {
      stats.stopped_by_eog = true;
      break;
    }
    ++stats.generated_tokens;
    if (!on_token(tok) || i + 1 == options.n_predict || pos >= n_ctx) break;
    const SeqChunk chunk{seq, pos++, 1};
    logits = forward_chain(stages, {.chunks = {&chunk, 1}, .tokens = {&tok, 1}});
  }
  stats.decode_seconds = seconds_since(t1);
  for (Stage* s : stages) s->release(seq);
  return stats;
}

}  // namespace hearth::runtime
