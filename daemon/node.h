// A hearthd node: its sockets, its event loop, and what every daemon does — register with the
// head, keep a heartbeat, receive and load its stage's weights, run batches and pass them on.
// A head node additionally runs a Head (head.h), which plans and serves clients.
//
// Threads: run() owns every ZeroMQ socket and runs on the caller's thread; compute happens on the
// runtime's ThreadPool from that thread; a Heartbeater thread owns its own socket so that
// heartbeats keep flowing while a long batch computes. Nothing here is shared between threads
// except the stop flag and the peer list handed over by discovery.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "daemon/config.h"
#include "daemon/local_models.h"
#include "daemon/stage_host.h"
#include "daemon/weight_receiver.h"
#include "profiles/profiler.h"
#include "runtime/gguf.h"
#include "runtime/thread_pool.h"
#include "transport/codec.h"
#include "transport/sockets.h"

namespace hearth::daemon {

class Head;

// Counters of what the node refused, by reason; shown in status.
// Atomic because the heartbeat thread reports the total.
struct DropStats {
  std::atomic<uint64_t> malformed{0};     // not a valid envelope, or a field out of range
  std::atomic<uint64_t> out_of_plan{0};   // for another plan, or a stage this node does not run
  std::atomic<uint64_t> unexpected{0};    // a message this role never receives
  std::atomic<uint64_t> bad_payload{0};   // wrong size, NaN/Inf
  uint64_t total() const { return malformed + out_of_plan + unexpected + bad_payload; }
};

// What this node's stage computed and sent since the daemon started; reported in heartbeats,
// so the head's status and /metrics show every stage's compute time and the bytes on each link.
// Atomic because the heartbeat thread reads it.
struct WorkStats {
  std::atomic<uint64_t> batches{0};
  std::atomic<uint64_t> tokens{0};
  std::atomic<uint64_t> compute_ns{0};
  std::atomic<uint64_t> bytes_out{0};  // activations pushed to the next stage
  // Of the batches, the decode steps (one token per sequence) and their compute time.
  std::atomic<uint64_t> decode_steps{0};
  std::atomic<uint64_t> decode_ns{0};
};

// The stage this node runs for the current plan.
struct LoadedStage {
  uint64_t plan_id = 0;
  std::unique_ptr<runtime::GgufFile> file;
  std::unique_ptr<StageHost> host;
  std::optional<zmq::socket_t> push;  // to the next stage's data socket (or the head's)
  std::string next_endpoint;
};

// Sends heartbeats to the head from its own thread and socket.
class Heartbeater {
 public:
  Heartbeater(const transport::SocketFactory& sockets, std::string head_endpoint, std::string head_key, std::string node_id,
              uint64_t incarnation, const DropStats& drops, const WorkStats& work, const transport::ZapHandler* zap);
  ~Heartbeater();
  void set_plan(uint64_t plan_id) { plan_id_ = plan_id; }

 private:
  void loop(const transport::SocketFactory& sockets, std::string endpoint, std::string head_key, std::string node_id);
  const DropStats& drops_;
  const WorkStats& work_;
  const transport::ZapHandler* zap_;
  uint64_t incarnation_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> plan_id_{0};
  std::thread thread_;
};

class Node {
 public:
  Node(const DaemonConfig& config, profiles::Profile profile, std::string node_id);
  ~Node();

  // Binds the sockets; throws with a clear message if an address is taken.
  void start();
  // The event loop; returns when `stop` becomes true.
  void run(const std::atomic<bool>& stop);
  // Called from the discovery thread: a head was heard at this control endpoint.
  void head_discovered(const std::string& control_endpoint);

  const std::string& node_id() const { return node_id_; }
  const std::string& control_endpoint() const { return control_endpoint_; }
  const std::string& data_endpoint() const { return data_endpoint_; }
  const profiles::Profile& profile() const { return profile_; }
  const DaemonConfig& config() const { return config_; }
  zmq::context_t& context() { return context_; }
  runtime::ThreadPool& pool() { return pool_; }
  DropStats& drops() { return drops_; }
  const WorkStats& work() const { return work_; }
  // Security: the CURVE identity (none with --insecure), and the allowlist of its ZAP handler.
  const std::optional<transport::CurveKeys>& keys() const { return keys_; }
  std::string public_key() const { return keys_ ? keys_->public_key : ""; }
  void admit(const std::string& public_key);
  uint64_t refused_handshakes() const { return zap_ ? zap_->denied() : 0; }
  std::string keys_dir() const;
  int pairing_port() const { return pairing_port_; }

