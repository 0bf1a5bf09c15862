// hearth_link_emulator: the latency, jitter and loss half of an emulated link (tc shapes the
// bandwidth). Forwards TCP connections, each --route LISTEN=TARGET, through a delay line; see
// tools/link_relay.h for the model. scripts/home-cluster runs one per emulated device.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tools/link_relay.h"

int main(int argc, char** argv) {
  spdlog::set_default_logger(spdlog::stderr_color_mt("link"));
  spdlog::set_pattern("[%H:%M:%S.%e] %^%l%$ %v");

  std::vector<std::string> routes;
  double delay_ms = 0, jitter_ms = 0, loss = 0, penalty_ms = -1;
  uint64_t seed = 1;
  std::string ready_file, stats_file;
  CLI::App app{"hearth_link_emulator: a TCP relay that adds one-way latency, jitter and loss"};
  app.add_option("--route", routes, "LISTEN_HOST:PORT=TARGET_HOST:PORT (repeatable; port 0 listens on any free port)")
      ->required();
  app.add_option("--delay-ms", delay_ms, "One-way delay added in each direction")->capture_default_str();
  app.add_option("--jitter-ms", jitter_ms, "Each chunk's delay varies uniformly by +/- this much")->capture_default_str();
  app.add_option("--loss", loss, "Probability that a 1448-byte segment is lost (0..1)")->capture_default_str();
  app.add_option("--loss-penalty-ms", penalty_ms,
                 "Extra delay of a chunk with a lost segment (default: max(10, 4 x delay), Linux's tail loss probe ~2 RTT)");
  app.add_option("--seed", seed, "Random seed of jitter and loss")->capture_default_str();
  app.add_option("--ready-file", ready_file, "Written once every route listens: one 'LISTEN PORT' line per route");
  app.add_option("--stats-file", stats_file, "Written at exit: JSON with connections, bytes, chunks, lost chunks, mean delay");
  CLI11_PARSE(app, argc, argv);

  try {
    boost::asio::io_context io;
    hearth::tools::LinkShape shape{.delay_s = delay_ms / 1e3,
                                   .jitter_s = jitter_ms / 1e3,
                                   .loss = loss,
                                   .loss_penalty_s = (penalty_ms >= 0 ? penalty_ms : std::max(10.0, 4 * delay_ms)) / 1e3,
                                   .seed = seed};
    hearth::tools::LinkRelay relay(io, shape);
    std::string ready;
    for (const auto& r : routes) {
      const size_t eq = r.find('=');
      if (eq == std::string::npos) throw std::invalid_argument("--route '" + r + "' is not LISTEN=TARGET");
      const auto listen = hearth::tools::parse_endpoint(r.substr(0, eq));
      const auto target = hearth::tools::parse_endpoint(r.substr(eq + 1));
      const uint16_t port = relay.add_route(listen, target);
      spdlog::info("{}:{} -> {}:{} ({} ms +/- {} ms, loss {})", listen.host, port, target.host, target.port, delay_ms, jitter_ms,
                   loss);
      ready += listen.host + " " + std::to_string(port) + "\n";
    }
    boost::asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code&, int) { io.stop(); });
    if (!ready_file.empty()) std::ofstream(ready_file) << ready;
    io.run();
    const auto s = relay.stats();
    spdlog::info("{} connections, {} bytes in {} chunks, {} delayed by loss", s.connections, s.bytes, s.chunks, s.lost_chunks);
    if (!stats_file.empty())
      std::ofstream(stats_file) << nlohmann::json{{"connections", s.connections},
                                                  {"bytes", s.bytes},
                                                  {"chunks", s.chunks},
                                                  {"lost_chunks", s.lost_chunks},
                                                  {"mean_delay_ms",
                                                   s.chunks ? 1e3 * s.delay_sum_s / static_cast<double>(s.chunks) : 0.0}}
                                       .dump()
                                << "\n";
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  return 0;
}
