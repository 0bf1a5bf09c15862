// What the head and its scheduler need from the daemon that hosts them, as narrow interfaces
// owned here: hearthd implements them over its sockets and its stage (cluster/node.h), and
// tests/head_test.cpp implements them with fakes, so the head's decisions (registration, launch,
// recovery, pace) run in-process without sockets or processes.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "cluster/drift.h"
#include "cluster/stage_host.h"
#include "profiles/profiler.h"
#include "runtime/model/stage.h"
#include "transport/codec.h"

namespace hearth::cluster {

// Sends envelopes to peers of the head's control socket: devices and clients, by identity.
class Outbox {
 public:
  virtual ~Outbox() = default;
  // False when the peer is gone.
  virtual bool send(const std::string& identity, capnp::MessageBuilder& message) = 0;
  // With a raw payload frame (a weight chunk), handed over without a copy.
  virtual bool send(const std::string& identity, capnp::MessageBuilder& message, zmq::message_t&& payload) = 0;
};

// What a stage computed and sent since its daemon started (counters; status shows differences).
struct StageCounters {
  uint64_t batches = 0, tokens = 0, compute_ns = 0;
  uint64_t bytes_out = 0;                    // activations pushed to the next stage
  uint64_t decode_steps = 0, decode_ns = 0;  // of the batches, those of one token of one stream
  // A paging stage's reads from storage (issue 19): bytes, the reader's time in reads, and the
  // compute's time waiting for a layer (the part of the reads not hidden behind compute).
  uint64_t paged_read_bytes = 0, paged_read_ns = 0, paged_wait_ns = 0;
  // Of the batches, the decode steps of more than one row (a draft's, several streams'): their
  // rows and compute time. A launch that drafts every step, or serves several conversations at
  // once, may have no one-token steps: the drift watch judges these at their rows.
  uint64_t batched_steps = 0, batched_rows = 0, batched_ns = 0;
  // What the plan expects of those steps, added up step by step (LocalStage::load's `planned`):
  // a window's time against it is exact whatever its mix of rows, which a mean of the rows is
  // not where the plan's time bends (memory-bound to compute-bound).
  uint64_t decode_planned_ns = 0, batched_planned_ns = 0;
};

// Messages a daemon refused, by reason.
struct DropCounts {
  uint64_t malformed = 0, out_of_plan = 0, unexpected = 0, bad_payload = 0;
  uint64_t total() const { return malformed + out_of_plan + unexpected + bad_payload; }
};

// Where a stage sends its output: the next stage's data socket (or, from the last stage, the
// head's), that listener's CURVE key, and how activations cross that hop (F32, F16 or Q8_0:
// cluster/activation_codec.h; sampled tokens always travel as ids).
struct NextHop {
  std::string endpoint;  // "" for none (a one-stage plan on the head)
  std::string key;
  runtime::TensorType wire_type = runtime::TensorType::F32;
};

// The head's own stage, the first of the pipeline: the launch loads it from the model file, the
// scheduler feeds it and passes its output on.
class LocalStage {
 public:
  virtual ~LocalStage() = default;
  // `planned`: what the plan expects of its decode steps by their rows, which it adds up for the
  // steps it computes (StageCounters::decode_planned_ns) so that the head's drift watch compares
  // like with like whatever mix of rows a window held.
  virtual void load(uint64_t plan_id, const std::string& model_path, const runtime::StageSpec& spec,
                    const runtime::StageOptions& options, const NextHop& next, const StepTime& planned) = 0;
  virtual void unload() = 0;
  virtual bool loaded() const = 0;
  virtual int max_batch() const = 0;
  virtual bool has_output() const = 0;  // a one-stage plan samples here
  // Throws std::invalid_argument (state unchanged) when the batch does not fit the stage.
  virtual StageOutput compute(const Batch& batch) = 0;
  // False when the next stage did not take it (it is probably gone).
  virtual bool push_forward(const Batch& batch, const std::vector<float>& hidden) = 0;
  // Frees these sequences' caches here and, down the pipeline, on every later stage.
  virtual void release(const std::vector<uint64_t>& seqs) = 0;
  virtual StageCounters counters() const = 0;
};

// The rest of what the head asks of its daemon.
class Host {
 public:
  virtual ~Host() = default;
  // Lets a paired device's key through the daemon's authentication (ZAP).
  virtual void admit(const std::string& public_key) = 0;
  virtual void count_out_of_plan() = 0;
  virtual void count_unexpected() = 0;
  virtual DropCounts drops() const = 0;
  virtual uint64_t refused_handshakes() const = 0;
  virtual uint64_t resident_bytes() const = 0;
};

// Time as the head's liveness and recovery deadlines read it (a fake in tests moves it by hand).
class Clock {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  virtual time_point now() const = 0;
};

class SteadyClock final : public Clock {
 public:
  time_point now() const override { return std::chrono::steady_clock::now(); }
};

// Who the head is: facts of its daemon, fixed for its life.
struct HeadIdentity {
  std::string node_id;
  std::string control_endpoint;
  std::string data_endpoint;
  profiles::Profile profile;
  std::string public_key;  // empty with --insecure
  std::string keys_dir;    // where pairing keeps its keys; empty with --insecure (no pairing)
  int pairing_port = 0;
  int recovery_wait_s = 30;  // how long conversations wait for a device after a loss
  std::vector<std::string> model_dirs;  // its model library's folders (hearthd --models)
};

// The head's ways out (cluster/host.h).
struct HeadPorts {
  Outbox& outbox;
  LocalStage& stage;
  Host& host;
  const Clock& clock;
};

// What a node hands to the head's role, when it hosts one: requests on its control and pairing
// sockets, and the last stage's results. The node knows this interface, not the Head
// (apps/hearthd/main.cpp puts the two together), so neither has to be built to test the other.
class HeadRole {
 public:
  virtual ~HeadRole() = default;
  // `user_id`: the CURVE key ZAP authenticated the sender with (nullptr with --insecure).
  virtual void on_control(const std::string& identity, const char* peer_address, const char* user_id, const transport::Decoded& d,
                          zmq::message_t* payload) = 0;
  // "" when the key was paired, else why not.
  virtual std::string on_pair(const std::string& public_key, const std::string& node_id, const std::string& secret,
                              const std::string& peer_address) = 0;
  virtual void on_result(transport::wire::Result::Reader r) = 0;
  virtual void on_sampled(const std::vector<SampledToken>& tokens) = 0;
  // Called every loop iteration; has_work() keeps the loop from sleeping.
  virtual void tick() = 0;
  virtual bool has_work() const = 0;
};

}  // namespace hearth::cluster
