// Runs one pipeline stage inside a daemon: takes batches of chunks (token ids on the first stage,
// hidden states on the others), and produces hidden states for the next stage or, on the last
// stage, sampled tokens. Samplers live here, on the last stage, created from the parameters that
// travel with a sequence's first chunk, so a pipeline samples exactly as one device would.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "runtime/model/sampler.h"
#include "runtime/model/stage.h"

namespace hearth::cluster {

struct BatchChunk {
  uint64_t seq = 0;
  int pos = 0;
  int n_tokens = 0;
  bool is_prompt = false;            // its tokens count for the repetition penalty
  bool want_token = false;           // the last stage samples after it
  runtime::SamplingParams sampling;  // used when the request starts
  // The first chunk of a request that continues a kept cache (pos > 0): the last stage starts a
  // new sampler, as at pos 0.
  bool restarts = false;
  // Speculative decoding: the chunk's last `drafts` tokens are a draft (want_token set). The last
  // stage checks them against its own samples (runtime/model/draft_check.h) and answers how many
  // it accepted plus its own next token; the positions after the accepted ones are overwritten by
  // the sequence's next chunk, on every stage.
  int drafts = 0;
  bool starts() const { return pos == 0 || restarts; }
};

struct Batch {
  std::vector<BatchChunk> chunks;
  std::vector<int32_t> tokens;  // every token id of the batch
  std::vector<float> hidden;    // [tokens x n_embd], empty on the first stage
  int n_tokens() const { return static_cast<int>(tokens.size()); }
};

struct SampledToken {
  uint64_t seq;
  int32_t token;     // the last stage's own token, after the accepted drafts
  int accepted = 0;  // leading draft tokens of the chunk the last stage accepted (come before `token`)
};

struct StageOutput {
  std::vector<float> hidden;          // for the next stage
  std::vector<SampledToken> sampled;  // from the last stage
};

class StageHost {
 public:
  StageHost(std::shared_ptr<const runtime::StageWeights> weights, const runtime::StageOptions& options,
            runtime::ThreadPool& pool);

  const runtime::StageSpec& spec() const { return stage_.spec(); }
  const runtime::ModelConfig& config() const { return stage_.config(); }
  int max_batch() const { return stage_.max_batch(); }
  // Throws std::invalid_argument (state unchanged) when the batch does not fit this stage.
  StageOutput run(const Batch& batch);
  void release(uint64_t seq);
  // Its pager's reads so far (zeros when nothing is paged).
  runtime::PagerStats pager_stats() const { return stage_.pager() ? stage_.pager()->stats() : runtime::PagerStats{}; }

 private:
  std::shared_ptr<const runtime::StageWeights> weights_;
  runtime::Stage stage_;
  std::map<uint64_t, runtime::Sampler> samplers_;
  std::vector<runtime::SeqChunk> chunks_;  // reused
};

}  // namespace hearth::cluster
