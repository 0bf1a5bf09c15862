// Measures this node's links to the devices the head names, off the loop thread (two nodes
// probing each other must still answer each other's pings), and reports them to the head.
// Latency: half the median round trip of a small ping; bandwidth: a 4 MiB ping's transfer time,
// less the round trip.
#pragma once

#include <string>
#include <thread>
#include <vector>

#include "transport/sockets.h"

namespace hearth::cluster {

class LinkProber {
 public:
  struct Target {
    std::string node_id, control_endpoint, public_key;
  };
  LinkProber(const transport::SocketFactory& sockets, std::string node_id, std::string device_name);
  ~LinkProber();
  // Starts probing `targets` (after the previous probe ends; they take milliseconds on a LAN).
  void probe(std::vector<Target> targets, std::string head_endpoint, std::string head_key);

 private:
  void run(std::vector<Target> targets, const std::string& head_endpoint, const std::string& head_key);
  const transport::SocketFactory& sockets_;
  std::string node_id_, device_name_;
  std::thread thread_;
};

}  // namespace hearth::cluster
