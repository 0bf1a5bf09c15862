// Hyperparameters of a llama-family model, read from GGUF metadata.
#pragma once

#include <string>

#include "runtime/gguf.h"

namespace hearth::runtime {

struct ModelConfig {
  std::string arch;         // general.architecture, e.g. "llama"
  std::string name;         // general.name, or the file name
  int n_vocab = 0;          // tokens
  int n_embd = 0;           // hidden size
  int n_layer = 0;          // transformer blocks
  int n_head = 0;           // query heads
  int n_head_kv = 0;        // key/value heads (GQA when < n_head)
  int head_dim = 0;         // n_embd / n_head unless the file says otherwise
  int n_ff = 0;             // feed-forward hidden size
  int n_ctx_train = 0;      // context length the model was trained for
  int n_rot = 0;            // dimensions of each head that RoPE rotates
  float rms_eps = 1e-5f;
  float rope_base = 10000.f;

  int q_dim() const { return n_head * head_dim; }
  int kv_dim() const { return n_head_kv * head_dim; }
};

// Reads and checks the hyperparameters; throws GgufError naming the key that is missing or
// inconsistent, or listing the supported architectures when `arch` is unknown.
ModelConfig read_model_config(const GgufFile& file);

}  // namespace hearth::runtime
