#include "cluster/stage_loader.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <optional>

#include "cluster/activation_codec.h"
#include "cluster/wire_convert.h"
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

// The plan's time for the stage's decode steps; nullopt for points out of order, the first not
// at one row, times that are no times, or a last piece that runs past any time at the most rows a
// step may hold. (None at all, from an older head: nothing planned.)
std::optional<StepTime> step_plan_from_wire(capnp::List<wire::StepPoint>::Reader points, uint32_t max_batch) {
  constexpr double kMostMs = 1e7;  // a step of hours: beyond any device
  if (points.size() > 16) return std::nullopt;
  StepTime t;
  for (const auto p : points) {
    const double rows = p.getRows(), ms = p.getMs();
    if (!std::isfinite(rows) || !std::isfinite(ms) || ms < 0 || ms > kMostMs) return std::nullopt;
    if (t.points.empty() ? rows != 1 : rows <= t.points.back().rows || rows > 1e6) return std::nullopt;
    t.points.push_back({rows, ms});
  }
  if (t.at(std::max<double>(1, max_batch)) > kMostMs) return std::nullopt;
  return t;
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
      a.getMaxSequences() == 0 || a.getMaxSequences() > 1024 || a.getHasEmbedding() || !kv_type_from_wire(a.getKvType()) ||
      !dtype_from_wire(a.getWireType()))
    throw std::invalid_argument("assignment out of range");
  const std::optional<StepTime> planned = step_plan_from_wire(a.getStepPlan(), a.getMaxBatch());
  if (!planned) throw std::invalid_argument("assignment out of range: its step plan");
  Loading l;
  l.plan_id = a.getPlanId();
  l.staged = a.getStaged();
  // A new assignment of a kind replaces the one under way of that kind; a plain one also the
  // serving stage.
  if (!l.staged) runner_.unload();
  std::erase_if(loads_, [&](const auto& kv) { return kv.second.staged == l.staged || kv.first == l.plan_id; });
  l.spec = {static_cast<int>(a.getFirstLayer()), static_cast<int>(a.getLastLayer()), false, a.getHasOutput()};
  l.options = {.n_ctx = static_cast<int>(a.getNCtx()),
               .max_batch = static_cast<int>(a.getMaxBatch()),
               .max_sequences = static_cast<int>(a.getMaxSequences()),
               .kv_type = *kv_type_from_wire(a.getKvType()),
               .drafts = a.getDrafts()};
  l.next = {.endpoint = transport::tcp_endpoint(a.getNextEndpoint().cStr()),
            .key = a.getNextKey().cStr(),
            .wire_type = *dtype_from_wire(a.getWireType())};
  for (auto k : a.getMemberKeys()) admit_(k.cStr());
  l.planned = *planned;
  const std::string name = hex64(a.getModelHash()) + "-" + std::to_string(l.spec.first_layer) + "-" +
                           std::to_string(l.spec.last_layer) + (l.spec.has_output ? "-out-" : "-") + hex64(a.getStageFileHash()) +
                           ".gguf";
  spdlog::info("assigned layers [{}, {}){} of {} (plan {}{}), {:.1f} MB", l.spec.first_layer, l.spec.last_layer,
               l.spec.has_output ? " + output head" : "", a.getModelName().cStr(), l.plan_id,
               l.staged ? ", staged beside the serving stage" : "", bytes / 1e6);
  const uint64_t id = l.plan_id;
  Loading& at = loads_[id] = std::move(l);
  try {
    // No check of the weights against this device's memory limit here: the planner may give a
    // device with storage more weights than its memory, and the stage pages what does not fit
    // (StageRunner::paging_for).
    if (auto local = local_models_.find(a.getModelHash())) {
      spdlog::info("this device has the model ({}): its layers are mapped from it, nothing is transferred", *local);
      at.local_model = *local;
      return weights_here(id);
    }
    at.receiver = std::make_unique<WeightReceiver>(config_.data_dir + "/cache/" + name, bytes);
    if (at.receiver->complete()) {
      spdlog::info("weights found in the cache: no transfer needed");
      return weights_here(id);
    }
    request_weights(at);
  } catch (const std::exception& e) {
    fail(id, e.what());
  }
}

