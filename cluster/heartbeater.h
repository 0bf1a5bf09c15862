// Sends this node's heartbeats to the head from a thread and socket of its own, so that they keep
// flowing while a long batch computes on the loop thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

#include "cluster/counters.h"
#include "transport/sockets.h"
#include "transport/zap.h"

namespace hearth::cluster {

class Heartbeater {
 public:
  // `plan_id`: the plan whose stage this node has loaded (0: none), kept by its stage.
  Heartbeater(const transport::SocketFactory& sockets, std::string head_endpoint, std::string head_key, std::string node_id,
              uint64_t incarnation, const DropStats& drops, const WorkStats& work, const std::atomic<uint64_t>& plan_id,
              const transport::ZapHandler* zap);
  ~Heartbeater();

 private:
  void loop(const transport::SocketFactory& sockets, std::string endpoint, std::string head_key, std::string node_id);
  const DropStats& drops_;
  const WorkStats& work_;
  const std::atomic<uint64_t>& plan_id_;
  const transport::ZapHandler* zap_;
  uint64_t incarnation_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace hearth::cluster
