// A device's side of a launch: takes the head's Assignment, finds the stage's weights (its own
// copy of the model, its cache, or chunk by chunk from the head, each checked), reports progress,
// and hands the finished file to the StageRunner.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
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

 private:
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
  void request_weights();
  void finish_loading();
  void report(transport::wire::LoadStatus::State state, const std::string& message, uint64_t plan_id, uint64_t done,
              uint64_t total);

  const DaemonConfig& config_;
  StageRunner& runner_;
  SendToHead send_to_head_;
  Admit admit_;
  LocalModels local_models_;
  std::optional<Loading> loading_;
};

}  // namespace hearth::cluster
