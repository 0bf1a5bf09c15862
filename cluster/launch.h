// A launch and the plan it serves: which device runs which layers, how far each got, and the
// launch's life as an explicit state machine.
//
//   kStaging  --(every device has its weights; the old model drained)--> kLoading
//   kLoading  --(every stage loaded)----------------------------------> kReady
//   kReady    --(a device is lost: a new plan on the devices left)-----> kLoading
//   kReady or kLoading --(the devices left cannot hold the model)------> kWaitingForDevice
//   kWaitingForDevice --(a device joins or comes back: a new plan)-----> kLoading
//   any but kFailed --(a load failed, a launch lost a device, the wait expired)--> kFailed
//
// kFailed is final: a new `hearth launch` makes a new LaunchedPlan. A launch starts in kStaging,
// beside the plan that serves (which it replaces only at the commit, kStaging -> kLoading); a
// re-plan after a lost device starts in kLoading, since nothing serves then.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "cluster/device_registry.h"
#include "cluster/drift.h"
#include "cluster/event_log.h"
#include "cluster/stage_file.h"
#include "partitioner/partitioner.h"
#include "runtime/format/gguf.h"
#include "runtime/model/model_config.h"
#include "runtime/model/stage.h"
#include "runtime/text/tokenizer.h"

namespace hearth::cluster {

enum class LaunchState {
  kStaging,           // assignments sent; devices receive weights while the old plan serves
  kLoading,           // assignments sent; stages receive and load their weights
  kReady,             // every stage loaded: conversations run
  kWaitingForDevice,  // a device was lost and the ones left cannot hold the model
  kFailed,            // final; `failure` says why
};
const char* to_string(LaunchState s);
// Whether the state machine above has this edge.
bool can_move(LaunchState from, LaunchState to);

enum class StageState { kAssigned, kReceiving, kStaged, kLoading, kReady, kFailed };
const char* to_string(StageState s);

// One stage of the plan.
struct PlannedStage {
  std::string node_id;
  runtime::StageSpec spec;
  std::unique_ptr<StageFile> file;  // what the device receives (not for the head's own stage)
  StageState state = StageState::kAssigned;
  uint64_t bytes_done = 0, bytes_total = 0;
  uint64_t resident_bytes = 0;
  std::string message;
  runtime::TensorType wire_type = runtime::TensorType::F32;  // how its output hop carries activations
  // What the plan expects of its decode steps by their rows, sent with its assignment (the stage
  // adds it up for the steps it computes); it stays the plan's.
  StepTime planned;
  // What the drift watch expects of it per one-token step, and its device's speed behind that:
  // the plan's figures at first, what was measured once a drift did not pay a re-plan.
  double expected_ms = 0;
  double speed = 1;
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
  // How hops carry activations (F32, F16, Q8_0); nullopt: `auto`, the plan says per hop.
  std::optional<runtime::TensorType> wire_type = runtime::TensorType::F32;
  // Speculative decoding (cluster/draft_source.h): where drafts come from ("" for none), and the
  // most tokens one draft may hold.
  std::string draft;
  int draft_max = 8;
  uint64_t draft_bytes = 0;  // a draft model's file, held on the head beside its stage
  // How it was planned, to plan again on the devices left when one is lost.
  partitioner::ModelSpec spec;
  partitioner::PartitionOptions partition;
  std::vector<std::string> wanted;  // --devices (empty: any)
  EventLog events;                  // what happened to it (lost devices, re-plans), for status
  std::string failure;              // why it failed or waits (kFailed, kWaitingForDevice)
  std::string launcher;             // the client waiting for the launch to finish, if any
  uint64_t launcher_request = 0;
  std::chrono::steady_clock::time_point started;
  std::optional<std::chrono::steady_clock::time_point> staged_at;  // when every stage had its weights (head clock)
  // Each stage's decode steps when the pace was last checked, and whether a slow
  // pace is being reported (an event when it starts and one when it ends).
  std::vector<StepCount> pace_mark;
  bool slow_pace = false;
  // A plan that follows the devices (cluster/drift.h): only the planner's (a --split is the
  // user's to keep); each stage's decode steps (cluster/drift.h) where the drift window opened.
  bool split_by_user = false;
  DriftWatch drift;
  std::vector<StepCount> drift_mark;
  StepCount drift_pass_mark;  // the head's lone passes, likewise
  Clock::time_point drift_mark_at{};
  // What the drift watch expects of the links per decode step (the plan's hops at first).
  StepTime expected_links;
  // The links drifted with every stage on plan: every device measures its links again, and the
  // head plans again once they all reported (or at `deadline`).
  struct Reprobe {
    Drift drift;
    std::set<std::string> waiting;  // node ids of the devices still measuring
    Clock::time_point deadline;
    std::string figures;  // the links measured: "b -> c 12.10 ms, 48 Mbit/s"
  };
  std::optional<Reprobe> reprobe;
  // The scheduler's decode passes, draft tokens sent and accepted where the drafts watch's
  // window opened (head_rebalance.cpp).
  struct DraftMark {
    uint64_t passes = 0, drafted = 0, accepted = 0;
  };
  std::optional<DraftMark> draft_mark;
  // A re-balance of the serving plan: it switches as soon as its stages have their weights, and
  // the conversations go on on it, replayed, instead of being drained.
  bool rebalance = false;

  explicit LaunchedPlan(LaunchState initial = LaunchState::kLoading) : state_(initial) {}
  LaunchState state() const { return state_; }
  bool ready() const { return state_ == LaunchState::kReady; }
  // A launch a client waits for, still staging or loading.
  bool launching() const {
    return (state_ == LaunchState::kStaging || state_ == LaunchState::kLoading) && !launcher.empty();
  }
  // Every stage has its weights and waits for the commit (the head's own stage maps the file then).
  bool staged_everywhere() const;
  // Takes an edge of the state machine; throws std::logic_error for one it does not have.
  void move_to(LaunchState to);

 private:
  LaunchState state_;
};

// What a launch chose (sizes, wire type, drafts, how to plan) and its history, for a plan of the
// same model that replaces it: a re-plan after a lost device, a re-balance.
void carry_choices(const LaunchedPlan& from, LaunchedPlan& to);

// The (ctx, streams) a launch tries, largest first, when the client named neither: fewer streams
// before a shorter context, since a conversation's length matters more at home than how many run
// at once.
std::vector<std::pair<int, int>> fallback_sizes(int ctx, int streams);

// "head:2,a:2,b:1" -> [(name, layers)]; throws Failure(BAD_REQUEST).
std::vector<std::pair<std::string, int>> parse_split(const std::string& text);

// The devices' profiles, in order: what the planner plans with.
std::vector<partitioner::DeviceProfile> profiles_of(const std::vector<const Device*>& devices);

// The planner's choice on `devices` (the head first); throws Failure(NO_CAPACITY) when nothing fits.
partitioner::PartitionPlan plan_by_planner(const partitioner::ModelSpec& spec, const std::vector<const Device*>& devices,
                                           const partitioner::LinkTable& links, const partitioner::PartitionOptions& options);
// A hand-made split (device names and layer counts in pipeline order, "head" for the head),
// checked against memory like the planner's: BAD_REQUEST for a malformed or impossible split,
// NO_CAPACITY for one that does not fit.
partitioner::PartitionPlan plan_by_split(const std::string& split, const partitioner::ModelSpec& spec,
                                         const std::vector<const Device*>& devices, const partitioner::LinkTable& links,
                                         const partitioner::PartitionOptions& options);

}  // namespace hearth::cluster
