// Generation on this device: a prompt through a chain of in-process stages, then one token at
// a time until end of generation or a token budget.
//
// A single stage [0, n_layers) is the usual case; several stages chained in-process give the
// same result and are how tests check that splitting a model does not change it.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "runtime/model/sampler.h"
#include "runtime/model/stage.h"
#include "runtime/text/vocab.h"

namespace hearth::runtime {

// Runs one batch through stages in order: the first takes token ids, the others the previous
// stage's hidden states. Returns the last stage's output.
std::span<const float> forward_chain(std::span<Stage* const> stages, const StageInput& input);

struct GenerateOptions {
  int n_predict = 128;  // tokens to generate at most
  SamplingParams sampling;
};

struct GenerateStats {
  int prompt_tokens = 0;
  int generated_tokens = 0;
  double prefill_seconds = 0;  // prompt through the stages, up to the first logits
  double decode_seconds = 0;   // every later step
  bool stopped_by_eog = false;
};

// Feeds `prompt` (in batches of the stages' max_batch) then samples up to n_predict tokens,
// calling on_token for each; on_token returning false stops early. Releases `seq` at the end.
GenerateStats generate(std::span<Stage* const> stages, uint64_t seq, std::span<const int32_t> prompt,
                       const GenerateOptions& options, const Vocab& vocab, const std::function<bool(int32_t)>& on_token);

}  // namespace hearth::runtime
