// Real hearthd processes on loopback for integration tests: each on free ports, with its own
// data directory and a fixed profile (so no test waits for a device measurement).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace hearth::test {

struct DaemonProcess {
  std::string name;
  pid_t pid = -1;
  std::string data_dir;
  std::string listen;              // its --listen: fixed ports for the head, any ports for the others
  std::string control;             // tcp://127.0.0.1:PORT
  std::string log;                 // its stderr
  std::vector<std::string> extra;  // start()'s arguments, for a restart
  std::vector<std::string> command;
};

class Cluster {
 public:
  explicit Cluster(const TempDir& dir) : dir_(dir) {}
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  // Starts a daemon (the first one started is the head) and waits until it listens and, for a
  // worker, until the head lists it. `command` replaces this build's hearthd: the program and
  // its first arguments (e.g. an emulator and another architecture's hearthd).
  DaemonProcess& start(const std::string& name, std::vector<std::string> extra_args = {}, std::vector<std::string> command = {});
  // Stops a daemon (SIGTERM) and starts it again with the same name, data directory and ports
  // (so a restarted head is where its devices look for it). Waits until it listens.
  DaemonProcess& restart(const std::string& name);
  // The daemon `name`, when started, claims to compute `speedup` times faster than the others
  // (its profile's rates): a device busier than when it was measured.
  void set_profile_speedup(const std::string& name, double speedup) { profile_speedup_[name] = speedup; }
  // The daemon `name`, when started, has measured storage reading at this rate: the planner may
  // give it more layers than its memory holds, read from storage every step (paging).
  void set_profile_storage(const std::string& name, double bytes_per_s) { profile_storage_[name] = bytes_per_s; }
  // How long start() waits for a daemon to listen and register (default 20 s).
  void set_start_timeout(std::chrono::seconds t) { start_timeout_ = t; }
  const std::string& head() const { return daemons_.front().control; }
  DaemonProcess& daemon(const std::string& name);
  void kill(const std::string& name, int signal);
  // `hearth --head HEAD args...`
  CommandResult cli(std::vector<std::string> args) const;

 private:
  DaemonProcess& start_on(const std::string& name, const std::string& listen, const std::vector<std::string>& extra,
                          const std::vector<std::string>& command);

  const TempDir& dir_;
  std::vector<DaemonProcess> daemons_;
  std::map<std::string, double> profile_speedup_;
  std::map<std::string, double> profile_storage_;
  bool insecure_ = false;  // the head runs with --insecure: so do the others
  std::chrono::seconds start_timeout_{20};
};

// Resident set size of a process, bytes (0 if gone).
uint64_t process_rss(pid_t pid);

}  // namespace hearth::test
