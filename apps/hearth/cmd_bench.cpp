// `hearth bench`: prefill and decode speed of a model on this device.
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include "apps/hearth/commands.h"
#include "apps/hearth/gpu_option.h"
#include "apps/hearth/kv_type_option.h"
#include "apps/hearth/local_model.h"
#include "apps/hearth/memory_limit.h"
#include "runtime/model/generator.h"
#include "runtime/kernels/membw.h"

namespace hearth::cli {

namespace {

struct BenchArgs {
  std::string model;
  int prompt_tokens = 128;
  int gen_tokens = 64;
  int threads = 0;
  int repeats = 3;
  int batch = 1;  // sequences decoded together, one token each per step (as a stage batches streams)
  int depth = 0;  // tokens already in each sequence's cache before the measured prompt (a conversation's history)
  bool json = false;
  std::string kv_type = kDefaultKvType;
  std::string gpu = "auto";
  uint64_t memory_limit = 0;  // 0: none; else weights beyond it are paged (and no bandwidth probe is run)
};

// Nanoseconds this process's threads have spent runnable but waiting for a CPU, summed
// (/proc/self/task/*/schedstat, Linux; 0 elsewhere). Over decode it tells how much of the machine
// other processes took: the fraction of bandwidth decode reaches is only meaningful when hearth
// had its cores.
uint64_t runqueue_wait_ns() {
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::ifstream f(task.path() / "schedstat");
    uint64_t on_cpu = 0, waiting = 0;
    if (f >> on_cpu >> waiting) total += waiting;
  }
  return total;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// The history (--depth) goes in chunks of this many tokens, as a stage prefills a long prompt.
constexpr int kDepthChunk = 256;

void bench(const BenchArgs& a) {
  LocalModel m = open_local_model(a.model);
  const int threads = a.threads > 0 ? a.threads : runtime::hardware_threads();
  runtime::ThreadPool pool(threads);
  runtime::StageOptions options{.n_ctx = a.depth + a.prompt_tokens + a.gen_tokens + 1,
                                .max_batch = std::max({a.batch, a.prompt_tokens, std::min(a.depth, kDepthChunk)}),
                                .max_sequences = a.batch,
                                .kv_type = kv_type_named(a.kv_type)};
  options.paging = paging_within(m, options, a.memory_limit, pool);
  const auto gpu = options.paging.empty() ? runtime::choose_stage_gpu(a.gpu, *m.weights) : nullptr;
  options.offload = gpu ? &gpu->offload() : nullptr;
  options.layers = gpu ? gpu->layers() : nullptr;
  const runtime::StageWeights::HeldBytes held = lay_out_within(m, options, a.memory_limit, pool);
  runtime::Stage stage(m.weights, options, pool);
  runtime::Rng rng(42);
  std::vector<int32_t> prompt(static_cast<size_t>(a.prompt_tokens)), history(static_cast<size_t>(a.depth));
  for (auto& t : prompt) t = static_cast<int32_t>(rng.next() % static_cast<uint64_t>(m.config.n_vocab));
  for (auto& t : history) t = static_cast<int32_t>(rng.next() % static_cast<uint64_t>(m.config.n_vocab));

  // The memory read bandwidth is measured in the same run as decode, in short passes between its
  // tokens (their time is not decode's), so that both figures see the same machine: on a shared or
  // throttled device an absolute GB/s says little, while the fraction of what this machine
  // streams at the same moments is the runtime's own efficiency. A pass reads 128 MiB, four times
  // the last-level cache of most devices, and decode's weights evict it from there in between.
  using Clock = std::chrono::steady_clock;
  // Under --memory-limit the probe's buffer would not fit the budget: no probe then.
  const bool probing = a.memory_limit == 0;
  runtime::ReadBandwidthProbe probe(probing ? size_t{128} << 20 : size_t{1} << 20);
  constexpr int kTokensPerProbe = 4;
  std::vector<double> prefill, decode, bandwidth, cpu_wait;
  // Weight bytes each decode step read, as the stage counts them: every matrix, and of a MoE
  // model's experts those the step's tokens chose (so it varies with the routing).
  std::vector<double> step_bytes;
  // Paging (--memory-limit): bytes read from storage per decode step, their read rate, and the
  // share of the reads' time the stage did not wait for (hidden behind compute).
  std::vector<double> paged_bytes, storage_gb_s, hidden;
  // Sequences 1..batch; each is prefilled alone (prefill speed is that of sequence 1), then all
  // decode together, one token each per forward().
  std::vector<runtime::SeqChunk> chunks(static_cast<size_t>(a.batch));
  runtime::GpuCounters gpu_decode;  // over the measured rounds' decode steps
  int gpu_steps = 0;
  // Later rounds go back to the history's end, unless the stage cannot go back that far (recurrent
  // layers, a sliding-window ring shorter than a round): then they feed the history again.
  const bool refeed = stage.max_rewind() < a.prompt_tokens + a.gen_tokens;
  std::vector<int32_t> toks(static_cast<size_t>(a.batch), 1);
  for (int r = 0; r < a.repeats + 1; ++r) {  // the first round warms caches and page mappings
    double prefill_s = 0;
    // The history, not measured: once, as later rounds rewind to its end, or every round.
    for (int b = 0; b < a.batch && (r == 0 || refeed); ++b)
      for (int at = 0; at < a.depth; at += kDepthChunk) {
        const int n = std::min(kDepthChunk, a.depth - at);
        runtime::SeqChunk chunk{static_cast<uint64_t>(b + 1), at, n};
        stage.forward({.chunks = {&chunk, 1}, .tokens = std::span(history).subspan(static_cast<size_t>(at), static_cast<size_t>(n))});
      }
    for (int b = 0; b < a.batch && a.prompt_tokens > 0; ++b) {
      const auto t0 = Clock::now();
      runtime::SeqChunk chunk{static_cast<uint64_t>(b + 1), a.depth, a.prompt_tokens};
      stage.forward({.chunks = {&chunk, 1}, .tokens = prompt});
      if (b == 0) prefill_s = std::chrono::duration<double>(Clock::now() - t0).count();
    }
    double decode_s = 0;
    uint64_t waited_ns = 0;
    const runtime::GpuCounters gpu0 = gpu ? gpu->counters() : runtime::GpuCounters{};
    const uint64_t read0 = stage.weight_bytes_read();
    const runtime::PagerStats paged0 = stage.pager() ? stage.pager()->stats() : runtime::PagerStats{};
    for (int i = 0; i < a.gen_tokens; ++i) {
      if (probing && i % kTokensPerProbe == 0) {
        const double bw = probe.measure(pool, 1);
        if (r > 0) bandwidth.push_back(bw);
      }
      const uint64_t w0 = runqueue_wait_ns();
      const auto t1 = Clock::now();
      for (int b = 0; b < a.batch; ++b) chunks[static_cast<size_t>(b)] = {static_cast<uint64_t>(b + 1), a.depth + a.prompt_tokens + i, 1};
      auto logits = stage.forward({.chunks = chunks, .tokens = toks});
      const auto n_vocab = static_cast<size_t>(m.config.n_vocab);
      for (size_t b = 0; b < toks.size(); ++b) {
        const auto row = logits.subspan(b * n_vocab, n_vocab);
        toks[b] = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
      }
      decode_s += std::chrono::duration<double>(Clock::now() - t1).count();
      waited_ns += runqueue_wait_ns() - w0;
    }
    if (gpu && r > 0) {
      const runtime::GpuCounters g = gpu->counters();
      gpu_decode.submissions += g.submissions - gpu0.submissions;
      gpu_decode.weight_bytes += g.weight_bytes - gpu0.weight_bytes;
      gpu_decode.gpu_s += g.gpu_s - gpu0.gpu_s;
      gpu_decode.wall_s += g.wall_s - gpu0.wall_s;
      gpu_steps += a.gen_tokens;
    }
    if (a.gen_tokens > 0 && r > 0) step_bytes.push_back(static_cast<double>(stage.weight_bytes_read() - read0) / a.gen_tokens);
    if (a.gen_tokens == 0 && r > 0 && probing) bandwidth.push_back(probe.measure(pool, 1));
    if (stage.pager() && a.gen_tokens > 0 && r > 0) {
      const runtime::PagerStats p = stage.pager()->stats();
      const double read_s = p.read_seconds - paged0.read_seconds, wait_s = p.wait_seconds - paged0.wait_seconds;
      paged_bytes.push_back(static_cast<double>(p.bytes_read - paged0.bytes_read) / a.gen_tokens);
      storage_gb_s.push_back(read_s > 0 ? static_cast<double>(p.bytes_read - paged0.bytes_read) / read_s / 1e9 : 0);
      hidden.push_back(read_s > 0 ? std::max(0.0, 1.0 - wait_s / read_s) : 0);
    }
    if (a.depth == 0 || refeed)
      for (int b = 0; b < a.batch; ++b) stage.release(static_cast<uint64_t>(b + 1));
    if (r == 0) continue;
    prefill.push_back(a.prompt_tokens / prefill_s);
    decode.push_back(static_cast<double>(a.gen_tokens) * a.batch / decode_s);
    cpu_wait.push_back(decode_s > 0 ? static_cast<double>(waited_ns) * 1e-9 / (decode_s * threads) : 0);
  }
  const double pf = a.prompt_tokens > 0 ? median(prefill) : 0, dc = a.gen_tokens > 0 ? median(decode) : 0;
  const double bytes = step_bytes.empty() ? 0 : median(step_bytes);
  const double read_gb_s = bytes * dc / a.batch / 1e9;  // bytes per step x steps per second
  const double mem_gb_s = bandwidth.empty() ? 0 : median(bandwidth) / 1e9;
  const double paged = paged_bytes.empty() ? 0 : median(paged_bytes);
  const double storage = storage_gb_s.empty() ? 0 : median(storage_gb_s), hidden_share = hidden.empty() ? 0 : median(hidden);
  const double fraction = mem_gb_s > 0 ? read_gb_s / mem_gb_s : 0;
  // Per decode step on the GPU: the products' own time (timestamps), and the time the stage spent
  // on them (that and copies, submission, waking up): what a pass per product costs.
  const double steps = gpu_steps > 0 ? gpu_steps : 1;
  const double gpu_busy_ms = gpu_decode.gpu_s / steps * 1e3, gpu_wall_ms = gpu_decode.wall_s / steps * 1e3;
  const double gpu_read_gb_s = gpu_decode.gpu_s > 0 ? static_cast<double>(gpu_decode.weight_bytes) / gpu_decode.gpu_s / 1e9 : 0;
  if (a.json) {
    nlohmann::json j = {
        {"model", a.model},
        {"weight_type", std::string(runtime::tensor_type_name(m.weights->layer(0).wq.type))},
        {"threads", threads},
        {"kernels", stage.kernels().name},
        {"gpu", gpu ? nlohmann::json{{"name", gpu->info().name},
                                     {"kind", gpu->info().kind},
                                     {"layers", gpu->placement().layers},
                                     {"output_head", gpu->placement().output},
                                     {"weight_bytes", gpu->placement().bytes},
                                     {"decode_busy_ms", gpu_busy_ms},
                                     {"decode_products_ms", gpu_wall_ms},
                                     {"decode_submissions", gpu_decode.submissions / steps},
                                     {"decode_busy_read_gb_s", gpu_read_gb_s}}
                    : nlohmann::json(nullptr)},
        {"prompt_tokens", a.prompt_tokens},
        {"gen_tokens", a.gen_tokens},
        {"batch", a.batch},
        {"depth", a.depth},
        {"kv_type", a.kv_type},
        {"repeats", a.repeats},
        {"prefill_tok_s", pf},
        {"decode_tok_s", dc},
        {"decode_weight_bytes", bytes},
        {"decode_read_gb_s", read_gb_s},
        {"memory_read_gb_s", mem_gb_s},
        {"memory_read_huge_page_bytes", probe.huge_bytes()},
        {"weights_in_memory_bytes", held.moved},
        {"weights_huge_page_bytes", held.huge},
        {"weights_interleaved_bytes", held.interleaved},
        {"decode_fraction_of_bandwidth", fraction},
        {"decode_cpu_wait_fraction", median(cpu_wait)},
        {"memory_limit_bytes", a.memory_limit},
        {"paging",
         stage.pager()
             ? nlohmann::json{{"layers", stage.pager()->plan().layers.size()},
                              {"part", stage.pager()->plan().part == runtime::PagedPart::Ffn ? "ffn" : "ffn+attention"},
                              {"resident_bytes", runtime::paging_cost(*m.weights, stage.pager()->plan()).resident_bytes},
                              {"decode_storage_bytes", paged},
                              {"storage_read_gb_s", storage},
                              {"read_hidden_fraction", hidden_share},
                              {"direct_io", stage.pager()->stats().direct}}
             : nlohmann::json(nullptr)}};
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::printf("model          %s (%s)\n", a.model.c_str(), m.config.name.c_str());
  std::printf("threads        %d (%s kernels)\n", threads, std::string(stage.kernels().name).c_str());
  if (gpu)
    std::printf("gpu            %s (%s): %d layers (%d whole, with their KV cache)%s, %.1f MiB of weights; the rest on the CPU\n",
                gpu->info().name.c_str(), gpu->info().kind.c_str(), gpu->placement().layers,
                stage.layers_refused().empty() ? gpu->placement().whole_layers : 0,
                gpu->placement().output ? " and the output head" : "", static_cast<double>(gpu->placement().bytes) / (1 << 20));
  if (gpu && !stage.layers_refused().empty()) std::printf("               not whole: %s\n", stage.layers_refused().c_str());
  if (held.moved > 0)
    std::printf("weights        %.1f MB in memory, %.1f MB of it on 2 MiB pages%s; %.1f MB mapped from the file\n",
                held.moved / 1e6, held.huge / 1e6,
                held.interleaved > 0 ? (", " + std::to_string(held.interleaved / 1000000) + " MB interleaved").c_str() : "",
                (m.weights->mapped_bytes() - held.moved) / 1e6);
  else std::printf("weights        %.1f MB mapped from the file\n", m.weights->mapped_bytes() / 1e6);
  std::printf("kv cache       %s%s\n", a.kv_type.c_str(),
              a.depth > 0 ? (", " + std::to_string(a.depth) + " tokens of history before the prompt").c_str() : "");
  std::printf("prefill        %8.2f tok/s  (%d tokens, median of %d)\n", pf, a.prompt_tokens, a.repeats);
  std::printf("decode         %8.2f tok/s  (%d tokens x %d sequences, median of %d)\n", dc, a.gen_tokens, a.batch, a.repeats);
  std::printf("decode reads   %8.2f GB/s   (%.1f MB of weights per step%s)\n", read_gb_s, bytes / 1e6,
              m.config.is_moe() ? ": attention, routers, the experts chosen and the output head" : "");
  if (probing) {
    std::printf("memory read    %8.2f GB/s   (%d threads streaming %.0f MiB%s between decode tokens, median of %zu)\n", mem_gb_s,
                threads, static_cast<double>(probe.bytes()) / (1 << 20), probe.huge_bytes() > 0 ? " on 2 MiB pages" : "",
                bandwidth.size());
    std::printf("decode / read  %8.0f %%\n", 100 * fraction);
  }
  if (stage.pager())
    std::printf("paged          %8.1f MB     from storage per decode step at %.2f GB/s (%s); %.0f%% of the reads' time hidden "
                "behind compute\n",
                paged / 1e6, storage, stage.pager()->stats().direct ? "direct I/O" : "buffered", 100 * hidden_share);
  if (gpu && gpu_steps > 0)
    std::printf(
        "gpu decode     %8.2f ms     of GPU work per step (%.2f ms with copies, submission and waiting; %.0f "
        "submissions), reading %.1f GB/s of weights while busy\n",
        gpu_busy_ms, gpu_wall_ms, gpu_decode.submissions / steps, gpu_read_gb_s);
  std::printf("cpu wait       %8.0f %%     (of decode time, threads runnable but waiting for a core: other processes)\n",
              100 * median(cpu_wait));
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand("bench", "Measure prefill and decode speed on this device");
  cmd->add_option("-m,--model", a->model, "GGUF model file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--prompt-tokens", a->prompt_tokens, "Prompt length for prefill")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--gen-tokens", a->gen_tokens, "Tokens to decode")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("-t,--threads", a->threads, "Compute threads (default: all cores)");
  cmd->add_option("--repeats", a->repeats, "Measured rounds (the median is reported)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--batch", a->batch, "Sequences decoded together (aggregate tok/s is reported)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--depth", a->depth,
                  "Tokens already in each sequence's KV cache before the measured prompt and decode (a conversation's "
                  "history; not measured)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--json", a->json, "Print JSON");
  add_kv_type_option(cmd, a->kv_type);
  add_gpu_option(cmd, a->gpu);
  add_memory_limit_option(cmd, a->memory_limit);
  cmd->callback([a] { bench(*a); });
}

}  // namespace hearth::cli
