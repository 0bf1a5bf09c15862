// hearthd's settings: parsed once from the command line (and HEARTH_* environment variables)
// into this plain struct, then passed by const reference.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace hearth::cluster {

struct DaemonConfig {
  std::string name;                      // device name shown in plans; default: the host name
  std::string listen = "0.0.0.0:47400";  // control ROUTER; the data PULL listens on port + 1
  std::string advertise;                 // host peers should use to reach us; default: the address
                                         // they see our messages come from
  bool head = false;                     // plan, serve weights, tokenize, sample, serve clients
  std::string join;                      // HOST:PORT of the head to register with
  std::vector<std::string> peers;        // HOST:PORT of daemons one of which is the head (tried in turn)
  std::string data_dir;                  // node id, profile, weight cache; default: ~/.local/share/hearth
  uint64_t memory_limit = 0;             // bytes this daemon may use for its stage; 0 = what is free
  int threads = 0;                       // compute threads; 0 = all cores
  std::string gpu = "auto";              // where a stage's matrix products run: auto, none or a GPU's number
  bool discovery = true;                 // UDP beacons on the LAN
  int discovery_port = 47470;
  std::string discovery_address = "255.255.255.255";
  bool reprofile = false;               // measure the device again instead of using the cached profile
  std::vector<std::string> model_dirs;  // GGUF files this device has (default: DATA_DIR/models)
  std::string token;                    // join token from the head, to pair this device (once)
  bool insecure = false;                // no CURVE: plain sockets, anyone on the LAN may connect
  int recovery_wait_s = 30;             // head: how long conversations wait for a device when the
                                        // devices left after a loss cannot hold the model
};

// $HEARTH_DATA_DIR, else ~/.local/share/hearth (the CLI reads its keys from the same place).
inline std::string default_data_dir() {
  if (const char* d = std::getenv("HEARTH_DATA_DIR")) return d;
  if (const char* h = std::getenv("HOME")) return std::string(h) + "/.local/share/hearth";
  return "/var/lib/hearth";
}

}  // namespace hearth::cluster
