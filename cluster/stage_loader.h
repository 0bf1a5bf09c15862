// A device's side of a launch: takes the head's Assignment, finds the stage's weights (its own
// copy of the model, its cache, or chunk by chunk from the head, each checked), reports progress,
// and hands the finished file to the StageRunner.
//
// A staged assignment (a launch beside a model that serves) only gathers the weights: the stage
// the runner serves keeps running until the head's Commit. A plain one (a re-plan) replaces the
// runner's stage at once. One of each can be under way: a re-plan of the serving model while a
// new launch stages.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <map>
#include <string>

#include "cluster/config.h"
#include "cluster/local_models.h"
#include "cluster/stage_runner.h"
#include "cluster/weight_receiver.h"
#include "transport/codec.h"

namespace hearth::cluster {

class StageLoader {
 public:
  using SendToHead = std::function<void(capnp::MessageBuilder&)>;
  using Admit = std::function<void(const std::string& public_key)>;
  StageLoader(const DaemonConfig& config, StageRunner& runner, SendToHead send_to_head, Admit admit);

  // Throws std::invalid_argument for an assignment out of range.
  void on_assignment(transport::wire::Assignment::Reader a);
  void on_weight_chunk(transport::wire::WeightChunk::Reader c, zmq::message_t* payload, DropStats& drops);
  // Loads the staged weights of `plan_id` in place of the serving stage.
  void on_commit(uint64_t plan_id);
  // Drops the stage and any weights being gathered for `plan_id` (0: for every plan).
  void on_stop(uint64_t plan_id);

 private:
  struct Loading {
    uint64_t plan_id = 0;
    runtime::StageSpec spec;
    runtime::StageOptions options;
    NextHop next;
    StepTime planned;
    std::unique_ptr<WeightReceiver> receiver;
    std::string local_model;  // or: a GGUF of the same model this device already has
    bool staged = false;      // waits for a Commit once its weights are here
    bool here = false;        // its weights are all here (staged: waiting for the Commit)
    std::chrono::steady_clock::time_point last_report{};
  };
  void request_weights(Loading& l);
  void weights_here(uint64_t plan_id);
  void finish_loading(uint64_t plan_id);
  void fail(uint64_t plan_id, const std::string& why);
  void report(transport::wire::LoadStatus::State state, const std::string& message, uint64_t plan_id, uint64_t done,
              uint64_t total);

  const DaemonConfig& config_;
  StageRunner& runner_;
  SendToHead send_to_head_;
  Admit admit_;
  LocalModels local_models_;
  std::map<uint64_t, Loading> loads_;  // by plan id: at most one staged and one plain
};

}  // namespace hearth::cluster
