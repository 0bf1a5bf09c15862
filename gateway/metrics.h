// GET /metrics: Prometheus text exposition (format 0.0.4) of what the head reports in its status
// and of what the gateway itself sees (HTTP requests, time to first token as clients get it).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace hearth::http {

// The gateway's own counters. Touched only on the gateway's Asio thread.
class GatewayStats {
 public:
  GatewayStats();
  void count_response(const std::string& route, int status) { responses_[{route, status}]++; }
  // Seconds from the request to its first token, as the HTTP client sees it.
  void observe_ttft(double seconds);
  void stream_started() { streams_active_++; }
  void stream_ended() { streams_active_--; }
  void generation_started() { generations_active_++; }
  void generation_ended() { generations_active_--; }
  void tokens_sent(uint64_t n) { tokens_ += n; }
  void client_gone() { disconnects_++; }
  void stopped_by_stop_string() { stop_strings_++; }
  void set_queued(size_t n) { queued_ = n; }

  // The whole exposition: the gateway's figures, then the head's `status` and `devices` JSON
  // (null when the head did not answer). `unrouted` counts late replies from the head.
  std::string render(const nlohmann::json& status, const nlohmann::json& devices, uint64_t unrouted) const;

 private:
  std::map<std::pair<std::string, int>, uint64_t> responses_;
  std::vector<double> ttft_bounds_;
  std::vector<uint64_t> ttft_buckets_;  // cumulative at render time; here per bucket
  uint64_t ttft_count_ = 0;
  double ttft_sum_ = 0;
  int64_t streams_active_ = 0;
  int64_t generations_active_ = 0;
  uint64_t tokens_ = 0;
  uint64_t disconnects_ = 0;
  uint64_t stop_strings_ = 0;
  size_t queued_ = 0;
};

// A Prometheus label value, escaped.
std::string prom_label(const std::string& value);

}  // namespace hearth::http
