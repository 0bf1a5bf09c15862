// A hearthd node: its sockets, its event loop, and what every daemon does: register with the
// head and keep a heartbeat (Heartbeater), receive and load its stage's weights (StageLoader),
// run batches and pass them on (StageRunner), measure its links (LinkProber). A head node also
// hosts the head's role (a HeadRole: cluster/head.h implements it, apps/hearthd/main.cpp makes
// it), which reaches the node only through cluster/host.h: the node is its Outbox and Host, the
// StageRunner its LocalStage. The node's files include nothing of the head's.
//
// Threads: run() owns every ZeroMQ socket of the loop and runs on the caller's thread; compute
// happens on the runtime's ThreadPool from that thread; the Heartbeater and the LinkProber have
// a thread and sockets of their own. Nothing is shared between threads but atomic counters, the
// stop flag and the head address handed over by discovery.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "cluster/config.h"
#include "cluster/counters.h"
#include "cluster/heartbeater.h"
#include "cluster/host.h"
#include "cluster/link_prober.h"
#include "cluster/stage_loader.h"
#include "cluster/stage_runner.h"
#include "profiles/profiler.h"
#include "runtime/kernels/thread_pool.h"
#include "transport/codec.h"
#include "transport/sockets.h"

namespace hearth::cluster {

class Node final : public Outbox, public Host {
 public:
  Node(const DaemonConfig& config, profiles::Profile profile, std::string node_id);
  ~Node() override;

  // Binds the sockets; throws with a clear message if an address is taken.
  void start();
  // The event loop; returns when `stop` becomes true.
  void run(const std::atomic<bool>& stop);
  // Called from the discovery thread: a head was heard at this control endpoint.
  void head_discovered(const std::string& control_endpoint);

  const std::string& node_id() const { return node_id_; }
  const std::string& control_endpoint() const { return control_endpoint_; }
  const std::string& data_endpoint() const { return data_endpoint_; }
  // Security: the CURVE identity (none with --insecure).
  const std::optional<transport::CurveKeys>& keys() const { return keys_; }

  // For the head's role, after start(): who it is, its first stage, its clock; then hand it over.
  HeadIdentity head_identity() const;
  LocalStage& local_stage() { return runner_; }
  const Clock& clock() const { return clock_; }
  // The role this node forwards the head's messages to (it must outlive run()).
  void set_head_role(HeadRole* role) { head_role_ = role; }

  // Outbox: to a peer of the control socket.
  bool send(const std::string& identity, capnp::MessageBuilder& message) override;
  bool send(const std::string& identity, capnp::MessageBuilder& message, zmq::message_t&& payload) override;
  // Host
  void admit(const std::string& public_key) override;
  void count_out_of_plan() override { drops_.out_of_plan++; }
  void count_unexpected() override { drops_.unexpected++; }
  DropCounts drops() const override { return drops_.snapshot(); }
  uint64_t refused_handshakes() const override { return zap_ ? zap_->denied() : 0; }
  uint64_t resident_bytes() const override;

 private:
  std::string keys_dir() const;
  // The loop's parts.
  void handle_control();
  void handle_pairing();
  void handle_head_link();
  void handle_data();
  void handle_from_head(const transport::Decoded& d, zmq::message_t* payload);
  void answer_link_probe(transport::wire::LinkProbe::Reader p);
  // Registration with the head (workers).
  void connect_to_head(const std::string& control_endpoint);
  void pair_if_needed(const std::string& head_control_endpoint);
  void try_next_peer();
  void join_discovered_head();
  void send_hello();
  void send_to_head(capnp::MessageBuilder& message);
  bool send_frames(const std::string& identity, capnp::MessageBuilder& message, zmq::message_t* payload);

  DaemonConfig config_;
  profiles::Profile profile_;
  std::string node_id_;
  runtime::ThreadPool pool_;
  zmq::context_t context_;
  std::optional<transport::CurveKeys> keys_;
  std::unique_ptr<transport::ZapHandler> zap_;  // before any socket binds (see zap.h)
  transport::SocketFactory sockets_;
  std::string head_key_;                  // the head's public key (keys/head.pub)
  std::optional<zmq::socket_t> control_;  // ROUTER
  std::optional<zmq::socket_t> data_;     // PULL
  std::optional<zmq::socket_t> pairing_;  // ROUTER, head only (secure clusters)
  std::optional<zmq::socket_t> head_;     // DEALER to the head (workers)
  std::string head_endpoint_;
  std::string control_endpoint_, data_endpoint_;
  std::chrono::steady_clock::time_point last_hello_{};
  std::string refused_head_;  // a discovered head we could not join (not paired): not retried
  size_t next_peer_ = 0;      // the --peer tried as the head
  std::chrono::steady_clock::time_point joined_at_{};
  int pairing_port_ = 0;
  uint64_t incarnation_;  // random per start (Hello, Heartbeat)
  bool registered_ = false;

  std::mutex discovered_mutex_;
  std::string discovered_head_;  // set by the discovery thread, read by run()

  DropStats drops_;
  StageRunner runner_;
  StageLoader loader_;
  LinkProber prober_;
  SteadyClock clock_;
  std::unique_ptr<Heartbeater> heartbeater_;
  HeadRole* head_role_ = nullptr;
};

}  // namespace hearth::cluster
