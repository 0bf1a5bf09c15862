// The head's HTTP gateway: an OpenAI-compatible API, the web chat page, health and Prometheus
// metrics for the LAN. hearthd starts it with `--http HOST:PORT` next to `--head`.
//
// It runs on its own threads (one Asio thread for every HTTP connection, one for the link to
// the head) and talks to the head like any client, over the head's control socket: a slow or
// broken HTTP client never touches the head's loop.
//
//   GET  /                      the web chat page
//   GET  /health                200 when a model is ready, 503 otherwise
//   GET  /metrics               Prometheus text
//   GET  /v1/models             the loaded model (OpenAI list)
//   POST /v1/chat/completions   OpenAI chat completions, streamed (SSE) or not
//   POST /v1/completions        OpenAI (legacy) text completions
//   GET  /v1/hearth/status      the head's status and devices, for the page's cluster panel
//
// With an API key, /v1/* and /metrics need "Authorization: Bearer KEY"; the page and /health
// do not (the page asks for the key).
//
// The head runs as many conversations at once as the launch's --streams (default 4) and fails a
// batch that would exceed it, so the gateway sends at most that many generations at a time and
// queues the rest, first come first served.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>

#include "gateway/head_link.h"
#include "gateway/http_server.h"
#include "gateway/metrics.h"
#include "gateway/openai_api.h"
#include "transport/curve.h"

namespace hearth::http {

struct GatewayOptions {
  std::string listen;   // HOST:PORT to serve HTTP on; PORT 0: any free port
  std::string api_key;  // empty: no authentication
  std::string head;     // the head's control endpoint (tcp://HOST:PORT)
  // The head's own CURVE identity: the gateway runs in the head's process and talks to its control
  // socket as the head itself. None with --insecure.
  std::optional<transport::CurveKeys> keys;
  // A request naming a model of the library that is not loaded loads it (in place of the one
  // serving, for everyone) instead of getting a 409 (hearthd --auto-load).
  bool auto_load = false;
};

class Gateway {
 public:
  // Binds the port (throws std::runtime_error saying why it cannot) and starts serving.
  explicit Gateway(GatewayOptions options);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // http://HOST:PORT as bound.
  std::string url() const;

 private:
  using JsonThen = std::function<void(nlohmann::json)>;

  void handle(const std::shared_ptr<HttpConnection>& c);
  bool authorized(const Request& r) const;
  void completions(const std::shared_ptr<HttpConnection>& c, bool chat);
  void start_generation(const std::shared_ptr<HttpConnection>& c, CompletionRequest request, const std::string& model_id);
  // Conversations the head runs at once: the launch's --streams, as its status says.
  int max_running() const;
  void generation_ended();
  void models(const std::shared_ptr<HttpConnection>& c, const std::string& one);
  // POST /v1/hearth/launch {"model": ID}: launches a model of the library, its progress streamed
  // as server-sent events (the plan, then each device's bytes, then {"done": true, "ok": ...}).
  void launch(const std::shared_ptr<HttpConnection>& c);
  // --auto-load: launches the library's model `id` (at `path` on the head), then calls `then`
  // with whether it loaded and why not; requests that name it meanwhile wait for the same launch.
  void load_then(const std::string& id, const std::string& path, std::function<void(bool ok, const std::string& why)> then);
  void health(const std::shared_ptr<HttpConnection>& c);
  void metrics(const std::shared_ptr<HttpConnection>& c);
  void cluster_status(const std::shared_ptr<HttpConnection>& c);
  // Ask the head; `then` runs on the Asio thread with the reply as JSON, null if none came.
  void fetch_status(JsonThen then);
  // Sends the request `init` makes; `then` gets `view` of the reply (null if none came).
  using ReplyView = std::function<nlohmann::json(const transport::wire::Envelope::Reader&)>;
  void query(const std::function<void(transport::wire::Envelope::Builder)>& init, ReplyView view, JsonThen then);
  void fetch_devices(JsonThen then);
  // The head's model library (transport::models_view), null when the head did not answer.
  void fetch_models(JsonThen then);
  // The status and the library together: every model clients may name, the loaded one marked.
  void fetch_model_list(JsonThen then);
  std::string new_id(const char* prefix);

  GatewayOptions options_;
  net::io_context io_;  // first: the link's callbacks post to it until the link has stopped
  HeadLink link_;
  GatewayStats stats_;
  HttpServer server_;
  nlohmann::json last_status_;                 // the head's last status (Asio thread)
  int running_ = 0;                            // generations sent to the head and not ended (Asio thread)
  std::deque<std::function<void()>> waiting_;  // generations queued for a free stream (Asio thread)
  // --auto-load: the launches under way, by model id, and the requests waiting for each (Asio thread).
  std::map<std::string, std::vector<std::function<void(bool, const std::string&)>>> loading_;
  std::mt19937_64 rng_;
  std::thread thread_;
};

}  // namespace hearth::http
