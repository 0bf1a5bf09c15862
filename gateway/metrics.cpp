#include "gateway/metrics.h"

#include <cstdio>
#include <sstream>

namespace hearth::http {

using nlohmann::json;

namespace {

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.15g", v);
  return buf;
}

// Writes the HELP and TYPE lines once per family, then samples.
class Exposition {
 public:
  void family(const std::string& name, const std::string& type, const std::string& help) {
    out_ << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  }
  void sample(const std::string& name, double value, const std::string& labels = "") {
    out_ << name << (labels.empty() ? "" : "{" + labels + "}") << " " << num(value) << "\n";
  }
  std::string str() const { return out_.str(); }

 private:
  std::ostringstream out_;
};

double get(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : 0.0;
}

}  // namespace

std::string prom_label(const std::string& value) {
  std::string out;
  for (const char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

GatewayStats::GatewayStats() : ttft_bounds_{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}, ttft_buckets_(ttft_bounds_.size(), 0) {}

void GatewayStats::observe_ttft(double seconds) {
  ttft_count_++;
  ttft_sum_ += seconds;
  for (size_t i = 0; i < ttft_bounds_.size(); ++i)
    if (seconds <= ttft_bounds_[i]) {
      ttft_buckets_[i]++;
      break;
    }
}

namespace {

// The head's conversations and its own stage, as its status reports them.
void generation_families(Exposition& e, const json& status) {
  if (status.contains("generation")) {
    const json& g = status["generation"];
    e.family("hearth_generations_active", "gauge", "Conversations the head's scheduler is running (prefill or decode)");
    e.sample("hearth_generations_active", get(g, "active"));
    e.family("hearth_generate_requests_total", "counter", "Generation requests the scheduler received since the launch");
    e.sample("hearth_generate_requests_total", get(g, "requests"));
    e.family("hearth_tokens_generated_total", "counter", "Tokens generated since the launch");
    e.sample("hearth_tokens_generated_total", get(g, "tokens_generated"));
    e.family("hearth_last_decode_tokens_per_second", "gauge", "Decode speed of the last finished generation");
    e.sample("hearth_last_decode_tokens_per_second", get(g, "last_decode_tok_s"));
    e.family("hearth_last_time_to_first_token_seconds", "gauge",
             "Time to first token of the last finished generation, at the head");
    e.sample("hearth_last_time_to_first_token_seconds", get(g, "last_ttft_ms") / 1e3);
    if (g.contains("speculation")) {
      const json& sp = g["speculation"];
      e.family("hearth_draft_tokens_total", "counter",
               "Draft tokens sent down the pipeline to be checked (speculative decoding)");
      e.sample("hearth_draft_tokens_total", get(sp, "tokens_drafted"));
      e.family("hearth_draft_tokens_accepted_total", "counter", "Draft tokens the last stage accepted");
      e.sample("hearth_draft_tokens_accepted_total", get(sp, "tokens_accepted"));
      e.family("hearth_decode_passes_total", "counter", "Decode passes through the pipeline (one conversation's step each)");
      e.sample("hearth_decode_passes_total", get(sp, "decode_passes"));
      e.family("hearth_draft_acceptance_ratio", "gauge", "Accepted draft tokens over drafted ones since the launch");
      e.sample("hearth_draft_acceptance_ratio", get(sp, "acceptance_rate"));
    }
  }
  if (status.contains("head_stage")) {
    const json& h = status["head_stage"];
    e.family("hearth_head_stage_batches_total", "counter", "Batches the head's own stage computed");
    e.sample("hearth_head_stage_batches_total", get(h, "batches"));
    e.family("hearth_head_stage_tokens_total", "counter", "Tokens the head's own stage computed");
    e.sample("hearth_head_stage_tokens_total", get(h, "tokens"));
    e.family("hearth_head_stage_compute_seconds_total", "counter", "Compute time of the head's own stage");
    e.sample("hearth_head_stage_compute_seconds_total", get(h, "compute_s"));
  }
}

// One sample per stage of the plan, and the plan's prediction.
void stage_families(Exposition& e, const json& plan) {
  if (plan.contains("stages")) {
    // Each family's samples stay together, as the format requires.
    const auto per_stage = [&](const std::string& name, const std::string& type, const std::string& help, auto value) {
      e.family(name, type, help);
      for (const auto& s : plan["stages"])
        e.sample(name, value(s),
                 "device=\"" + prom_label(s.value("device", "")) + "\",layers=\"" + std::to_string(s.value("first_layer", 0)) +
                     "-" + std::to_string(s.value("last_layer", 0)) + "\"");
    };
    per_stage("hearth_stage_ready", "gauge", "1 if the stage is loaded and ready, by device and layers",
              [](const json& s) { return s.value("state", "") == "ready" ? 1.0 : 0.0; });
    per_stage("hearth_stage_resident_bytes", "gauge", "Resident memory of the daemon holding the stage",
              [](const json& s) { return get(s, "resident_bytes"); });
    per_stage("hearth_stage_dropped_messages", "gauge", "Messages the stage's daemon refused so far",
              [](const json& s) { return get(s, "dropped"); });
    per_stage("hearth_stage_predicted_seconds", "gauge", "The planner's predicted compute time of the stage per token",
              [](const json& s) { return get(s, "stage_time_ms") / 1e3; });
    per_stage("hearth_stage_compute_seconds_total", "counter", "Time the stage's daemon spent computing batches",
              [](const json& s) { return get(s, "compute_s"); });
    per_stage("hearth_stage_refused_handshakes_total", "counter",
              "Connections the stage's daemon refused (keys not paired with the cluster)",
              [](const json& s) { return get(s, "refused_handshakes"); });
    per_stage("hearth_stage_batches_total", "counter", "Batches the stage's daemon computed",
              [](const json& s) { return get(s, "batches"); });
    per_stage("hearth_stage_tokens_total", "counter", "Tokens the stage's daemon computed (prompt and decode)",
              [](const json& s) { return get(s, "tokens"); });
    // The bytes a stage pushes are the bytes on the link to the next stage.
    per_stage("hearth_stage_bytes_out_total", "counter",
              "Activation bytes the stage pushed to the next stage (its outgoing link)",
              [](const json& s) { return get(s, "bytes_out"); });
    // Paging (issue 19): what the plan reads from storage each step, and what the stage's reader did.
    per_stage("hearth_stage_planned_paged_bytes", "gauge", "Bytes of the stage's layers the plan reads from storage every step",
              [](const json& s) { return get(s, "paged_bytes"); });
    per_stage("hearth_stage_paged_read_bytes_total", "counter", "Bytes the stage's pager read from storage",
              [](const json& s) { return get(s, "paged_read_bytes"); });
    per_stage("hearth_stage_paged_read_seconds_total", "counter", "Time the stage's pager spent reading from storage",
              [](const json& s) { return get(s, "paged_read_s"); });
    per_stage("hearth_stage_paged_wait_seconds_total", "counter",
              "Time the stage's compute waited for paged layers (reads not hidden behind compute)",
              [](const json& s) { return get(s, "paged_wait_s"); });
    if (plan.contains("predicted")) {
      e.family("hearth_plan_predicted_tokens_per_second", "gauge", "The planner's predicted decode speed");
      e.sample("hearth_plan_predicted_tokens_per_second", get(plan["predicted"], "tokens_per_s"));
    }
  }
}

// Links as measured, what the head refused, and the devices.
void cluster_families(Exposition& e, const json& status, const json& devices) {
  if (status.contains("links") && status["links"].is_array()) {
    const auto per_link = [&](const std::string& name, const std::string& help, const char* field, double scale) {
      e.family(name, "gauge", help);
      for (const auto& l : status["links"])
        e.sample(name, get(l, field) * scale,
                 "from=\"" + prom_label(l.value("from", "")) + "\",to=\"" + prom_label(l.value("to", "")) + "\"");
    };
    per_link("hearth_link_latency_seconds", "Measured latency of a link (link probe at launch)", "latency_ms", 1e-3);
    per_link("hearth_link_bandwidth_bytes_per_second", "Measured bandwidth of a link (link probe at launch)", "bandwidth_mb_s",
             1e6);
  }
  if (status.contains("pairing_rate_limited")) {
    e.family("hearth_pairing_rate_limited_total", "counter", "Pairing attempts refused for coming too often from one address");
    e.sample("hearth_pairing_rate_limited_total", get(status, "pairing_rate_limited"));
  }
  if (status.contains("dropped")) {
    e.family("hearth_head_dropped_messages_total", "counter", "Messages the head refused, by reason");
    for (const auto& [reason, n] : status["dropped"].items())
      if (n.is_number()) e.sample("hearth_head_dropped_messages_total", n.get<double>(), "reason=\"" + prom_label(reason) + "\"");
  }
  if (devices.is_array()) {
    e.family("hearth_device_up", "gauge", "1 if the device is alive, by device name and role");
    for (const auto& d : devices)
      e.sample("hearth_device_up", d.value("alive", false) ? 1 : 0,
               "device=\"" + prom_label(d.value("name", "")) + "\",role=\"" + (d.value("head", false) ? "head" : "node") + "\"");
    e.family("hearth_device_usable_memory_bytes", "gauge", "Memory the device offers for stages");
    for (const auto& d : devices)
      e.sample("hearth_device_usable_memory_bytes", get(d, "usable_memory_bytes"),
               "device=\"" + prom_label(d.value("name", "")) + "\"");
  }
}

}  // namespace

std::string GatewayStats::render(const json& status, const json& devices, uint64_t unrouted) const {
  Exposition e;
  e.family("hearth_http_responses_total", "counter", "HTTP responses by route and status code");
  for (const auto& [key, n] : responses_)
    e.sample("hearth_http_responses_total", static_cast<double>(n),
             "route=\"" + prom_label(key.first) + "\",code=\"" + std::to_string(key.second) + "\"");
  e.family("hearth_http_time_to_first_token_seconds", "histogram",
           "From an HTTP request to its first token, as the client gets it");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < ttft_bounds_.size(); ++i) {
    cumulative += ttft_buckets_[i];
    e.sample("hearth_http_time_to_first_token_seconds_bucket", static_cast<double>(cumulative),
             "le=\"" + num(ttft_bounds_[i]) + "\"");
  }
  e.sample("hearth_http_time_to_first_token_seconds_bucket", static_cast<double>(ttft_count_), "le=\"+Inf\"");
  e.sample("hearth_http_time_to_first_token_seconds_sum", ttft_sum_);
  e.sample("hearth_http_time_to_first_token_seconds_count", static_cast<double>(ttft_count_));
  e.family("hearth_http_generations_active", "gauge", "Generations the gateway is waiting on");
  e.sample("hearth_http_generations_active", static_cast<double>(generations_active_));
  e.family("hearth_http_queue_depth", "gauge", "Generations waiting in the gateway for one of the head's streams");
  e.sample("hearth_http_queue_depth", static_cast<double>(queued_));
  e.family("hearth_http_streams_active", "gauge", "Streamed (SSE) responses in progress");
  e.sample("hearth_http_streams_active", static_cast<double>(streams_active_));
  e.family("hearth_http_tokens_sent_total", "counter", "Tokens the gateway passed on to HTTP clients");
  e.sample("hearth_http_tokens_sent_total", static_cast<double>(tokens_));
  e.family("hearth_http_client_disconnects_total", "counter",
           "Clients that left before their generation ended (each one cancelled)");
  e.sample("hearth_http_client_disconnects_total", static_cast<double>(disconnects_));
  e.family("hearth_http_stop_strings_total", "counter", "Generations cut and cancelled at a stop string");
  e.sample("hearth_http_stop_strings_total", static_cast<double>(stop_strings_));
  e.family("hearth_http_unrouted_replies_total", "counter", "Replies from the head that arrived after their request had ended");
  e.sample("hearth_http_unrouted_replies_total", static_cast<double>(unrouted));
  e.family("hearth_head_up", "gauge", "1 if the head answered the gateway's status request");
  e.sample("hearth_head_up", status.is_object() ? 1 : 0);
  if (!status.is_object()) return e.str();

  const json& plan = status.contains("plan") ? status["plan"] : json(nullptr);
  const bool loaded = plan.is_object() && !plan.empty();
  e.family("hearth_model_loaded", "gauge", "1 if a model is launched and ready");
  e.sample("hearth_model_loaded", loaded && plan.value("ready", false) ? 1 : 0,
           loaded ? "model=\"" + prom_label(plan.value("model_name", "")) + "\"" : "");
  generation_families(e, status);
  if (loaded) stage_families(e, plan);
  cluster_families(e, status, devices);
  return e.str();
}

}  // namespace hearth::http
