// The head's role: it keeps the table of devices, plans a launch with the partitioner, streams
// each device only the weights of its layers, and serves the controller's requests (devices,
// launch, generate, status, stop). It runs on the node's loop thread and sends through the node.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/pairing.h"
#include "daemon/scheduler.h"
#include "daemon/stage_file.h"
#include "partitioner/partitioner.h"
#include "runtime/gguf.h"
#include "runtime/model_config.h"
#include "runtime/tokenizer.h"
#include "transport/codec.h"

namespace hearth::daemon {

class Node;

// A device as the head knows it.
struct Device {
  std::string node_id;
  std::string control_endpoint;
  std::string data_endpoint;
  partitioner::DeviceProfile profile;  // profile.name is the device's name
  std::string cpu, arch, os;
  int cores = 0;
  std::chrono::steady_clock::time_point last_seen;
  bool alive = true;
  bool is_self = false;
  std::string public_key;       // its CURVE key (empty with --insecure)
  uint64_t incarnation = 0;     // of the process that registered (Hello)
  uint64_t dropped = 0;         // messages it refused, from its heartbeats
  uint64_t resident_bytes = 0;  // its RSS, from its heartbeats
  // Its stage's counters, from its heartbeats (the head's own come from its node).
  uint64_t batches = 0, tokens = 0, compute_ns = 0, bytes_out = 0, decode_steps = 0, decode_ns = 0;
  uint64_t refused_handshakes = 0;
};

// One stage of the launched plan.
struct PlannedStage {
  std::string node_id;
  runtime::StageSpec spec;
  std::unique_ptr<StageFile> file;  // what the device receives (not for the head's own stage)
  std::string state = "assigned";   // assigned, receiving, loading, ready, failed
  uint64_t bytes_done = 0, bytes_total = 0;
  uint64_t resident_bytes = 0;
  std::string message;
};

struct LaunchedPlan {
  uint64_t id = 0;
  std::string model_path;
  uint64_t model_hash = 0;
  std::unique_ptr<runtime::GgufFile> file;
  runtime::ModelConfig config;
  std::unique_ptr<runtime::Tokenizer> tokenizer;
  partitioner::PartitionPlan plan;
  std::vector<PlannedStage> stages;
  runtime::StageOptions options;
  // How it was planned, to plan again on the devices left when one is lost.
  partitioner::ModelSpec spec;
  partitioner::PartitionOptions partition;
  std::vector<std::string> wanted;  // --devices (empty: any)
  std::vector<std::string> events;  // what happened to it (lost devices, re-plans), for status
  bool ready = false;
  std::string failure;              // set when a device was lost or a stage failed to load
  std::string launcher;             // the client waiting for the launch to finish
  uint64_t launcher_request = 0;
  std::chrono::steady_clock::time_point started;
  // Each stage's decode counters (steps, ns) when the pace was last checked, and whether a slow
  // pace is being reported (an event when it starts and one when it ends).
  std::vector<std::pair<uint64_t, uint64_t>> pace_mark;
  bool slow_pace = false;
};

class Head {
 public:
  explicit Head(Node& node);
  ~Head();

  // `user_id`: the CURVE key ZAP authenticated the sender with (nullptr with --insecure).
  void on_control(const std::string& identity, const char* peer_address, const char* user_id, const transport::Decoded& d,
                  zmq::message_t* payload);
  void on_result(transport::wire::Result::Reader r);
  void on_sampled(const std::vector<SampledToken>& tokens);
  void tick();
  bool has_work() const { return scheduler_ && scheduler_->has_work(); }
  // A pairing request (from the pairing socket): "" when the key was added, else why not.
  std::string on_pair(const std::string& public_key, const std::string& node_id, const std::string& secret);
  // The join token new devices pair with (empty with --insecure).
  std::string join_token() const;

 private:
  void on_hello(const std::string& identity, const char* peer_address, const char* user_id, transport::wire::Hello::Reader h);
  void on_heartbeat(const std::string& identity, transport::wire::Heartbeat::Reader h);
  void on_weight_request(const std::string& identity, transport::wire::WeightRequest::Reader r);
  void on_load_status(const std::string& identity, transport::wire::LoadStatus::Reader s);
  void on_error(const std::string& identity, transport::wire::Error::Reader e);
  void on_link_report(const std::string& identity, transport::wire::LinkReport::Reader r);
  // Asks `prober` to measure its links to `targets` (it answers with a LinkReport).
  void request_probe(const std::string& prober, const std::vector<const Device*>& targets);
  void on_devices(const std::string& client, uint64_t request_id);
  void on_launch(const std::string& client, uint64_t request_id, transport::wire::LaunchRequest::Reader r);
  void on_generate(const std::string& client, uint64_t request_id, transport::wire::GenerateRequest::Reader r);
  void on_status(const std::string& client, uint64_t request_id);
  void on_stop(const std::string& client, uint64_t request_id);
  std::vector<int32_t> encode_request(transport::wire::GenerateRequest::Reader r, std::string& chat_template) const;

  partitioner::PartitionPlan make_plan(const partitioner::ModelSpec& spec, const std::vector<const Device*>& devices,
                                       transport::wire::LaunchRequest::Reader r, const partitioner::PartitionOptions& options);
  void start_stages(const std::vector<const Device*>& devices);
  void launch_finished(bool ok, const std::string& message);
  void fail_plan(const std::string& reason);
  // A device of the ready plan was lost: plan again on the devices left and replay every open
  // conversation there (the clients see a pause). Fails them with a clear error if the devices
  // left cannot hold the model.
  void recover(const std::string& lost_node_id, const std::string& reason);
  // A device registered or came back while conversations wait for one: try the re-plan again.
  void retry_recovery(const std::string& why);
  void fail_carried(const std::string& why);
  std::vector<const Device*> candidates(const std::vector<std::string>& wanted) const;
  partitioner::LinkTable link_table(const std::vector<const Device*>& devices,
                                    const std::vector<partitioner::DeviceProfile>& profiles) const;
  partitioner::PartitionPlan plan_by_planner(const partitioner::ModelSpec& spec, const std::vector<const Device*>& devices,
                                             const partitioner::PartitionOptions& options) const;
  void unload_all();
  std::string plan_json() const;
  void emit(const GenerationEvent& e);
  // After a generation that decoded alone: compares its pace with the plan's (daemon/pace.h).
  void check_pace(double decode_tok_s);
  void reply_error(const std::string& client, uint64_t request_id, const std::string& message);
  Device* device_by_identity(const std::string& identity);
  std::vector<std::string> member_keys() const;

  Node& node_;
  std::unique_ptr<PairingRegistry> pairing_;  // secure clusters only
  std::map<std::string, Device> devices_;  // by node id
  std::unique_ptr<LaunchedPlan> plan_;
  std::unique_ptr<Scheduler> scheduler_;
  std::vector<CarriedSession> carried_;  // conversations waiting for a device (see recover())
  std::chrono::steady_clock::time_point recovery_deadline_{};
  std::map<std::string, std::chrono::steady_clock::time_point> hello_requested_;  // unknown node ids we asked
  uint64_t next_plan_id_;
  std::map<std::string, uint64_t> hash_cache_;  // model path + size + mtime -> XXH3
  // Measured links, (from node id, to node id) -> figures, from the devices' link probes.
  std::map<std::pair<std::string, std::string>, partitioner::Link> links_;
};

}  // namespace hearth::daemon
