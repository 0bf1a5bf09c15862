// `hearth`: the controller CLI.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <exception>

#include "apps/hearth/commands.h"
#include "apps/hearth/head_error.h"

int main(int argc, char** argv) {
  // Logs go to stderr: stdout carries only what a command produces (generated text, JSON).
  spdlog::set_default_logger(spdlog::stderr_color_mt("hearth"));
  spdlog::set_pattern("%^%l%$: %v");

  CLI::App app{"hearth: run a language model across the devices of a home"};
  app.require_subcommand(1);
  app.fallthrough();  // global options (--head, --data-dir) may also follow the subcommand
  app.set_version_flag("--version", "hearth 0.1.0");
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "More log output");
  app.parse_complete_callback([&] { spdlog::set_level(verbose ? spdlog::level::debug : spdlog::level::info); });

  hearth::cli::add_run_command(app);
  hearth::cli::add_tokenize_command(app);
  hearth::cli::add_mkmodel_command(app);
  hearth::cli::add_inspect_command(app);
  hearth::cli::add_bench_command(app);
  hearth::cli::add_plan_command(app);
  hearth::cli::add_profile_command(app);
  hearth::cli::add_cluster_commands(app);
  hearth::cli::add_chat_command(app);
  hearth::cli::add_gpus_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const hearth::cli::HeadError& e) {
    spdlog::error("{}", e.what());
    return hearth::cli::exit_code(e.category());
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  return 0;
}
