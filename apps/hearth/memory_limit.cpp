#include "apps/hearth/memory_limit.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "profiles/profiler.h"

namespace hearth::cli {

namespace {

// What the process holds besides the stage: the program, the vocabulary, thread stacks, the
// allocator's slack (15-25 MB resident for `hearth run` of small models).
constexpr uint64_t kProcessBytes = 32ull << 20;

}  // namespace

runtime::StageWeights::HeldBytes lay_out_within(LocalModel& m, const runtime::StageOptions& options, uint64_t limit,
                                                runtime::ThreadPool& pool) {
  if (!options.paging.empty()) return {};  // a paging stage keeps the file's layout
  const uint64_t usable = profiles::usable_memory(profiles::read_system_info(), limit);
  uint64_t room = 1;  // none, unless the stage's own count says how much
  try {
    const runtime::StageBudget b = runtime::budget_stage(m.weights, options, usable, pool);
    if (b.paging.empty()) room = usable - b.other_bytes;
  } catch (const std::invalid_argument&) {
    // The caches alone exceed it: the weights keep their reclaimable pages.
  }
  return runtime::lay_out_for_cpu(*m.weights, options, room, pool);
}

void add_memory_limit_option(CLI::App* cmd, uint64_t& bytes) {
  cmd->add_option("--memory-limit", bytes,
                  "Use at most this much memory (suffixes: 8GB, 512MB); weights beyond it are read from the model file "
                  "as each token needs them")
      ->transform(CLI::AsSizeValue(true));
}

runtime::PagingPlan paging_within(const LocalModel& m, const runtime::StageOptions& options, uint64_t limit,
                                  runtime::ThreadPool& pool) {
  if (limit == 0) return {};
  if (limit <= kProcessBytes)
    throw std::invalid_argument("--memory-limit " + std::to_string(limit / 1000000) + " MB leaves nothing for the weights");
  runtime::PagingPlan plan;
  try {
    plan = runtime::budget_stage(m.weights, options, limit - kProcessBytes, pool).paging;
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("--memory-limit " + std::to_string(limit / 1000000) + " MB: " + e.what());
  }
  if (plan.empty()) {
    spdlog::info("the model fits --memory-limit: nothing is paged");
    return plan;
  }
  const runtime::PagingCost cost = runtime::paging_cost(*m.weights, plan);
  spdlog::info("paging {} of {} layers' {} from the model file: {} MB read per token, {} MB resident (two read buffers of {} MB "
               "included) of {} MB of weights; no GPU while paging",
               plan.layers.size(), m.config.n_layer, plan.part == runtime::PagedPart::Ffn ? "FFN matrices" : "matrices",
               cost.paged_bytes / 1000000, cost.resident_bytes / 1000000, cost.buffer_bytes / 2000000,
               m.weights->mapped_bytes() / 1000000);
  return plan;
}

void log_paging(const runtime::PagerStats& s) {
  if (s.read_seconds <= 0) return;
  spdlog::info("paged: {} MB read from storage in {:.3f} s ({:.0f} MB/s, {}), {:.0f}% of it hidden behind compute",
               s.bytes_read / 1000000, s.read_seconds, s.bytes_read / 1e6 / s.read_seconds,
               s.direct ? "direct I/O" : "buffered, page cache dropped",
               100.0 * std::max(0.0, 1.0 - s.wait_seconds / s.read_seconds));
}

}  // namespace hearth::cli
