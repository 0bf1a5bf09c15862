#include "runtime/model/model_spec_gguf.h"

#include <algorithm>
#include <charconv>
#include <map>
#include <string_view>

namespace hearth::runtime {

namespace {

// Block index of a "blk.N.<name>" tensor, or -1 for tensors outside the blocks.
int block_of(std::string_view name) {
  constexpr std::string_view kPrefix = "blk.";
  if (name.substr(0, kPrefix.size()) != kPrefix) return -1;
  name.remove_prefix(kPrefix.size());
  int block = -1;
  const auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), block);
  if (ec != std::errc() || end == name.data() || end == name.data() + name.size() || *end != '.') return -1;
  return block;
}

// A matrix multiplies activations (a weight of a linear layer); 1-D tensors are norms and biases,
// whose FLOPs are negligible next to a matvec.
bool is_matrix(const GgufTensorInfo& t) { return t.shape.size() >= 2 && t.rows() > 1; }

// The routed experts of a MoE block ("blk.N.ffn_gate_exps.weight" etc.), one matrix per expert.
bool is_experts(const GgufTensorInfo& t) { return t.shape.size() == 3 && t.name.find("_exps.") != std::string::npos; }

}  // namespace

partitioner::ModelSpec model_spec_from_gguf(const GgufFile& file, const ModelConfig& config) {
  partitioner::ModelSpec spec;
  spec.name = config.name;
  spec.n_layers = config.n_layer;
  spec.layer_weight_bytes.assign(static_cast<size_t>(config.n_layer), 0.0);
  spec.layer_flops_per_token.assign(static_cast<size_t>(config.n_layer), 0.0);
  std::vector<int> tensors_per_block(static_cast<size_t>(config.n_layer), 0);
  if (config.is_moe()) {
    spec.n_expert = config.n_expert;
    spec.n_expert_used = config.n_expert_used;
    spec.layer_expert_bytes.assign(static_cast<size_t>(config.n_layer), 0.0);
  }
  std::map<TensorType, double> matrix_bytes_by_type;

  for (const GgufTensorInfo& t : file.tensors()) {
    const int b = block_of(t.name);
    if (b < 0) continue;
    if (b >= config.n_layer)
      throw GgufError(file.path() + ": tensor " + t.name + " belongs to block " + std::to_string(b) + " but the model has " +
                      std::to_string(config.n_layer) + " blocks");
    const auto i = static_cast<size_t>(b);
    spec.layer_weight_bytes[i] += static_cast<double>(t.n_bytes);
    ++tensors_per_block[i];
    if (is_matrix(t)) {
      // A token multiplies by the experts it is routed to only.
      const double used = is_experts(t) && config.is_moe() ? double(config.n_expert_used) / config.n_expert : 1.0;
      spec.layer_flops_per_token[i] += 2.0 * static_cast<double>(t.n_elements()) * used;
      matrix_bytes_by_type[t.type] += static_cast<double>(t.n_bytes);
    }
    if (is_experts(t) && config.is_moe()) spec.layer_expert_bytes[i] += static_cast<double>(t.n_bytes);
  }
  for (int b = 0; b < config.n_layer; ++b)
    if (tensors_per_block[static_cast<size_t>(b)] == 0)
      throw GgufError(file.path() + ": block " + std::to_string(b) + " has no tensors (blk." + std::to_string(b) +
                      ".*); the file is truncated or not a llama model");

  // The type of most matrix bytes sets the decode rate: in mixed files (Q4_K_M keeps some
  // tensors in Q6_K) it is the one that dominates the reads.
  double most = -1;
  for (const auto& [type, bytes] : matrix_bytes_by_type) {
    if (bytes > most) {
      most = bytes;
      spec.weight_type = std::string(tensor_type_name(type));
    }
  }

  const GgufTensorInfo& embd = file.require_tensor("token_embd.weight");
  spec.embedding_bytes = static_cast<double>(embd.n_bytes);
  // Gemma 4 E2B/E4B: the first stage also holds the per-layer tables, and each stage must start
  // where no layer of it reads the KV cache of a layer before it.
  for (const char* name : {"per_layer_token_embd.weight", "per_layer_model_proj.weight", "per_layer_proj_norm.weight"})
    if (const GgufTensorInfo* t = file.find_tensor(name); t && config.n_embd_per_layer > 0)
      spec.per_layer_input_bytes += static_cast<double>(t->n_bytes);
  spec.n_embd_per_layer = config.n_embd_per_layer;
  if (config.n_layer_kv > 0) {
    spec.no_cut_at.assign(static_cast<size_t>(config.n_layer) + 1, false);
    for (int b = 0; b <= config.n_layer; ++b) spec.no_cut_at[static_cast<size_t>(b)] = !config.stage_may_start_at(b);
    for (int l = 0; l < config.n_layer; ++l) spec.layer_shares_kv.push_back(!config.has_own_kv(l));
  }
  const GgufTensorInfo* output = file.find_tensor("output.weight");
  const GgufTensorInfo* output_norm = file.find_tensor("output_norm.weight");
  spec.tied_embeddings = output == nullptr;
  // Like model_spec_from_shape: the LM head's bytes include the matrix even when tied, because a
  // last stage that is not the head must hold its own copy of the table.
  spec.output_bytes =
      static_cast<double>(output ? output->n_bytes : embd.n_bytes) + static_cast<double>(output_norm ? output_norm->n_bytes : 0);
  spec.output_flops_per_token = 2.0 * config.n_vocab * static_cast<double>(config.n_embd);

  if (config.n_swa > 0)
    for (int l = 0; l < config.n_layer; ++l) spec.layer_window.push_back(config.is_swa(l) ? config.n_swa : 0);
  if (config.full_attention_interval > 0)
    for (int l = 0; l < config.n_layer; ++l)
      spec.layer_state_bytes.push_back(config.is_recurrent(l) ? 4.0 * static_cast<double>(config.ssm_state_floats()) : 0.0);
  spec.n_head = config.n_head;
  // Layers of different shapes (Gemma 4) are sized as the widest layer's cache: the KV estimate is
  // an upper bound.
  int widest = 0;
  for (int l = 0; l < config.n_layer; ++l) widest = std::max(widest, config.layer_kv_dim(l));
  spec.n_kv_head = config.n_head_kv;
  spec.head_dim = ((widest > 0 ? widest : config.kv_dim()) + config.n_head_kv - 1) / config.n_head_kv;
  spec.n_embd = config.n_embd;
  spec.n_ff = config.is_moe() ? config.n_ff_exp : config.n_ff;
  spec.n_vocab = config.n_vocab;
  return spec;
}

}  // namespace hearth::runtime
