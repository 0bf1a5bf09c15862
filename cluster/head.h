// The head's role: it keeps the table of devices, plans a launch with the partitioner, streams
// each device only the weights of its layers, re-plans when a device is lost, and serves the
// clients' requests (devices, launch, generate, status, stop).
//
// It runs on its daemon's loop thread and reaches the rest only through the narrow interfaces of
// cluster/host.h (an outbox to devices and clients, its own first stage, its host's counters, a
// clock), so tests/head_test.cpp drives it in-process with fakes. Its code is split by concept:
//   head.cpp          registration, heartbeats, links, pairing; dispatch and the tick
//   head_launch.cpp   launch: planning, staging beside the serving plan, the commit, weight
//                     serving, load progress, unloading
//   head_recovery.cpp a lost device: re-plan on the devices left, replay, wait for a device
//   head_rebalance.cpp devices slower or faster than planned: re-plan, stage, switch, replay
//   head_clients.cpp  generation requests, their events, the pace check
//   head_status.cpp   the devices, plan and status replies
//   head_models.cpp   the model library, each model planned on the devices up now
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cluster/device_registry.h"
#include "cluster/failure.h"
#include "cluster/host.h"
#include "cluster/launch.h"
#include "cluster/model_library.h"
#include "cluster/pairing.h"
#include "cluster/pairing_throttle.h"
#include "cluster/probe_queue.h"
#include "cluster/scheduler.h"
#include "profiles/profiler.h"
#include "transport/codec.h"

namespace hearth::cluster {

class Head final : public HeadRole {
 public:
  Head(HeadIdentity self, HeadPorts ports);
  ~Head() override;

  // A message on the control socket. `user_id`: the CURVE key ZAP authenticated the sender with
  // (nullptr with --insecure). Throws std::invalid_argument for a malformed one.
  void on_control(const std::string& identity, const char* peer_address, const char* user_id, const transport::Decoded& d,
                  zmq::message_t* payload) override;
  // Sampled tokens from the last stage (a Result on the data socket).
  void on_result(transport::wire::Result::Reader r) override;
  void on_sampled(const std::vector<SampledToken>& tokens) override;
  // Liveness, recovery deadlines, and one scheduler step; the loop calls it every iteration.
  void tick() override;
  bool has_work() const override { return scheduler_ && scheduler_->has_work(); }
  // A pairing request (from the pairing socket) from `peer_address`: "" when the key was added,
  // else why not.
  std::string on_pair(const std::string& public_key, const std::string& node_id, const std::string& secret,
                      const std::string& peer_address) override;
  // The join token new devices pair with (empty with --insecure).
  std::string join_token() const;

  // For tests and status: what the head holds.
  const DeviceRegistry& devices() const { return registry_; }
  const LaunchedPlan* plan() const { return plan_.get(); }
  // A launch receiving its weights beside the serving plan, if any.
  const LaunchedPlan* next() const { return next_.get(); }
  // How long a staged launch waits for the old model's conversations to finish before it switches.
  static constexpr std::chrono::seconds kDrainWait{10};

 private:
  // head.cpp: registration and health.
  void on_hello(const std::string& identity, const char* peer_address, const char* user_id, transport::wire::Hello::Reader h);
  void on_heartbeat(const std::string& identity, transport::wire::Heartbeat::Reader h);
  void learn_storage(const std::string& node_id, const StageCounters& work);
  void on_error(const std::string& identity, transport::wire::Error::Reader e);
  void on_link_report(const std::string& identity, transport::wire::LinkReport::Reader r);
  // Asks `prober` to measure its links to `targets`, in its turn: one device measures at a time.
  void request_probe(const std::string& prober, const std::vector<const Device*>& targets);
  // Sends the probes whose turn has come (cluster/probe_queue.h).
  void send_probes();
  void ask_to_register(const std::string& node_id);
  // `what` happened to it: "stopped responding (...)", "restarted, and lost its stage".
  void device_lost(const std::string& node_id, const std::string& what);

  // head_launch.cpp
  void on_launch(const std::string& client, uint64_t request_id, transport::wire::LaunchRequest::Reader r);
  std::unique_ptr<LaunchedPlan> open_model(const std::string& model_path);
  partitioner::PartitionOptions partition_options(transport::wire::LaunchRequest::Reader r, LaunchedPlan& p) const;
  void choose_draft(transport::wire::LaunchRequest::Reader r, LaunchedPlan& p) const;
  DraftTarget draft_target(const LaunchedPlan& p) const;
  partitioner::PartitionPlan fit_plan(LaunchedPlan& p, const std::vector<const Device*>& devices,
                                      const partitioner::LinkTable& links, bool sized_by_client);
  std::string what_would_fit(const LaunchedPlan& p, const std::vector<const Device*>& devices) const;
  // Makes p's stages and sends each device its assignment; `staged`: they receive and wait for a
  // Commit (a launch), else they load at once (a re-plan).
  void assign_stages(LaunchedPlan& p, const std::vector<const Device*>& devices, bool staged);
  void send_assignment(const LaunchedPlan& p, size_t i, const std::vector<std::string>& plan_keys, bool staged);
  // `devices` as the planner sees them for p: the head's memory less a draft model it holds.
  std::vector<const Device*> planning_devices(const LaunchedPlan& p, std::vector<const Device*> devices,
                                              Device& head_with_draft) const;
  void start_serving();
  void try_commit();
  void abandon_next(const std::string& reason, ErrorCategory category);
  void announce_plan(const LaunchedPlan& p);
  LaunchedPlan* plan_with_id(uint64_t id);
  void on_weight_request(const std::string& identity, transport::wire::WeightRequest::Reader r);
  void on_load_status(const std::string& identity, transport::wire::LoadStatus::Reader s);
  void report_progress(const LaunchedPlan& p, const PlannedStage& s);
  void launch_finished(LaunchedPlan& p, bool ok, const std::string& message, ErrorCategory category = ErrorCategory::INTERNAL);
  void reply_launch_failure(const std::string& client, uint64_t request_id, const std::string& why, ErrorCategory category);
  void fail_plan(const std::string& reason, ErrorCategory category);
  // Fails every conversation with `why`, tells the plan's devices to unload, unloads the head's stage.
  void unload_all(const std::string& why);
  void send_stop(const std::string& node_id, uint64_t plan_id);

