// What the head tells clients about the cluster: its devices, the launched plan with each
// stage's progress and counters, links, generation totals, and what its daemon refused.
#include <nlohmann/json.hpp>

#include "cluster/head.h"
#include "cluster/wire_convert.h"

namespace hearth::cluster {

namespace wire = transport::wire;

StageCounters Head::counters_of(const std::string& node_id) const {
  return node_id == self_.node_id ? ports_.stage.counters() : registry_.at(node_id).work;
}

void Head::on_devices(const std::string& client, uint64_t request_id) {
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<wire::Envelope>();
  env.setRequestId(request_id);
  const auto& all = registry_.all();
  auto list = env.initDevicesReply().initDevices(static_cast<unsigned>(all.size()));
  unsigned i = 0;
  const auto now = ports_.clock.now();
  for (const auto& [id, d] : all) {
    auto out = list[i++];
    out.setNodeId(id);
    out.setControlEndpoint(d.control_endpoint);
    out.setDataEndpoint(d.data_endpoint);
    out.setAlive(d.alive);
    out.setIsHead(d.is_self);
    out.setLastSeenMs(
        d.is_self ? 0 : static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(now - d.last_seen).count()));
    profiles::Profile p;
    p.device = d.profile;
    p.system.cpu = d.cpu;
    p.system.arch = d.arch;
    p.system.os = d.os;
    p.system.cores = d.cores;
    to_wire(p, out.initProfile());
  }
  ports_.outbox.send(client, b);
}

std::string Head::plan_json() const {
  nlohmann::json j;
  if (!plan_) return "{}";
  j["plan_id"] = plan_->id;
  j["model"] = plan_->model_path;
  j["model_name"] = plan_->config.name;
  j["n_layers"] = plan_->config.n_layer;
  j["objective"] = std::string(partitioner::to_string(plan_->plan.objective));
  j["ready"] = plan_->ready();
  j["state"] = to_string(plan_->state());
  j["max_sequences"] = plan_->options.max_sequences;
  j["n_ctx"] = plan_->options.n_ctx;
  if (!plan_->failure.empty()) j["failure"] = plan_->failure;
  j["events"] = plan_->events;
  const DropCounts own_drops = ports_.host.drops();
  for (size_t i = 0; i < plan_->stages.size(); ++i) {
    const auto& s = plan_->stages[i];
    const auto& a = plan_->plan.stages[i];
    const Device& d = registry_.at(s.node_id);
    const bool self = s.node_id == self_.node_id;
    // Counters since each daemon started (Prometheus counters; rates come from differences).
    const StageCounters w = counters_of(s.node_id);
    j["stages"].push_back({{"device", d.profile.name},
                           {"node_id", s.node_id},
                           {"first_layer", s.spec.first_layer},
                           {"last_layer", s.spec.last_layer},
                           {"has_embedding", s.spec.has_embedding},
                           {"has_output", s.spec.has_output},
                           {"state", to_string(s.state)},
                           {"bytes_done", s.bytes_done},
                           {"bytes_total", s.bytes_total},
                           {"resident_bytes", self ? ports_.host.resident_bytes() : d.resident_bytes},
                           {"dropped", self ? own_drops.total() : d.dropped},
                           {"batches", w.batches},
                           {"tokens", w.tokens},
                           {"compute_s", static_cast<double>(w.compute_ns) * 1e-9},
                           {"bytes_out", w.bytes_out},
                           {"refused_handshakes", self ? ports_.host.refused_handshakes() : d.refused_handshakes},
                           {"message", s.message},
                           {"weight_bytes", a.weight_bytes},
                           {"kv_bytes", a.kv_bytes},
                           {"memory_bytes", a.memory_bytes},
                           {"headroom_bytes", a.headroom_bytes},
                           {"stage_time_ms", a.stage_time_s * 1e3},
                           {"hop_time_ms", a.hop_time_s * 1e3}});
  }
  const auto& pr = plan_->plan.predicted;
  j["predicted"] = {{"ms_per_token", pr.ms_per_token}, {"tokens_per_s", pr.tokens_per_s}, {"ttft_ms", pr.ttft_ms}};
  j["left_out"] = plan_->plan.left_out_reasons;
  j["text"] = partitioner::describe_plan(plan_->plan);
  return j.dump();
}

void Head::on_status(const std::string& client, uint64_t request_id) {
  nlohmann::json j;
  j["head"] = self_.profile.device.name;
  j["plan"] = plan_ ? nlohmann::json::parse(plan_json()) : nlohmann::json(nullptr);
  if (ports_.stage.loaded()) {
    const StageCounters w = ports_.stage.counters();
    j["head_stage"] = {{"batches", w.batches}, {"tokens", w.tokens}, {"compute_s", static_cast<double>(w.compute_ns) * 1e-9}};
  }
  if (scheduler_) {
    const auto& t = scheduler_->totals();
    j["generation"] = {
        {"active", scheduler_->active()},         {"queued", scheduler_->queued()},           {"requests", t.requests},
        {"tokens_generated", t.tokens_generated}, {"last_decode_tok_s", t.last_decode_tok_s}, {"last_ttft_ms", t.last_ttft_ms}};
  }
  for (const auto& [key, l] : registry_.links())
    if (registry_.find(key.first) && registry_.find(key.second))
      j["links"].push_back({{"from", registry_.at(key.first).profile.name},
                            {"to", registry_.at(key.second).profile.name},
                            {"latency_ms", l.latency_s * 1e3},
                            {"bandwidth_mb_s", l.bandwidth_bytes_per_s / 1e6}});
  j["security"] = self_.keys_dir.empty() ? "insecure" : "curve";
  j["refused_handshakes"] = ports_.host.refused_handshakes();
  const DropCounts d = ports_.host.drops();
  j["dropped"] = {
      {"malformed", d.malformed}, {"out_of_plan", d.out_of_plan}, {"unexpected", d.unexpected}, {"bad_payload", d.bad_payload}};
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<wire::Envelope>();
  env.setRequestId(request_id);
  env.initStatusReply().setJson(j.dump());
  ports_.outbox.send(client, b);
}

void Head::on_stop(const std::string& client, uint64_t request_id) {
  const bool had = plan_ != nullptr;
  unload_all();
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<wire::Envelope>();
  env.setRequestId(request_id);
  env.initStopReply().setMessage(had ? "model unloaded from every device" : "no model was loaded");
  ports_.outbox.send(client, b);
}

}  // namespace hearth::cluster
