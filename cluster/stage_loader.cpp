#include "cluster/stage_loader.h"

#include <spdlog/spdlog.h>

#include "profiles/process_memory.h"

namespace hearth::cluster {

namespace wire = transport::wire;
using Steady = std::chrono::steady_clock;

namespace {

constexpr int kWeightWindow = 4;  // weight chunks requested ahead: bounds the head's buffers too
constexpr auto kProgressEvery = std::chrono::milliseconds(250);

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

StageLoader::StageLoader(const DaemonConfig& config, StageRunner& runner, SendToHead send_to_head, Admit admit)
    : config_(config),
      runner_(runner),
      send_to_head_(std::move(send_to_head)),
      admit_(std::move(admit)),
      local_models_(config.model_dirs.empty() ? std::vector<std::string>{config.data_dir + "/models"} : config.model_dirs,
                    config.data_dir + "/model-hashes") {}

void StageLoader::on_assignment(wire::Assignment::Reader a) {
  const uint64_t bytes = a.getStageFileBytes();
  if (a.getFirstLayer() > a.getLastLayer() || a.getLastLayer() > 4096 || bytes == 0 || bytes > (uint64_t{1} << 42) ||
      a.getNCtx() == 0 || a.getNCtx() > (1u << 20) || a.getMaxBatch() == 0 || a.getMaxBatch() > 4096 ||
      a.getMaxSequences() == 0 || a.getMaxSequences() > 1024 || a.getHasEmbedding())
    throw std::invalid_argument("assignment out of range");
  runner_.unload();
  Loading l;
  l.plan_id = a.getPlanId();
  l.spec = {static_cast<int>(a.getFirstLayer()), static_cast<int>(a.getLastLayer()), false, a.getHasOutput()};
  l.options = {.n_ctx = static_cast<int>(a.getNCtx()),
               .max_batch = static_cast<int>(a.getMaxBatch()),
               .max_sequences = static_cast<int>(a.getMaxSequences())};
  l.next_endpoint = transport::tcp_endpoint(a.getNextEndpoint().cStr());
  l.next_key = a.getNextKey().cStr();
  for (auto k : a.getMemberKeys()) admit_(k.cStr());
  const std::string name = hex64(a.getModelHash()) + "-" + std::to_string(l.spec.first_layer) + "-" +
                           std::to_string(l.spec.last_layer) + (l.spec.has_output ? "-out-" : "-") + hex64(a.getStageFileHash()) +
                           ".gguf";
  spdlog::info("assigned layers [{}, {}){} of {} (plan {}), {:.1f} MB", l.spec.first_layer, l.spec.last_layer,
               l.spec.has_output ? " + output head" : "", a.getModelName().cStr(), l.plan_id, bytes / 1e6);
  loading_ = std::move(l);
  try {
    if (config_.memory_limit > 0 && bytes > config_.memory_limit)
      throw std::runtime_error("the stage's weights (" + std::to_string(bytes) + " bytes) exceed this device's memory limit (" +
                               std::to_string(config_.memory_limit) + " bytes)");
    if (auto local = local_models_.find(a.getModelHash())) {
      spdlog::info("this device has the model ({}): its layers are mapped from it, nothing is transferred", *local);
      loading_->local_model = *local;
      finish_loading();
      return;
    }
    loading_->receiver = std::make_unique<WeightReceiver>(config_.data_dir + "/cache/" + name, bytes);
    if (loading_->receiver->complete()) {
      spdlog::info("weights found in the cache: no transfer needed");
      finish_loading();
    } else {
      request_weights();
    }
  } catch (const std::exception& e) {
    report(wire::LoadStatus::State::FAILED, e.what(), loading_->plan_id, 0, 0);
    loading_.reset();
  }
}

void StageLoader::request_weights() {
  for (const auto& [offset, length] : loading_->receiver->next_requests(kWeightWindow)) {
    capnp::MallocMessageBuilder b;
    auto r = b.initRoot<wire::Envelope>().initWeightRequest();
    r.setPlanId(loading_->plan_id);
    r.setOffset(offset);
    r.setLength(length);
    send_to_head_(b);
  }
}

void StageLoader::on_weight_chunk(wire::WeightChunk::Reader c, zmq::message_t* payload, DropStats& drops) {
  if (!loading_ || c.getPlanId() != loading_->plan_id || payload == nullptr || !loading_->receiver) {
    drops.out_of_plan++;
    return;
  }
  try {
    loading_->receiver->accept(c.getOffset(), {payload->data<uint8_t>(), payload->size()}, c.getChecksum());
  } catch (const std::invalid_argument& e) {  // a bad chunk: asked for again
    spdlog::warn("weights: {}", e.what());
  } catch (const std::exception& e) {  // this device cannot store it (a full disk): the launch fails now
    spdlog::error("cannot store the stage's weights: {}", e.what());
    report(wire::LoadStatus::State::FAILED, std::string("cannot store the stage's weights: ") + e.what(), loading_->plan_id, 0,
           0);
    loading_.reset();
    return;
  }
  if (loading_->receiver->complete()) {
    finish_loading();
    return;
  }
  request_weights();
  if (Steady::now() - loading_->last_report > kProgressEvery) {
    report(wire::LoadStatus::State::RECEIVING, "", loading_->plan_id, loading_->receiver->bytes_done(),
           loading_->receiver->total());
    loading_->last_report = Steady::now();
  }
}

void StageLoader::finish_loading() {
  Loading l = std::move(*loading_);
  loading_.reset();
  const uint64_t total = l.receiver ? l.receiver->total() : 0;
  try {
    report(wire::LoadStatus::State::LOADING, "", l.plan_id, 0, 0);
    if (l.receiver) l.receiver->finish();
    runner_.load(l.plan_id, l.receiver ? l.receiver->final_path() : l.local_model, l.spec, l.options, l.next_endpoint,
                 l.next_key);
    report(wire::LoadStatus::State::READY,
           !l.receiver                ? "local copy"
           : l.receiver->was_cached() ? "cached"
                                      : "",
           l.plan_id, total, total);
  } catch (const std::exception& e) {
    runner_.unload();
    spdlog::error("cannot load the stage: {}", e.what());
    report(wire::LoadStatus::State::FAILED, e.what(), l.plan_id, 0, 0);
  }
}

void StageLoader::report(wire::LoadStatus::State state, const std::string& message, uint64_t plan_id, uint64_t done,
                         uint64_t total) {
  capnp::MallocMessageBuilder b;
  auto s = b.initRoot<wire::Envelope>().initLoadStatus();
  s.setPlanId(plan_id);
  s.setState(state);
  s.setBytesDone(done);
  s.setBytesTotal(total);
  s.setMessage(message);
  s.setResidentBytes(profiles::resident_bytes());
  send_to_head_(b);
}

}  // namespace hearth::cluster