  // head_recovery.cpp
  // A device of the ready plan was lost: plan again on the devices left and replay every open
  // conversation there (the clients see a pause). When the devices left cannot hold the model,
  // the conversations wait up to --recovery-wait for a device, then fail.
  void recover(const std::string& lost_node_id, const std::string& reason);
  void wait_for_device(std::vector<CarriedSession> carried, const std::string& why);
  // A device registered or came back while conversations wait for one: try the re-plan again.
  void retry_recovery(const std::string& why);
  void fail_carried(const std::string& why, ErrorCategory category);
  void check_recovery_deadline();

  // head_rebalance.cpp: a plan that follows the devices' measured speeds.
  void watch_drift();
  // Speeds measured long ago on devices that run no stage now are forgotten before a plan is made.
  void forget_stale_speeds();
  void on_drift(const Drift& drift);
  // Links drifted: the devices measured them again (or some did, by the deadline).
  void reprobe_reported(const std::string& node_id, const std::string& figures);
  void replan_after_reprobe();
  // Plans again with the measured figures; a re-balance when it pays, else they become the plan's.
  void replan(const Drift& drift);
  // Plans with the devices' figures as they are now, and moves the serving plan when the new one's
  // `cost` is predicted to save enough of `serving_ms`; an event says which, and why, with `figures`.
  enum class Verdict { kStays, kWaits, kMoves };
  Verdict follow(const std::string& figures, double serving_ms, const std::function<double(const partitioner::Prediction&)>& cost,
                 const char* unit = "ms/token");
  // The drafts' measured length and acceptance, against what a drafting launch was planned for.
  void watch_drafts();
  void stage_rebalance(partitioner::PartitionPlan plan, const std::vector<const Device*>& devices);

  // head_clients.cpp
  void on_generate(const std::string& client, uint64_t request_id, transport::wire::GenerateRequest::Reader r);
  // The prompt's tokens; a conversation also names its template and how its reply is shown.
  std::vector<int32_t> encode_request(transport::wire::GenerateRequest::Reader r, std::string& chat_template,
                                      runtime::ReplyFilter& reply) const;
  void emit(const GenerationEvent& e);
  // After a generation that decoded alone: compares its pace, in trips through the pipeline per
  // second, with the plan's (cluster/pace.h).
  void check_pace(double passes_per_s);

  // head_status.cpp
  void on_devices(const std::string& client, uint64_t request_id);
  void on_status(const std::string& client, uint64_t request_id);
  void on_stop(const std::string& client, uint64_t request_id);
  void fill_plan(const LaunchedPlan& p, transport::wire::PlanReport::Builder out) const;
  void fill_stage(const PlannedStage& s, const partitioner::StageAssignment& a, transport::wire::StageReport::Builder out) const;
  StageCounters counters_of(const std::string& node_id) const;
  // A stage's decode steps so far (cluster/drift.h): its one-token steps, and its steps of
  // several rows where its plan says what they cost.
  StepCount steps_of(const PlannedStage& stage) const;

  // head_models.cpp: the model library, each model planned on the devices up now as a launch with no sizes would be.
  void on_models(const std::string& client, uint64_t request_id);
  void fill_library_model(const LibraryModel& m, const std::vector<const Device*>& devices,
                          transport::wire::LibraryModel::Builder out) const;

  void reply_error(const std::string& client, uint64_t request_id, const Failure& failure);

  HeadIdentity self_;
  HeadPorts ports_;
  DeviceRegistry registry_;
  ModelLibrary library_;
  std::unique_ptr<PairingRegistry> pairing_;  // secure clusters only
  PairingThrottle pairing_throttle_;
  std::unique_ptr<LaunchedPlan> plan_;  // the plan that serves (or is rebuilt after a lost device)
  std::unique_ptr<LaunchedPlan> next_;  // a launch staging beside it (LaunchState::kStaging)
  std::unique_ptr<Scheduler> scheduler_;
  std::vector<CarriedSession> carried_;  // conversations waiting for a device (see recover())
  Clock::time_point recovery_deadline_{};
  std::optional<Clock::time_point> last_rebalance_;           // when the serving plan last followed the devices
  std::optional<Clock::time_point> last_reprobe_;             // when the links were last measured again for a drift
  ProbeQueue probes_;                                         // link probes waiting their turn
  std::map<std::string, Clock::time_point> hello_requested_;  // unknown node ids we asked to register
  uint64_t next_plan_id_;
  std::map<std::string, uint64_t> hash_cache_;  // model path + size + mtime -> XXH3
  std::map<std::string, double> storage_said_;  // node id -> its storage figure as last logged (learn_storage)
};

}  // namespace hearth::cluster
