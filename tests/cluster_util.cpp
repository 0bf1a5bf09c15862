#include "tests/cluster_util.h"

#include "profiles/process_memory.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <thread>

namespace hearth::test {

namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

// Rates only: usable memory is recomputed by the daemon at start (from --memory-limit).
// `speedup` scales every rate (a device that claims to be faster than it is).
void write_profile(const std::string& dir, double speedup, double storage_bytes_per_s) {
  std::filesystem::create_directories(dir);
  const double decode = 14e9 * speedup;
  nlohmann::json j = {{"name", "seeded"},
                      {"usable_memory_bytes", 8e9},
                      {"memory_bandwidth_bytes_per_s", 20e9 * speedup},
                      {"decode_bytes_per_s", {{"f32", decode}, {"f16", decode}, {"q8_0", decode}, {"q4_0", decode}}},
                      {"prefill_flop_s", 50e9 * speedup},
                      {"step_overhead_s", 1e-4 / speedup}};
  if (storage_bytes_per_s > 0) j["storage_read_bytes_per_s"] = storage_bytes_per_s;
  std::ofstream(dir + "/profile.json") << j.dump(2);
}

bool can_bind(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// The head listens on P, P+1 and P+2 (control, data, pairing), and a restarted head must get the
// same three back. Below Linux's ephemeral range (32768+) no outgoing connection or "any port"
// bind of another daemon can take one of them meanwhile, as it could with ports the kernel chose.
std::string free_head_listen() {
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> pick(20000, 32000);
  for (int attempt = 0; attempt < 200; ++attempt) {
    const auto p = static_cast<uint16_t>(pick(rng));
    if (can_bind(p) && can_bind(p + 1) && can_bind(p + 2)) return "127.0.0.1:" + std::to_string(p);
  }
  throw std::runtime_error("no three free consecutive ports for the head in 20000-32002");
}

bool log_says_port_taken(const std::string& log) {
  std::ifstream f(log);
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return text.find("Address already in use") != std::string::npos;
}

}  // namespace

uint64_t process_rss(pid_t pid) { return profiles::resident_bytes(pid); }

Cluster::~Cluster() {
  for (auto& d : daemons_)
    if (d.pid > 0) ::kill(d.pid, SIGTERM);
  for (auto& d : daemons_) {
    if (d.pid <= 0) continue;
    for (int i = 0; i < 50; ++i) {
      if (::waitpid(d.pid, nullptr, WNOHANG) == d.pid) {
        d.pid = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (d.pid > 0) {
      ::kill(d.pid, SIGKILL);
      ::waitpid(d.pid, nullptr, 0);
    }
  }
}

DaemonProcess& Cluster::start(const std::string& name, std::vector<std::string> extra, std::vector<std::string> command) {
  const bool head = daemons_.empty() || daemons_.front().name == name;
  for (int attempt = 0;; ++attempt) {
    // Another test running beside this one may take the head's ports between our check and its bind.
    const std::string listen = head ? free_head_listen() : "127.0.0.1:0";
    try {
      return start_on(name, listen, extra, command);
    } catch (const std::exception&) {
      if (!head || attempt == 2 || !log_says_port_taken(dir_.file(name + ".log"))) throw;
    }
  }
}

DaemonProcess& Cluster::start_on(const std::string& name, const std::string& listen, const std::vector<std::string>& extra,
                                 const std::vector<std::string>& command) {
  DaemonProcess d;
  d.name = name;
  d.listen = listen;
  d.data_dir = dir_.file("node-" + name);
  d.log = dir_.file(name + ".log");
  const auto claimed = profile_speedup_.find(name);
  const auto storage = profile_storage_.find(name);
  write_profile(d.data_dir, claimed == profile_speedup_.end() ? 1.0 : claimed->second,
                storage == profile_storage_.end() ? 0.0 : storage->second);
  const std::string ready = dir_.file(name + ".ready");
  std::filesystem::remove(ready);  // a restart must not read the last run's
  std::vector<std::string> args = command.empty() ? std::vector<std::string>{HEARTH_DAEMON} : command;
  args.insert(args.end(), {"--name", name, "--listen", listen, "--no-discovery", "--data-dir", d.data_dir, "--ready-file", ready,
                           "--threads", "1"});
  const bool insecure = std::find(extra.begin(), extra.end(), "--insecure") != extra.end();
  const auto known = std::find_if(daemons_.begin(), daemons_.end(), [&](const DaemonProcess& o) { return o.name == name; });
  if (daemons_.empty() || daemons_.front().name == name) {
    args.push_back("--head");
    insecure_ = insecure;
  } else {
    args.insert(args.end(), {"--join", head()});
    // Paired with the head's join token, as a user does (the head wrote it to its data dir).
    if (!insecure && !insecure_) args.insert(args.end(), {"--token", read_file(daemons_.front().data_dir + "/keys/join-token")});
  }
  args.insert(args.end(), extra.begin(), extra.end());
  d.pid = ::fork();
  if (d.pid == 0) {
    std::FILE* log = std::fopen(d.log.c_str(), "w");
    if (log) ::dup2(::fileno(log), 2);
    // Not the test's stdout: a reader of the test's output would wait for the daemon too.
    std::FILE* null = std::fopen("/dev/null", "w");
    if (null) ::dup2(::fileno(null), 1);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + start_timeout_;
  while ((d.control = read_file(ready)).empty()) {
    if (std::chrono::steady_clock::now() > deadline || ::waitpid(d.pid, nullptr, WNOHANG) == d.pid)
      throw std::runtime_error("hearthd " + name + " did not start; see " + d.log);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  d.extra = extra;
  d.command = command;
  DaemonProcess& placed = known != daemons_.end() ? (*known = d) : daemons_.emplace_back(d);  // the head stays first
  if (&placed != &daemons_.front()) {                                                         // wait until the head lists it
    for (;;) {
      const auto r = cli({"devices", "--json"});
      if (r.exit_code == 0 && r.out.find("\"" + name + "\"") != std::string::npos) break;
      if (std::chrono::steady_clock::now() > deadline)
        throw std::runtime_error("hearthd " + name + " did not register; see " + d.log);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  return placed;
}

DaemonProcess& Cluster::daemon(const std::string& name) {
  for (auto& d : daemons_)
    if (d.name == name) return d;
  throw std::invalid_argument("no daemon " + name);
}

void Cluster::kill(const std::string& name, int signal) {
  DaemonProcess& d = daemon(name);
  if (d.pid <= 0) return;  // already stopped (kill(-1, ...) would signal every process)
  ::kill(d.pid, signal);
  ::waitpid(d.pid, nullptr, 0);
  d.pid = -1;
}

DaemonProcess& Cluster::restart(const std::string& name) {
  const DaemonProcess old = daemon(name);
  kill(name, SIGTERM);
  return start_on(name, old.listen, old.extra, old.command);
}

CommandResult Cluster::cli(std::vector<std::string> args) const {
  // The CLI authenticates with the head's own keys, as on the head's machine.
  args.insert(args.begin(), {"--head", head(), "--data-dir", daemons_.front().data_dir});
  return run_cli(args);
}

}  // namespace hearth::test
