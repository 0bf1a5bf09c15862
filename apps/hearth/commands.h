// Subcommands of the `hearth` CLI. Each adds itself to the app and runs when selected; errors
// propagate as exceptions to main(), which prints them.
#pragma once

#include <CLI/CLI.hpp>

namespace hearth::cli {

void add_run_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_mkmodel_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_plan_command(CLI::App& app);
void add_profile_command(CLI::App& app);
// devices, launch, generate, status, stop and the global --head option.
void add_cluster_commands(CLI::App& app);
void add_chat_command(CLI::App& app);
void add_gpus_command(CLI::App& app);

}  // namespace hearth::cli
