// hearthd: the daemon every device runs. One of them is started with --head.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <utility>  // before Asio: Boost 1.74 uses std::exchange without including it
#include <boost/asio.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <thread>

#include "cluster/config.h"
#include "gateway/gateway.h"
#include "cluster/data_dir_lock.h"
#include "cluster/head.h"
#include "cluster/node.h"
#include "profiles/profiler.h"
#include "runtime/gpu/gpu.h"
#include "transport/curve.h"
#include "transport/discovery.h"

namespace fs = std::filesystem;
using hearth::cluster::DaemonConfig;

namespace {

std::string host_name() {
  char buf[256] = {};
  ::gethostname(buf, sizeof buf - 1);
  std::string n = buf;
  return n.empty() ? "device" : n;
}

// A stable id per data directory, so a restarted daemon is recognised.
std::string load_node_id(const std::string& dir) {
  const fs::path p = fs::path(dir) / "node_id";
  std::ifstream in(p);
  std::string id;
  if (in >> id && !id.empty()) return id;
  std::random_device rd;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
  // Whole or not at all (a full disk leaves no empty file behind): written aside, then renamed.
  hearth::transport::write_private_file(p, std::string(buf) + "\n");
  return buf;
}

// Everything hearthd reads from its command line and environment.
struct Options {
  DaemonConfig config;
  std::string http_listen, api_key, ready_file;
  bool auto_load = false;
  bool verbose = false;
};

void add_options(CLI::App& app, Options& o, bool& no_discovery) {
  DaemonConfig& c = o.config;
  app.add_option("--name", c.name, "Device name shown in plans (default: host name)")->envname("HEARTH_NAME");
  app.add_option("--listen", c.listen, "HOST:PORT of the control socket; data uses PORT+1 (PORT 0: any free ports)")
      ->envname("HEARTH_LISTEN")
      ->capture_default_str();
  app.add_flag("--head", c.head, "Be the head: plan, serve weights and clients")->envname("HEARTH_HEAD_NODE");
  app.add_option("--join", c.join, "HOST:PORT of the head to register with")->envname("HEARTH_JOIN");
  app.add_option("--peer", c.peers,
                 "HOST:PORT of a daemon that may be the head, where broadcast does not pass (repeatable: tried in turn)");
  app.add_option("--data-dir", c.data_dir,
                 "Node id, profile and weight cache (default: $HEARTH_DATA_DIR or ~/.local/share/hearth)")
      ->envname("HEARTH_DATA_DIR");
  app.add_option("--memory-limit", c.memory_limit,
                 "Memory this daemon may use for its stage: bytes, or 3G, 3GB (10^9), 3GiB (2^30) (default: what is free)")
      ->envname("HEARTH_MEMORY_LIMIT")
      ->transform(CLI::AsSizeValue(true));
  app.add_option("--threads", c.threads, "Compute threads (default: all cores)")->envname("HEARTH_THREADS");
  app.add_option("--gpu", c.gpu,
                 "Where this device's stage multiplies its matrices: auto (the best GPU, if any; never a CPU device such as "
                 "lavapipe), none (the CPU), or a GPU's number from `hearth gpus`")
      ->envname("HEARTH_GPU")
      ->capture_default_str();
  app.add_flag("--no-discovery", no_discovery, "No UDP beacons (use --join/--peer)");
  app.add_option("--discovery-port", c.discovery_port, "UDP port of the beacons")->capture_default_str();
  app.add_option("--discovery-address", c.discovery_address, "Where beacons are sent")->capture_default_str();
  app.add_flag("--reprofile", c.reprofile, "Measure the device again");
  app.add_option("--models", c.model_dirs,
                 "Folder of GGUF files this device already has: a matching model's layers are mapped from it, not transferred "
                 "(repeatable; default: DATA_DIR/models)");
  app.add_option("--recovery-wait", c.recovery_wait_s,
                 "Head: seconds open conversations wait for a device to come (back) when the devices left after a loss cannot "
                 "hold the model; 0 = fail them at once")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--token", c.token, "Join token printed by the head (`hearth token` there): pairs this device once")
      ->envname("HEARTH_TOKEN");
  app.add_flag("--insecure", c.insecure, "No encryption or authentication (every daemon of the cluster must use it)")
      ->envname("HEARTH_INSECURE");
  app.add_option("--http", o.http_listen,
                 "HOST:PORT for the OpenAI API and web chat (head only; 0.0.0.0:8080 opens it to the LAN; default: off)")
      ->envname("HEARTH_HTTP");
  app.add_flag("--auto-load", o.auto_load,
               "A chat request naming a model of the library that is not loaded loads it, in place of the one serving "
               "(default: 409)");
  app.add_option("--api-key", o.api_key, "Require 'Authorization: Bearer KEY' on the HTTP API")->envname("HEARTH_API_KEY");
  app.add_option("--ready-file", o.ready_file,
                 "Write the control endpoint (and, with --http, the URL on a second line) to this file once listening");
  app.add_flag("-v,--verbose", o.verbose, "Debug logs");
}

// What the command line cannot check by itself; "" when the options are usable.
// What `work` writes, computed in a child process: creating a Vulkan instance loads every
// installed driver (Mesa's take ~56 MB of resident memory with their LLVM, and keep it after the
// instance is gone), which a daemon should not carry for a look at its GPUs. "" when the child
// could not run. Called while the daemon is one thread.
std::string run_apart(const std::function<std::string()>& work) {
  int fds[2];
  if (::pipe(fds) != 0) return "";
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return "";
  }
  if (pid == 0) {
    ::close(fds[0]);
    std::string out;
    try {
      out = work();
    } catch (...) {
      ::_exit(1);
    }
    const ssize_t written = ::write(fds[1], out.data(), out.size());
    ::_exit(written == static_cast<ssize_t>(out.size()) ? 0 : 1);
  }
  ::close(fds[1]);
  // A driver that hangs must not hold the daemon's start: the child gets kTimeout, then is killed.
  constexpr auto kTimeout = std::chrono::seconds(120);
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  std::string text;
  bool complete = false;
  for (char buf[256];;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    pollfd pfd{fds[0], POLLIN, 0};
    const int ready = left > 0 ? ::poll(&pfd, 1, static_cast<int>(left)) : 0;
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) break;  // timed out, or poll failed
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      complete = n == 0;
      break;
    }
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  if (!complete) {
    spdlog::warn("the GPU look-up did not finish within {} s: stopped", kTimeout.count());
    ::kill(pid, SIGKILL);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return complete && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? text : "";
}

