// `--memory-limit` of the one-device commands (run, bench): the weights that do not fit are read
// from the model file as each token needs them (runtime/model/layer_pager.h) rather than the
// model refused.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>

#include "apps/hearth/local_model.h"
#include "runtime/model/layer_pager.h"
#include "runtime/model/stage.h"
#include "runtime/model/stage_budget.h"

namespace hearth::cli {

void add_memory_limit_option(CLI::App* cmd, uint64_t& bytes);

// The layers a stage of `m` with `options` must page to stay within `limit` bytes (0: no limit),
// said in the log. Throws std::invalid_argument when even paging every layer cannot do it.
runtime::PagingPlan paging_within(const LocalModel& m, const runtime::StageOptions& options, uint64_t limit,
                                  runtime::ThreadPool& pool);

// Lays m's weights out for this CPU (runtime::lay_out_for_cpu) when a stage with `options` fits
// `limit` (0: no limit), this machine's available memory and its cgroup's limit. Returns what moved.
runtime::StageWeights::HeldBytes lay_out_within(LocalModel& m, const runtime::StageOptions& options, uint64_t limit,
                                                runtime::ThreadPool& pool);

// "paged: 905 MB read from storage in 0.330 s (2744 MB/s, direct I/O), 34% of it hidden behind compute"
void log_paging(const runtime::PagerStats& stats);

}  // namespace hearth::cli
