#include "transport/status_view.h"

#include <string>
#include <vector>

namespace hearth::transport {

using nlohmann::json;

namespace {

std::vector<std::string> texts(capnp::List<capnp::Text>::Reader list) {
  std::vector<std::string> out;
  for (auto t : list) out.emplace_back(t.cStr());
  return out;
}

json stage_view(wire::StageReport::Reader s) {
  return {{"device", s.getDevice().cStr()},
          {"node_id", s.getNodeId().cStr()},
          {"first_layer", s.getFirstLayer()},
          {"last_layer", s.getLastLayer()},
          {"has_embedding", s.getHasEmbedding()},
          {"has_output", s.getHasOutput()},
          {"state", s.getState().cStr()},
          {"bytes_done", s.getBytesDone()},
          {"bytes_total", s.getBytesTotal()},
          {"resident_bytes", s.getResidentBytes()},
          {"dropped", s.getDropped()},
          {"batches", s.getBatches()},
          {"tokens", s.getTokens()},
          {"compute_s", s.getComputeS()},
          {"bytes_out", s.getBytesOut()},
          {"refused_handshakes", s.getRefusedHandshakes()},
          {"message", s.getMessage().cStr()},
          {"weight_bytes", s.getWeightBytes()},
          {"kv_bytes", s.getKvBytes()},
          {"memory_bytes", s.getMemoryBytes()},
          {"headroom_bytes", s.getHeadroomBytes()},
          {"paged_bytes", s.getPagedBytes()},
          {"paged_read_bytes", s.getPagedReadBytes()},
          {"paged_read_s", s.getPagedReadS()},
          {"paged_wait_s", s.getPagedWaitS()},
          {"stage_time_ms", s.getStageTimeS() * 1e3},
          {"compute_time_ms", s.getComputeTimeS() * 1e3},
          {"paged_time_ms", s.getPagedTimeS() * 1e3},
          {"batched_steps", s.getBatchedSteps()},
          {"batched_rows", s.getBatchedRows()},
          {"hop_time_ms", s.getHopTimeS() * 1e3},
          {"wire_type", s.getWireType().cStr()}};
}

}  // namespace

json plan_view(wire::PlanReport::Reader p) {
  json j;
  j["plan_id"] = p.getPlanId();
  j["model"] = p.getModel().cStr();
  j["model_name"] = p.getModelName().cStr();
  j["n_layers"] = p.getNLayers();
  j["objective"] = p.getObjective().cStr();
  j["ready"] = p.getReady();
  j["state"] = p.getState().cStr();
  j["max_sequences"] = p.getMaxSequences();
  j["n_ctx"] = p.getNCtx();
  j["kv_type"] = p.getKvType().cStr();
  if (p.getFailure().size() > 0) j["failure"] = p.getFailure().cStr();
  j["events"] = texts(p.getEvents());
  if (p.getEventsDropped() > 0) j["events_dropped"] = p.getEventsDropped();
  j["stages"] = json::array();
  for (auto s : p.getStages()) j["stages"].push_back(stage_view(s));
  // One stream's pace and all streams' throughput are different figures: each says which it is.
  const double s_per_token = p.getPredictedSPerToken();
  j["predicted"] = {{"ms_per_token", s_per_token * 1e3},
                    {"tokens_per_s_one_stream", s_per_token > 0 ? 1 / s_per_token : 0.0},
                    {"tokens_per_s", p.getPredictedTokensPerS()},
                    {"streams", p.getMaxSequences()},
                    {"ttft_ms", p.getPredictedTtftS() * 1e3},
                    {"prompt_tokens", p.getPredictedPromptTokens()}};
  j["left_out"] = texts(p.getLeftOut());
  j["text"] = texts(p.getText());
  return j;
}

json status_view(wire::StatusReply::Reader s) {
  json j;
  j["head"] = s.getHead().cStr();
  j["plan"] = s.getHasPlan() ? plan_view(s.getPlan()) : json(nullptr);
  if (s.getHasLaunching()) j["launching"] = plan_view(s.getLaunching());
  if (s.getHasHeadStage())
    j["head_stage"] = {
        {"batches", s.getHeadStageBatches()}, {"tokens", s.getHeadStageTokens()}, {"compute_s", s.getHeadStageComputeS()}};
  if (s.getHasGeneration())
    j["generation"] = {{"active", s.getActive()},
                       {"queued", s.getQueued()},
                       {"requests", s.getRequests()},
                       {"tokens_generated", s.getTokensGenerated()},
                       {"last_decode_tok_s", s.getLastDecodeTokS()},
                       {"last_ttft_ms", s.getLastTtftS() * 1e3}};
  if (s.getHasGeneration()) {
    // Speculative decoding: what the drafts earned. Tokens per pass is what the pipeline's round
    // trip is divided by (1 without drafts).
    const double drafted = static_cast<double>(s.getTokensDrafted()), passes = static_cast<double>(s.getDecodePasses());
    j["generation"]["speculation"] = {
        {"draft", s.getDraft().cStr()},
        {"tokens_drafted", s.getTokensDrafted()},
        {"tokens_accepted", s.getTokensAccepted()},
        {"decode_passes", s.getDecodePasses()},
        {"acceptance_rate", drafted > 0 ? static_cast<double>(s.getTokensAccepted()) / drafted : 0.0},
        {"tokens_per_pass", passes > 0 ? 1.0 + static_cast<double>(s.getTokensAccepted()) / passes : 1.0}};
  }
  for (auto l : s.getLinks())
    j["links"].push_back({{"from", l.getFrom().cStr()},
                          {"to", l.getTo().cStr()},
                          {"latency_ms", l.getLatencyS() * 1e3},
                          {"bandwidth_mb_s", l.getBandwidthBytesPerS() / 1e6}});
  j["security"] = s.getSecure() ? "curve" : "insecure";
  j["refused_handshakes"] = s.getRefusedHandshakes();
  j["dropped"] = {{"malformed", s.getDroppedMalformed()},
                  {"out_of_plan", s.getDroppedOutOfPlan()},
                  {"unexpected", s.getDroppedUnexpected()},
                  {"bad_payload", s.getDroppedBadPayload()}};
  j["pairing_rate_limited"] = s.getPairingRateLimited();
  return j;
}

json devices_view(wire::DevicesReply::Reader r) {
  json out = json::array();
  for (auto d : r.getDevices()) {
    const auto p = d.getProfile();
    json decode = json::object();
    for (auto t : p.getDecode()) decode[t.getType().cStr()] = t.getBytesPerS();
    json gpu = nullptr;
    if (p.hasGpu()) {
      const auto g = p.getGpu();
      json rates = json::object();
      for (auto t : g.getDecode()) rates[t.getType().cStr()] = t.getBytesPerS();
      gpu = {{"name", g.getName().cStr()},
             {"memory_bytes", g.getMemoryBytes()},
             {"unified_memory", g.getUnifiedMemory()},
             {"memory_bandwidth_bytes_per_s", g.getMemoryBandwidthBytesPerS()},
             {"decode_bytes_per_s", rates},
             {"prefill_flop_s", g.getPrefillFlopS()},
             {"layer_overhead_s", g.getLayerOverheadS()}};
    }
    out.push_back({{"name", p.getName().cStr()},
                   {"node_id", d.getNodeId().cStr()},
                   {"endpoint", d.getControlEndpoint().cStr()},
                   {"data_endpoint", d.getDataEndpoint().cStr()},
                   {"head", d.getIsHead()},
                   {"alive", d.getAlive()},
                   {"last_seen_ms", d.getLastSeenMs()},
                   {"storage_from_paging", d.getStorageFromPaging()},
                   {"usable_memory_bytes", p.getUsableMemoryBytes()},
                   {"memory",
                    {{"basis", p.getMemoryBasis().cStr()},
                     {"basis_bytes", p.getMemoryBasisBytes()},
                     {"held_back_bytes", p.getMemoryHeldBackBytes()},
                     {"held_back_why", p.getMemoryHeldBackWhy().cStr()}}},
                   {"memory_bandwidth_bytes_per_s", p.getMemoryBandwidthBytesPerS()},
                   {"decode_bytes_per_s", decode},
                   {"storage_read_bytes_per_s", p.getStorageReadBytesPerS()},
                   {"storage_free_bytes", p.getStorageFreeBytes()},
                   {"cores", p.getCores()},
                   {"cpu", p.getCpu().cStr()},
                   {"arch", p.getArch().cStr()},
                   {"gpu", gpu}});
  }
  return out;
}

json models_view(wire::ModelsReply::Reader r) {
  json out = {{"dirs", texts(r.getDirs())}, {"models", json::array()}};
  for (auto m : r.getModels())
    out["models"].push_back({{"id", m.getId().cStr()},
                             {"path", m.getPath().cStr()},
                             {"name", m.getName().cStr()},
                             {"arch", m.getArch().cStr()},
                             {"file_bytes", m.getFileBytes()},
                             {"weight_type", m.getWeightType().cStr()},
                             {"n_layers", m.getNLayers()},
                             {"loaded", m.getLoaded()},
                             {"fits", m.getFits()},
                             {"why", m.getWhy().cStr()},
                             {"devices", texts(m.getDevices())},
                             {"predicted_tokens_per_s", m.getPredictedTokensPerS()},
                             {"n_ctx", m.getNCtx()},
                             {"streams", m.getStreams()}});
  return out;
}

}  // namespace hearth::transport