// The GPUs, one line each: "index kind" (names may hold spaces: not needed).
std::vector<hearth::runtime::GpuInfo> list_gpus_apart() {
  const std::string text = run_apart([] {
    std::string out;
    for (const auto& g : hearth::runtime::list_gpus()) out += std::to_string(g.index) + " " + g.kind + "\n";
    return out;
  });
  std::vector<hearth::runtime::GpuInfo> gpus;
  std::istringstream lines(text);
  hearth::runtime::GpuInfo g;
  while (lines >> g.index >> g.kind) gpus.push_back(g);
  return gpus;
}

// A GPU named by number must exist now, not at the first launch. With auto and no GPU (only CPU
// devices such as lavapipe, or none), the daemon never loads a Vulkan driver: none it is.
std::string resolve_gpu_choice(std::string& choice) {
  if (choice == "none") return "";
  const auto gpus = list_gpus_apart();
  if (choice == "auto") {
    if (std::none_of(gpus.begin(), gpus.end(), [](const auto& g) { return g.kind != "cpu"; })) {
      spdlog::info("no GPU found: the CPU runs this device's stages");
      choice = "none";
    }
    return "";
  }
  for (const hearth::runtime::GpuInfo& g : gpus)
    if (std::to_string(g.index) == choice) return "";
  return "--gpu " + choice + " names no GPU of this device (`hearth gpus` lists them; auto or none always work)";
}

// The GPU its stages use, measured once (in a child: see run_apart) and kept in the cached
// profile; none with --gpu none. `--reprofile` measures it again (another GPU, a new driver).
void add_gpu(const DaemonConfig& c, const fs::path& path, hearth::profiles::Profile& p) {
  if (c.gpu == "none") {
    p.device.gpu.reset();
    return;
  }
  if (p.device.gpu && p.gpu_choice == c.gpu) return;
  p.device.gpu.reset();
  spdlog::info("measuring GPU {} (once; cached in {})", c.gpu, path.string());
  const std::string choice = c.gpu;
  const std::string text = run_apart([&choice] {
    try {
      return hearth::profiles::gpu_profile_to_json(
          hearth::profiles::gpu_profile(hearth::runtime::measure_gpu(choice, 32u << 20)));
    } catch (const std::exception& e) {
      return std::string("!") + e.what();  // not JSON: the reason
    }
  });
  try {
    if (text.empty() || text[0] == '!') throw std::runtime_error(text.empty() ? "the measuring process failed" : text.substr(1));
    p.device.gpu = hearth::profiles::gpu_profile_from_json(text);
    p.gpu_choice = c.gpu;
  } catch (const std::exception& e) {
    spdlog::warn("GPU {} could not be measured ({}): the planner sees this device as its CPU alone", c.gpu, e.what());
    return;
  }
  hearth::transport::write_private_file(path, hearth::profiles::profile_to_json(p) + "\n");
}

