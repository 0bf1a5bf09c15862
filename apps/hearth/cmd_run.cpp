// `hearth run`: generate a continuation of a prompt on this device.
#include <spdlog/spdlog.h>

#include <cstdio>
#include <memory>

#include "apps/hearth/commands.h"
#include "apps/hearth/gpu_option.h"
#include "apps/hearth/kv_type_option.h"
#include "apps/hearth/local_model.h"
#include "apps/hearth/memory_limit.h"
#include "apps/hearth/reply_printer.h"
#include "profiles/profiler.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/reply_filter.h"
#include "runtime/model/generator.h"
#include "runtime/model/kv_layout.h"

namespace hearth::cli {

namespace {

constexpr int kMaxBatch = 256;  // prompt tokens per step

struct RunArgs {
  std::string model;
  std::string prompt;
  int n_predict = 128;
  runtime::SamplingParams sampling;
  int threads = 0;
  int ctx = 0;
  bool chat = false;
  bool hide_reasoning = false;
  std::string reasoning_effort;  // "" = the template's default
  std::string kv_type = kDefaultKvType;
  std::string gpu = "auto";
  uint64_t memory_limit = 0;  // 0: no limit
};

// A context whose KV cache cannot fit this machine's memory is refused before it is allocated
// (zero-filling one larger than memory would get the process killed, not an error).
void check_context_fits(const runtime::ModelConfig& c, int ctx, runtime::TensorType kv_type, int max_batch) {
  if (ctx <= 0) return;
  const auto kv = static_cast<double>(runtime::kv_layout(c, 0, c.n_layer, ctx, max_batch).bytes(kv_type));
  const profiles::MemoryBudget m = profiles::memory_budget(profiles::read_system_info(), 0);
  if (kv > static_cast<double>(m.basis_bytes))
    throw std::invalid_argument("--ctx " + std::to_string(ctx) + " needs a KV cache of " + std::to_string(kv / 1e9) +
                                " GB, more than this machine's " + m.basis + " (" + std::to_string(m.basis_bytes / 1000000) +
                                " MB): use a smaller --ctx");
}

void run(const RunArgs& a) {
  LocalModel m = open_local_model(a.model);
  check_context_fits(m.config, a.ctx, kv_type_named(a.kv_type), kMaxBatch);
  runtime::Tokenizer tok(runtime::load_vocab(m.file.metadata()));
  runtime::ThreadPool pool(a.threads > 0 ? a.threads : runtime::hardware_threads());
  runtime::StageOptions options{.n_ctx = a.ctx, .max_batch = kMaxBatch, .max_sequences = 1, .kv_type = kv_type_named(a.kv_type)};
  options.paging = paging_within(m, options, a.memory_limit, pool);
  const auto gpu = options.paging.empty() ? runtime::choose_stage_gpu(a.gpu, *m.weights) : nullptr;
  options.offload = gpu ? &gpu->offload() : nullptr;
  options.layers = gpu ? gpu->layers() : nullptr;
  lay_out_within(m, options, a.memory_limit, pool);
  runtime::Stage stage(m.weights, options, pool);
  std::string text = a.prompt;
  runtime::ReplyFilter reply;  // what of the reply is the answer, what the reasoning
  if (a.chat) {  // the prompt as one user message in the model's chat format; BOS stays the tokenizer's
    const auto tmpl = runtime::detect_chat_template(m.file.metadata().get_string_opt("tokenizer.chat_template").value_or(""));
    spdlog::info("chat template: {}{}", tmpl.name, tmpl.fallback ? " (the model has none hearth recognises)" : "");
    const auto& v = tok.vocab();
    const runtime::ChatMessage user{"user", a.prompt};
    runtime::ChatRenderOptions options{.bos_token = v.bos >= 0 ? v.tokens[size_t(v.bos)] : "",
                                       .eos_token = v.eos >= 0 ? v.tokens[size_t(v.eos)] : ""};
    // As the API takes it: none/minimal switch Qwen's thinking off, an effort asks for it.
    if (!a.reasoning_effort.empty()) options.thinking = a.reasoning_effort != "none" && a.reasoning_effort != "minimal";
    if (options.thinking == true) options.reasoning_effort = a.reasoning_effort;
    text = runtime::render_chat(tmpl, {&user, 1}, options);
    reply = runtime::ReplyFilter::for_chat(tmpl, v, options);
  }
  const std::vector<int32_t> prompt = tok.encode(text, {.parse_special = a.chat});
  spdlog::debug("prompt: {} tokens, kernels: {}", prompt.size(), stage.kernels().name);

  runtime::Utf8Stream utf8, reasoning_utf8;
  ReplyPrinter printer(!a.hide_reasoning);
  runtime::Stage* stages[] = {&stage};
  const auto stats =
      runtime::generate(stages, 1, prompt, {.n_predict = a.n_predict, .sampling = a.sampling}, tok.vocab(), [&](int32_t id) {
        const runtime::ReplyPiece p = reply.next(id, tok.piece(id));
        if (p.part == runtime::ReplyPart::kReasoning) {
          printer.reasoning(reasoning_utf8.push(p.text));
        } else {
          printer.reasoning(reasoning_utf8.flush());
          printer.answer(utf8.push(p.text));
        }
        return true;
      });
  printer.reasoning(reasoning_utf8.flush());
  printer.answer(utf8.flush());
  printer.end();
  std::fputc('\n', stdout);
  spdlog::info("{} prompt tokens in {:.3f} s, {} tokens generated at {:.2f} tok/s", stats.prompt_tokens, stats.prefill_seconds,
               stats.generated_tokens, stats.decode_seconds > 0 ? (stats.generated_tokens - 1) / stats.decode_seconds : 0.0);
  if (stage.pager()) log_paging(stage.pager()->stats());
}

}  // namespace

void add_run_command(CLI::App& app) {
  auto a = std::make_shared<RunArgs>();
  CLI::App* cmd = app.add_subcommand("run", "Generate a continuation of a prompt on this device");
  cmd->add_option("-m,--model", a->model, "GGUF model file")->required()->check(CLI::ExistingFile);
  cmd->add_option("-p,--prompt", a->prompt, "Prompt text")->required();
  cmd->add_flag("--chat", a->chat, "Send the prompt as a user message in the model's chat template (ChatML if none)");
  cmd->add_option("--reasoning-effort", a->reasoning_effort,
                  "With --chat, reasoning models: none (Qwen 3 / 3.5 answer without thinking), or low, medium, high "
                  "(gpt-oss's effort)")
      ->check(CLI::IsMember({"none", "minimal", "low", "medium", "high"}));
  cmd->add_flag("--hide-reasoning", a->hide_reasoning,
                "With --chat: do not show a reasoning model's reasoning (shown dimmed on a terminal, never in a pipe)");
  cmd->add_option("-n,--n-predict", a->n_predict, "Tokens to generate at most")->check(CLI::PositiveNumber);
  cmd->add_option("--temp", a->sampling.temperature, "Temperature; 0 = greedy")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-k", a->sampling.top_k, "Keep the K most likely tokens; 0 = off")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", a->sampling.top_p, "Nucleus sampling threshold; 1 = off")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--min-p", a->sampling.min_p, "Drop tokens below min-p x the top probability; 0 = off")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--repeat-penalty", a->sampling.repeat_penalty, "Penalty for recent tokens; 1 = off")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--seed", a->sampling.seed, "Random seed for sampling");
  cmd->add_option("-t,--threads", a->threads, "Compute threads (default: all cores)")->check(CLI::NonNegativeNumber);
  cmd->add_option("-c,--ctx", a->ctx, "Context length in tokens (default: the model's, at most 4096)")
      ->check(CLI::NonNegativeNumber);
  add_memory_limit_option(cmd, a->memory_limit);
  add_kv_type_option(cmd, a->kv_type);
  add_gpu_option(cmd, a->gpu);
  cmd->callback([a] { run(*a); });
}

}  // namespace hearth::cli
