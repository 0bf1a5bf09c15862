// What the head tells clients about the cluster: its devices, the launched plan with each
// stage's progress and counters, links, generation totals, and what its daemon refused.
#include "cluster/head.h"
#include "cluster/wire_convert.h"

namespace hearth::cluster {

namespace wire = transport::wire;

namespace {

void set_texts(capnp::List<capnp::Text>::Builder out, const std::vector<std::string>& texts) {
  for (unsigned i = 0; i < texts.size(); ++i) out.set(i, texts[i]);
}

}  // namespace

StageCounters Head::counters_of(const std::string& node_id) const {
  return node_id == self_.node_id ? ports_.stage.counters() : registry_.at(node_id).work;
}

// Steps of several rows count where the plan says what they cost (drafts, several streams): a
// plan with one point does not (its steps have one row but for batches a stage merged, or a
// draft after a re-plan for drafts that rarely agree), and they are left out.
StepCount Head::steps_of(const PlannedStage& stage) const {
  const StageCounters c = counters_of(stage.node_id);
  const StepCount one_token{c.decode_steps, c.decode_steps, c.decode_ns, c.decode_planned_ns};
  if (!stage.planned.batched()) return one_token;
  return one_token + StepCount{c.batched_steps, c.batched_rows, c.batched_ns, c.batched_planned_ns};
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
    out.setStorageFromPaging(d.storage_from_paging);
    out.setLastSeenMs(
        d.is_self ? 0 : static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(now - d.last_seen).count()));
    profiles::Profile p;
    p.device = d.profile;
    p.memory = d.memory;
    p.system.cpu = d.cpu;
    p.system.arch = d.arch;
    p.system.os = d.os;
    p.system.cores = d.cores;
    to_wire(p, out.initProfile());
  }
  ports_.outbox.send(client, b);
}

void Head::fill_plan(const LaunchedPlan& p, wire::PlanReport::Builder out) const {
  out.setPlanId(p.id);
  out.setModel(p.model_path);
  out.setModelName(p.config.name);
  out.setNLayers(static_cast<uint32_t>(p.config.n_layer));
  out.setObjective(std::string(partitioner::to_string(p.plan.objective)));
  out.setState(to_string(p.state()));
  out.setReady(p.ready());
  out.setMaxSequences(static_cast<uint32_t>(p.options.max_sequences));
  out.setNCtx(static_cast<uint32_t>(p.options.n_ctx));
  out.setKvType(std::string(runtime::tensor_type_name(p.options.kv_type)));
  out.setFailure(p.failure);
  set_texts(out.initEvents(static_cast<unsigned>(p.events.entries().size())), p.events.texts());
  out.setEventsDropped(p.events.dropped());
  auto stages = out.initStages(static_cast<unsigned>(p.stages.size()));
  for (unsigned i = 0; i < p.stages.size(); ++i) fill_stage(p.stages[i], p.plan.stages[i], stages[i]);
  const auto& pr = p.plan.predicted;
  out.setPredictedSPerToken(pr.ms_per_token / 1e3);
  out.setPredictedTokensPerS(pr.tokens_per_s);
  out.setPredictedTtftS(pr.ttft_ms / 1e3);
  out.setPredictedPromptTokens(static_cast<uint32_t>(p.partition.prompt_tokens));
  set_texts(out.initLeftOut(static_cast<unsigned>(p.plan.left_out_reasons.size())), p.plan.left_out_reasons);
  const std::vector<std::string> text = partitioner::describe_plan(p.plan);
  set_texts(out.initText(static_cast<unsigned>(text.size())), text);
}