// Measured once and cached; the memory figure is recomputed at every start because what is free
// (and the limit) changes.
hearth::profiles::Profile load_profile(const DaemonConfig& c) {
  const fs::path path = fs::path(c.data_dir) / "profile.json";
  hearth::profiles::Profile p;
  if (!c.reprofile && fs::exists(path)) {
    try {
      std::ifstream in(path);
      const std::string text((std::istreambuf_iterator<char>(in)), {});
      p.device = hearth::profiles::device_profile_from_json(text);
      p.gpu_choice = hearth::profiles::gpu_choice_of(text);
      p.system = hearth::profiles::read_system_info();
      p.threads = c.threads > 0 ? c.threads : p.system.cores;
    } catch (const std::exception& e) {
      spdlog::warn("cached profile unusable ({}): measuring again", e.what());
      p = {};
    }
  }
  if (p.device.memory_bandwidth_bytes_per_s <= 0) {
    spdlog::info("measuring this device (once; cached in {})", path.string());
    p = hearth::profiles::measure_profile(
        {.name = c.name, .threads = c.threads, .memory_limit = c.memory_limit, .quick = true, .storage_dir = c.data_dir});
    if (!p.storage.error.empty()) spdlog::warn("{}: this device offers no paging", p.storage.error);
    hearth::transport::write_private_file(path, hearth::profiles::profile_to_json(p) + "\n");
  }
  add_gpu(c, path, p);
  p.device.name = c.name;
  p.memory = hearth::profiles::memory_budget(p.system, c.memory_limit);
  p.device.usable_memory_bytes = static_cast<double>(p.memory.usable_bytes);
  return p;
}

std::string check_options(const Options& o) {
  const DaemonConfig& c = o.config;
  if (!o.http_listen.empty() && !c.head) return "--http needs --head: only the head serves HTTP";
  if (o.auto_load && o.http_listen.empty()) return "--auto-load needs --http: it loads the models HTTP requests name";
  if (c.token.empty()) return "";
  if (c.head || c.insecure) return "--token is for a device joining a head (not with --head or --insecure)";
  try {
    hearth::transport::parse_join_token(c.token);
  } catch (const std::exception& e) {
    return std::string("--token: ") + e.what();
  }
  return "";
}

// Runs the node's loop on its own thread and the signals, discovery and (with --http) the gateway
// on this one, until SIGINT or SIGTERM.
void serve(const Options& o) {
  const DaemonConfig& c = o.config;
  // The data directory holds the device's secret key: only its owner may enter it, whatever the umask.
  if (!fs::exists(c.data_dir)) {
    fs::create_directories(c.data_dir);
    fs::permissions(c.data_dir, fs::perms::owner_all, fs::perm_options::replace);
  }
  const hearth::cluster::DataDirLock lock(c.data_dir);  // before anything in it is read or written
  hearth::cluster::Node node(c, load_profile(c), load_node_id(c.data_dir));
  node.start();
  std::unique_ptr<hearth::cluster::Head> head;  // the head's role, when this daemon is the head
  if (c.head) {
    head = std::make_unique<hearth::cluster::Head>(node.head_identity(),
                                                   hearth::cluster::HeadPorts{node, node.local_stage(), node, node.clock()});
    node.set_head_role(head.get());
  }

  std::atomic<bool> stop{false};
  boost::asio::io_context io;
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code&, int sig) {
    spdlog::info("signal {}: shutting down", sig);
    stop = true;
    io.stop();
  });
  std::unique_ptr<hearth::transport::Discovery> discovery;
  if (c.discovery) {
    discovery = std::make_unique<hearth::transport::Discovery>(
        io, hearth::transport::DiscoveryOptions{.port = c.discovery_port, .send_to = c.discovery_address},
        hearth::transport::Beacon{node.node_id(), hearth::transport::endpoint_port(node.control_endpoint()), c.head},
        [&](const hearth::transport::Beacon& b, const std::string& ip) {
          if (b.is_head) node.head_discovered("tcp://" + ip + ":" + std::to_string(b.control_port));
        });
    discovery->start();
  }
  std::unique_ptr<hearth::http::Gateway> gateway;
  if (!o.http_listen.empty())
    gateway = std::make_unique<hearth::http::Gateway>(
        hearth::http::GatewayOptions{o.http_listen, o.api_key, node.control_endpoint(), node.keys(), o.auto_load});
  if (!o.ready_file.empty())
    std::ofstream(o.ready_file) << node.control_endpoint() << "\n" << (gateway ? gateway->url() + "\n" : "");

  std::exception_ptr failure;
  std::thread loop([&] {
    try {
      node.run(stop);
    } catch (...) {
      failure = std::current_exception();
    }
    io.stop();
  });
  io.run();
  stop = true;
  loop.join();
  if (failure) std::rethrow_exception(failure);
  spdlog::info("stopped");
}

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_default_logger(spdlog::stderr_color_mt("hearthd"));
  spdlog::set_pattern("[%H:%M:%S.%e] %^%l%$ %v");

  Options o;
  bool no_discovery = false;
  CLI::App app{"hearthd: the hearth daemon, one per device"};
  add_options(app, o, no_discovery);
  CLI11_PARSE(app, argc, argv);
  o.config.discovery = !no_discovery;
  if (o.verbose) spdlog::set_level(spdlog::level::debug);
  if (const std::string problem = check_options(o); !problem.empty()) {
    spdlog::error("{}", problem);
    return 2;
  }
  if (const std::string problem = resolve_gpu_choice(o.config.gpu); !problem.empty()) {
    spdlog::error("{}", problem);
    return 2;
  }
  if (o.config.name.empty()) o.config.name = host_name();
  if (o.config.data_dir.empty()) o.config.data_dir = hearth::cluster::default_data_dir();
  try {
    serve(o);
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  return 0;
}
