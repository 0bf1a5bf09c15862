#include "cluster/stage_host.h"

#include <spdlog/spdlog.h>

#include <stdexcept>

#include "runtime/model/draft_check.h"

namespace hearth::cluster {

StageHost::StageHost(std::shared_ptr<const runtime::StageWeights> weights, const runtime::StageOptions& options,
                     runtime::ThreadPool& pool)
    : weights_(weights), stage_(weights, options, pool) {
  if (!stage_.layers_refused().empty())
    spdlog::warn("the GPU runs this stage's products only, not its layers whole: {}", stage_.layers_refused());
}

StageOutput StageHost::run(const Batch& batch) {
  chunks_.clear();
  for (const BatchChunk& c : batch.chunks) {
    if (spec().has_output && !c.starts() && !samplers_.count(c.seq))
      throw std::invalid_argument("sequence " + std::to_string(c.seq) + " continues but never started on this stage");
    if (c.drafts < 0 || c.drafts >= c.n_tokens || (c.drafts > 0 && !c.want_token))
      throw std::invalid_argument("sequence " + std::to_string(c.seq) + ": a chunk of " + std::to_string(c.n_tokens) +
                                  " tokens cannot carry a draft of " + std::to_string(c.drafts));
    chunks_.push_back({c.seq, c.pos, c.n_tokens, c.drafts + 1, c.drafts});
  }
  const runtime::StageInput in{
      .chunks = chunks_,
      .tokens = spec().has_embedding ? std::span<const int32_t>(batch.tokens) : std::span<const int32_t>(),
      .hidden = batch.hidden};
  const std::span<const float> out = stage_.forward(in);

  StageOutput result;
  if (!spec().has_output) {
    result.hidden.assign(out.begin(), out.end());
  } else {
    const size_t V = static_cast<size_t>(config().n_vocab);
    size_t at = 0, row = 0;
    for (const BatchChunk& c : batch.chunks) {
      auto [it, fresh] = samplers_.try_emplace(c.seq, c.sampling);
      if (!fresh && c.starts()) it->second = runtime::Sampler(c.sampling);  // a reused id starts over
      if (c.is_prompt)
        for (int t = 0; t < c.n_tokens; ++t) it->second.accept(batch.tokens[at + static_cast<size_t>(t)]);
      const auto rows = static_cast<size_t>(c.drafts + 1);
      if (c.want_token) {
        const auto draft = std::span<const int32_t>(batch.tokens)
                               .subspan(at + static_cast<size_t>(c.n_tokens - c.drafts), static_cast<size_t>(c.drafts));
        const runtime::DraftVerdict v = runtime::check_draft(it->second, out.subspan(row * V, rows * V), V, draft);
        result.sampled.push_back({c.seq, v.token, v.accepted});
      }
      at += static_cast<size_t>(c.n_tokens);
      row += rows;
    }
  }
  return result;
}

void StageHost::release(uint64_t seq) {
  stage_.release(seq);
  samplers_.erase(seq);
}

}  // namespace hearth::cluster
