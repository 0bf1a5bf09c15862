// `hearth mkmodel`: write a random-weight model of a real shape.
#include <spdlog/spdlog.h>

#include <chrono>
#include <memory>
#include <optional>

#include "apps/hearth/commands.h"
#include "partitioner/model_spec.h"
#include "runtime/format/mapped_file.h"
#include "runtime/model/model_maker.h"

namespace hearth::cli {

void add_mkmodel_command(CLI::App& app) {
  struct Args {
    std::string out, type = "f32", expert_type, preset = "tiny", arch = "llama";
    runtime::MakeModelOptions opt;
    int dim = 0, layers = 0, heads = 0, kv_heads = 0, ffn = 0, vocab = 0, ctx = 0, experts = 0, experts_used = 0, expert_ffn = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("mkmodel", "Write a llama-family GGUF model with random weights");
  cmd->add_option("-o,--out", a->out, "Output file")->required();
  cmd->add_option("--arch", a->arch,
                  "Architecture: llama, qwen2, qwen3, qwen3moe, olmoe, phi3, gemma3, gemma4, qwen35, qwen35moe, gpt-oss (llama with experts = "
                  "Mixtral)")
      ->capture_default_str();
  cmd->add_option("--type", a->type,
                  "Weight type: f32, f16, bf16, q8_0, q4_0, q5_0, q4_k, q5_k, q6_k, mxfp4, iq4_nl, iq4_xs")
      ->capture_default_str();
  cmd->add_option("--expert-type", a->expert_type,
                  "MoE: the expert matrices' type, if not --type (gpt-oss is published with mxfp4 experts)");
  cmd->add_option("--preset", a->preset,
                  "Shape: tiny, tinyllama-1.1b, llama-2-7b; MoE: tiny-moe, qwen3-30b-a3b; or any `hearth plan --preset` shape "
                  "(gemma-4-e2b, qwen3.5-35b-a3b, ...), written with its architecture's layout")
      ->capture_default_str();
  cmd->add_option("--dim", a->dim, "Override: embedding size");
  cmd->add_option("--layers", a->layers, "Override: transformer blocks");
  cmd->add_option("--heads", a->heads, "Override: attention heads");
  cmd->add_option("--kv-heads", a->kv_heads, "Override: key/value heads");
  cmd->add_option("--ffn", a->ffn, "Override: feed-forward size");
  cmd->add_option("--vocab", a->vocab, "Override: vocabulary size (byte-level vocabulary)");
  cmd->add_option("--ctx", a->ctx, "Override: context length");
  cmd->add_option("--sliding-window", a->opt.sliding_window,
                  "gemma3, gemma4, gpt-oss: tokens a sliding-window layer attends to (a planner preset: its own)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--full-layer-period", a->opt.full_layer_period,
                  "gemma4: every this-many-th layer is a full-attention one (6: 31B; 5: E2B/E4B)")
      ->capture_default_str();
  cmd->add_option("--per-layer-embd", a->opt.per_layer_embd, "gemma4: per-layer embedding values per layer (E2B/E4B: 256)");
  cmd->add_option("--shared-kv-layers", a->opt.shared_kv_layers,
                  "gemma4: the last layers, reading an earlier layer's KV cache (E2B: 20)");
  cmd->add_option("--experts", a->experts, "Override: experts per layer (MoE)");
  cmd->add_option("--experts-used", a->experts_used, "Override: experts each token uses (MoE)");
  cmd->add_option("--expert-ffn", a->expert_ffn, "Override: feed-forward size of each expert (MoE)");
  cmd->add_option("--seed", a->opt.seed, "Random seed")->capture_default_str();
  cmd->add_option("--vocab-from", a->opt.vocab_from, "Copy the tokenizer from this GGUF")->check(CLI::ExistingFile);
  cmd->add_option("--name", a->opt.name, "general.name of the model")->capture_default_str();
  cmd->callback([a, cmd] {
    // A planner preset fixes the architecture and its layout; the small presets leave them to the flags.
    std::optional<runtime::RandomModelShape> shape = runtime::random_model_preset(a->preset);
    if (!shape) {
      const std::optional<partitioner::ModelShape> planned = partitioner::preset_shape(a->preset);
      if (!planned) {
        std::string names;
        for (const auto& n : runtime::random_model_preset_names()) names += (names.empty() ? "" : ", ") + n;
        for (const auto& n : partitioner::preset_names()) names += ", " + n;
        throw std::invalid_argument("unknown preset '" + a->preset + "' (" + names + ")");
      }
      const std::string asked = a->arch;
      const int window = a->opt.sliding_window;
      runtime::apply_preset_layout(*planned, a->opt);  // its published window, unless one is asked for
      if (cmd->count("--sliding-window") > 0) a->opt.sliding_window = window;
      if (cmd->count("--arch") > 0 && asked != a->opt.arch)
        throw std::invalid_argument("preset '" + a->preset + "' has the layout of --arch " + a->opt.arch + ", not " + asked);
      a->arch = a->opt.arch;
      shape = a->opt.shape;
    }
    const auto computable_type = [](const std::string& name) {
      auto type = runtime::tensor_type_from_name(name);
      if (!type || !runtime::tensor_type_info(static_cast<uint32_t>(*type))->computable)
        throw std::invalid_argument("unknown or unsupported type '" + name + "' (" + runtime::computable_type_names() + ")");
      return *type;
    };
    const runtime::TensorType type = computable_type(a->type);
    if (!a->expert_type.empty()) a->opt.expert_type = computable_type(a->expert_type);
    const auto override_if = [](int v, int& field) {
      if (v > 0) field = v;
    };
    override_if(a->dim, shape->n_embd);
    override_if(a->layers, shape->n_layer);
    override_if(a->heads, shape->n_head);
    override_if(a->kv_heads, shape->n_head_kv);
    override_if(a->ffn, shape->n_ff);
    override_if(a->vocab, shape->n_vocab);
    override_if(a->ctx, shape->n_ctx);
    override_if(a->experts, shape->n_expert);
    override_if(a->experts_used, shape->n_expert_used);
    override_if(a->expert_ffn, shape->n_ff_exp);
    if (a->heads > 0 && a->kv_heads == 0) shape->n_head_kv = shape->n_head;
    a->opt.shape = *shape;
    a->opt.type = type;
    a->opt.arch = a->arch;
    const auto t0 = std::chrono::steady_clock::now();
    runtime::make_random_model(a->out, a->opt);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    spdlog::info("wrote {} ({:.1f} MB, {}) in {:.1f} s", a->out, runtime::file_size(a->out) / 1e6, a->type, s);
  });
}

}  // namespace hearth::cli