void StageLoader::request_weights(Loading& l) {
  for (const auto& [offset, length] : l.receiver->next_requests(kWeightWindow)) {
    capnp::MallocMessageBuilder b;
    auto r = b.initRoot<wire::Envelope>().initWeightRequest();
    r.setPlanId(l.plan_id);
    r.setOffset(offset);
    r.setLength(length);
    send_to_head_(b);
  }
}

void StageLoader::on_weight_chunk(wire::WeightChunk::Reader c, zmq::message_t* payload, DropStats& drops) {
  const auto it = loads_.find(c.getPlanId());
  if (it == loads_.end() || payload == nullptr || !it->second.receiver || it->second.here) {
    drops.out_of_plan++;
    return;
  }
  Loading& l = it->second;
  try {
    l.receiver->accept(c.getOffset(), {payload->data<uint8_t>(), payload->size()}, c.getChecksum());
  } catch (const std::invalid_argument& e) {  // a bad chunk: asked for again
    spdlog::warn("weights: {}", e.what());
  } catch (const std::exception& e) {  // this device cannot store it (a full disk): the launch fails now
    return fail(l.plan_id, std::string("cannot store the stage's weights: ") + e.what());
  }
  if (l.receiver->complete()) return weights_here(l.plan_id);
  request_weights(l);
  if (Steady::now() - l.last_report > kProgressEvery) {
    report(wire::LoadStatus::State::RECEIVING, "", l.plan_id, l.receiver->bytes_done(), l.receiver->total());
    l.last_report = Steady::now();
  }
}

// A plain assignment loads now; a staged one says so and waits for the Commit.
void StageLoader::weights_here(uint64_t plan_id) {
  Loading& l = loads_.at(plan_id);
  if (!l.staged) return finish_loading(plan_id);
  try {
    if (l.receiver) l.receiver->finish();
  } catch (const std::exception& e) {
    return fail(plan_id, std::string("cannot store the stage's weights: ") + e.what());
  }
  l.here = true;
  const uint64_t total = l.receiver ? l.receiver->total() : 0;
  spdlog::info("the weights of plan {} are here: waiting for the head to switch to it", plan_id);
  report(wire::LoadStatus::State::STAGED, "", plan_id, total, total);
}

void StageLoader::on_commit(uint64_t plan_id) {
  const auto it = loads_.find(plan_id);
  if (it == loads_.end() || !it->second.staged || !it->second.here) {
    spdlog::warn("the head switched to plan {}, whose weights this device does not have", plan_id);
    report(wire::LoadStatus::State::FAILED, "this device has no staged weights for the plan", plan_id, 0, 0);
    return;
  }
  runner_.unload();
  finish_loading(plan_id);
}

void StageLoader::on_stop(uint64_t plan_id) {
  if (plan_id == 0 || runner_.plan_id() == plan_id) runner_.unload();
  std::erase_if(loads_, [&](const auto& kv) { return plan_id == 0 || kv.first == plan_id; });
}

void StageLoader::fail(uint64_t plan_id, const std::string& why) {
  spdlog::error("cannot load the stage of plan {}: {}", plan_id, why);
  report(wire::LoadStatus::State::FAILED, why, plan_id, 0, 0);
  loads_.erase(plan_id);
}

void StageLoader::finish_loading(uint64_t plan_id) {
  Loading l = std::move(loads_.at(plan_id));
  loads_.erase(plan_id);
  const uint64_t total = l.receiver ? l.receiver->total() : 0;
  try {
    report(wire::LoadStatus::State::LOADING, "", l.plan_id, 0, 0);
    if (l.receiver && !l.here) l.receiver->finish();
    runner_.load(l.plan_id, l.receiver ? l.receiver->final_path() : l.local_model, l.spec, l.options, l.next, l.planned);
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