  // ---- used by the Head ----
  // Sends an envelope (and optionally a raw payload frame) to a peer of the control socket.
  // Returns false if the peer is gone.
  bool send_to(const std::string& identity, capnp::MessageBuilder& message, const void* payload = nullptr, size_t n = 0);
  // The same with a payload already in a ZeroMQ message, sent without a copy.
  bool send_to(const std::string& identity, capnp::MessageBuilder& message, zmq::message_t&& payload);
  // Loads the head's own stage straight from the model file (the head already has it).
  void load_local_stage(uint64_t plan_id, const std::string& model_path, const runtime::StageSpec& spec,
                        const runtime::StageOptions& options, const std::string& next_endpoint, const std::string& next_key);
  LoadedStage* stage() { return stage_ ? stage_.get() : nullptr; }
  void unload_stage();
  // Runs a batch on this node's stage, counting it in work(). Throws as StageHost::run does.
  StageOutput compute(const Batch& batch);
  // Pushes a batch's output to the next stage: a Forward header and the hidden states.
  // Returns false when the next stage did not take it in time (it is probably gone).
  bool push_forward(const Batch& batch, const std::vector<float>& hidden);
  void push_release(uint64_t plan_id, const std::vector<uint64_t>& seqs);

 private:
  void handle_control();
  void handle_pairing();
  void pair_if_needed(const std::string& head_control_endpoint);
  void try_next_peer();
  void handle_control_message(const std::string& identity, const transport::Decoded& d, zmq::message_t* payload);
  void handle_head_link();
  void handle_from_head(const transport::Decoded& d, zmq::message_t* payload);
  void handle_data();
  void process_data();
  void connect_to_head(const std::string& control_endpoint);
  void send_hello();
  void on_assignment(transport::wire::Assignment::Reader a);
  void on_weight_chunk(transport::wire::WeightChunk::Reader c, zmq::message_t* payload);
  void request_weights();
  void finish_loading();
  void report_load(transport::wire::LoadStatus::State state, const std::string& message);
  bool send_to_head(capnp::MessageBuilder& message);
  // Identity, envelope and, if any, the payload frame on the control socket; false if the peer is gone.
  bool send_frames(const std::string& identity, capnp::MessageBuilder& message, zmq::message_t* payload);
  std::optional<Batch> decode_forward(transport::wire::Forward::Reader f, zmq::message_t* payload);
  void run_batch(Batch batch);
  void answer_link_probe(transport::wire::LinkProbe::Reader p);
  struct ProbeTarget {
    std::string node_id, control_endpoint, public_key;
  };
  void probe_links(std::vector<ProbeTarget> targets, std::string head_endpoint, std::string head_key);

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
  std::unique_ptr<Heartbeater> heartbeater_;
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

  // Loading: the assignment being received.
  struct Loading {
    uint64_t plan_id = 0;
    runtime::StageSpec spec;
    runtime::StageOptions options;
    std::string next_endpoint;
    std::string next_key;
    std::unique_ptr<WeightReceiver> receiver;
    std::string local_model;  // or: a GGUF of the same model this device already has
    std::chrono::steady_clock::time_point last_report{};
  };
  std::optional<Loading> loading_;
  LocalModels local_models_;
  std::unique_ptr<LoadedStage> stage_;
  std::deque<Batch> pending_;  // decoded batches waiting for compute, in arrival order

  std::unique_ptr<Head> head_role_;
  DropStats drops_;
  WorkStats work_;
  // Link probes run here, off the loop: two nodes probing each other must still answer pings.
  std::thread prober_;
};

// Resident set size of this process, bytes (VmRSS).
uint64_t resident_bytes();

}  // namespace hearth::daemon