void Head::fill_stage(const PlannedStage& s, const partitioner::StageAssignment& a, wire::StageReport::Builder out) const {
  const Device& d = registry_.at(s.node_id);
  const bool self = s.node_id == self_.node_id;
  // Counters since each daemon started (Prometheus counters; rates come from differences).
  const StageCounters w = counters_of(s.node_id);
  out.setDevice(d.profile.name);
  out.setNodeId(s.node_id);
  out.setFirstLayer(static_cast<uint32_t>(s.spec.first_layer));
  out.setLastLayer(static_cast<uint32_t>(s.spec.last_layer));
  out.setHasEmbedding(s.spec.has_embedding);
  out.setHasOutput(s.spec.has_output);
  out.setState(to_string(s.state));
  out.setBytesDone(s.bytes_done);
  out.setBytesTotal(s.bytes_total);
  out.setResidentBytes(self ? ports_.host.resident_bytes() : d.resident_bytes);
  out.setDropped(self ? ports_.host.drops().total() : d.dropped);
  out.setBatches(w.batches);
  out.setTokens(w.tokens);
  out.setComputeS(static_cast<double>(w.compute_ns) * 1e-9);
  out.setBytesOut(w.bytes_out);
  out.setRefusedHandshakes(self ? ports_.host.refused_handshakes() : d.refused_handshakes);
  out.setMessage(s.message);
  out.setWeightBytes(a.weight_bytes);
  out.setKvBytes(a.kv_bytes);
  out.setMemoryBytes(a.memory_bytes);
  out.setHeadroomBytes(a.headroom_bytes);
  out.setPagedBytes(a.paged_bytes);
  out.setPagedReadBytes(w.paged_read_bytes);
  out.setPagedReadS(static_cast<double>(w.paged_read_ns) * 1e-9);
  out.setPagedWaitS(static_cast<double>(w.paged_wait_ns) * 1e-9);
  out.setStageTimeS(a.stage_time_s);
  out.setComputeTimeS(a.compute_time_s);
  out.setBatchedSteps(w.batched_steps);
  out.setBatchedRows(w.batched_rows);
  out.setPagedTimeS(a.paged_time_s);
  out.setHopTimeS(a.hop_time_s);
  if (!s.spec.has_output) out.setWireType(std::string(runtime::tensor_type_name(s.wire_type)));
}

void Head::on_status(const std::string& client, uint64_t request_id) {
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<wire::Envelope>();
  env.setRequestId(request_id);
  auto r = env.initStatusReply();
  r.setHead(self_.profile.device.name);
  r.setHasPlan(plan_ != nullptr);
  if (plan_) fill_plan(*plan_, r.initPlan());
  r.setHasLaunching(next_ != nullptr);
  if (next_) fill_plan(*next_, r.initLaunching());
  r.setHasHeadStage(ports_.stage.loaded());
  if (ports_.stage.loaded()) {
    const StageCounters w = ports_.stage.counters();
    r.setHeadStageBatches(w.batches);
    r.setHeadStageTokens(w.tokens);
    r.setHeadStageComputeS(static_cast<double>(w.compute_ns) * 1e-9);
  }
  r.setHasGeneration(scheduler_ != nullptr);
  if (scheduler_) {
    const auto& t = scheduler_->totals();
    r.setActive(static_cast<uint32_t>(scheduler_->active()));
    r.setQueued(static_cast<uint32_t>(scheduler_->queued()));
    r.setRequests(t.requests);
    r.setTokensGenerated(t.tokens_generated);
    r.setLastDecodeTokS(t.last_decode_tok_s);
    r.setLastTtftS(t.last_ttft_ms / 1e3);
    r.setTokensDrafted(t.tokens_drafted);
    r.setTokensAccepted(t.tokens_accepted);
    r.setDecodePasses(t.decode_passes);
    if (plan_) r.setDraft(plan_->draft.rfind("oracle:", 0) == 0 ? "oracle" : plan_->draft);
  }
  std::vector<std::pair<std::pair<std::string, std::string>, partitioner::Link>> links;
  for (const auto& [key, l] : registry_.links())
    if (registry_.find(key.first) && registry_.find(key.second)) links.emplace_back(key, l);
  auto list = r.initLinks(static_cast<unsigned>(links.size()));
  for (unsigned i = 0; i < links.size(); ++i) {
    list[i].setFrom(registry_.at(links[i].first.first).profile.name);
    list[i].setTo(registry_.at(links[i].first.second).profile.name);
    list[i].setLatencyS(links[i].second.latency_s);
    list[i].setBandwidthBytesPerS(links[i].second.bandwidth_bytes_per_s);
  }
  r.setSecure(!self_.keys_dir.empty());
  r.setRefusedHandshakes(ports_.host.refused_handshakes());
  const DropCounts d = ports_.host.drops();
  r.setDroppedMalformed(d.malformed);
  r.setDroppedOutOfPlan(d.out_of_plan);
  r.setDroppedUnexpected(d.unexpected);
  r.setDroppedBadPayload(d.bad_payload);
  r.setPairingRateLimited(pairing_throttle_.refused());
  ports_.outbox.send(client, b);
}

void Head::on_stop(const std::string& client, uint64_t request_id) {
  const bool had = plan_ != nullptr || next_ != nullptr;
  if (next_) abandon_next("stopped by `hearth stop`", ErrorCategory::UNAVAILABLE);
  unload_all("the model was unloaded (hearth stop)");
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<wire::Envelope>();
  env.setRequestId(request_id);
  env.initStopReply().setMessage(had ? "model unloaded from every device" : "no model was loaded");
  ports_.outbox.send(client, b);
}

}  // namespace hearth::cluster
