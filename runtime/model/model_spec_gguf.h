// What the planner needs to know about a GGUF model, read from its tensor directory: the bridge
// from a file on disk to partitioner::ModelSpec.
//
//   GgufFile f = GgufFile::open(path);
//   partitioner::ModelSpec spec = model_spec_from_gguf(f, read_model_config(f));
#pragma once

#include "partitioner/model_spec.h"
#include "runtime/format/gguf.h"
#include "runtime/model/model_config.h"

namespace hearth::runtime {

// Exact bytes per block (the sum of the n_bytes of every blk.N.* tensor, so norms, biases and
// mixed quantizations are counted as stored), linear FLOPs per token per block (2 x the
// elements of its matrices), the embedding table and the LM head (output.weight plus
// output_norm.weight; when output.weight is absent the head is tied to token_embd). The weight
// type is the type holding most of the blocks' matrix bytes; dimensions come from `config`.
// Throws GgufError when a block or token_embd.weight has no tensors.
partitioner::ModelSpec model_spec_from_gguf(const GgufFile& file, const ModelConfig& config);

}  // namespace hearth::runtime
