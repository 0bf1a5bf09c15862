#include "gateway/gateway.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <capnp/serialize.h>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "gateway/completion.h"
#include "gateway/error_status.h"
#include "gateway/sse.h"
#include "transport/status_view.h"
#include "gateway/web_assets.h"
#include "cluster/wire_convert.h"
#include "runtime/model/kv_rows.h"

namespace hearth::http {

using nlohmann::json;
namespace bhttp = boost::beast::http;

namespace {

constexpr auto kQueryTimeout = std::chrono::seconds(5);
// Between two events of one generation: a long prompt on slow devices takes a while to read.
constexpr auto kGenerationIdleTimeout = std::chrono::minutes(10);
// What the head's scheduler clamps "no limit" to; generation also ends when the context is full.
constexpr uint32_t kUnlimitedTokens = 1u << 20;

// The name clients use for the loaded model: its file's stem ("tinyllama-1.1b-chat-v1.0.Q8_0").
std::string model_id(const json& status) {
  if (!status.is_object() || !status.contains("plan") || !status["plan"].is_object() || !status["plan"].contains("model"))
    return "";
  return std::filesystem::path(status["plan"]["model"].get<std::string>()).stem().string();
}

bool model_ready(const json& status) {
  return status.is_object() && status.contains("plan") && status["plan"].is_object() && status["plan"].value("ready", false);
}

// Any of the names the model goes by.
bool names_model(const json& status, const std::string& name) {
  if (name.empty()) return true;
  const json& plan = status["plan"];
  const std::string path = plan.value("model", "");
  return name == model_id(status) || name == plan.value("model_name", "") ||
         name == std::filesystem::path(path).filename().string() || name == path;
}

// What a client of POST /v1/hearth/launch may choose beside the model; 0 / nullopt = the head's
// default (the model's context up to 4096, 4 conversations, an f16 cache).
struct LaunchOptions {
  uint32_t ctx = 0;
  uint32_t streams = 0;
  std::optional<runtime::TensorType> kv_type;
  transport::wire::WireType wire_type = transport::wire::WireType::F32;
  std::string draft;  // speculative decoding: "" / "none" or "ngram" (the oracle reads a file: CLI only)
};

// An optional whole number in [lo, hi] of the launch body, or 0 when absent; ApiError otherwise.
uint32_t launch_count(const json& body, const char* key, uint32_t lo, uint32_t hi) {
  if (!body.contains(key) || body[key].is_null()) return 0;
  const json& v = body[key];
  if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
    throw ApiError(400, std::string("\"") + key + "\" must be a whole number from " + std::to_string(lo) + " to " +
                            std::to_string(hi), "invalid_request_error", key);
  return static_cast<uint32_t>(v.get<int64_t>());
}

LaunchOptions launch_options(const json& body) {
  LaunchOptions o;
  o.ctx = launch_count(body, "ctx", 16, 1u << 20);
  o.streams = launch_count(body, "streams", 1, 64);
  if (body.contains("kv_type") && !body["kv_type"].is_null()) {
    if (body["kv_type"].is_string()) o.kv_type = runtime::kv_type_from_name(body["kv_type"].get<std::string>());
    if (!o.kv_type) throw ApiError(400, "\"kv_type\" must be \"f16\", \"q8_0\" or \"f32\"", "invalid_request_error", "kv_type");
  }
  if (body.contains("wire_type") && !body["wire_type"].is_null()) {
    const auto w = body["wire_type"].is_string() ? cluster::wire_choice_from_name(body["wire_type"].get<std::string>()) : std::nullopt;
    if (!w) throw ApiError(400, "\"wire_type\" must be \"f32\", \"f16\", \"q8_0\" or \"auto\"", "invalid_request_error", "wire_type");
    o.wire_type = *w;
  }
  if (body.contains("draft") && !body["draft"].is_null()) {
    const json& d = body["draft"];
    if (!d.is_string() || (d != "none" && d != "ngram"))
      throw ApiError(400, "\"draft\" must be \"none\" or \"ngram\"", "invalid_request_error", "draft");
    o.draft = d.get<std::string>();
  }
  return o;
}

// A LaunchRequest for the model file at `path` on the head.
std::unique_ptr<capnp::MallocMessageBuilder> launch_request(const std::string& path, const LaunchOptions& o = {}) {
  auto message = std::make_unique<capnp::MallocMessageBuilder>();
  auto r = message->initRoot<transport::wire::Envelope>().initLaunchRequest();
  r.setModelPath(path);
  r.setCtx(o.ctx);
  r.setStreams(o.streams);
  if (o.kv_type) r.setKvType(cluster::kv_type_to_wire(*o.kv_type));
  r.setWireType(o.wire_type);
  r.setDraft(o.draft);
  return message;
}

// How a launch ended, from its last reply (null: none came in time).
std::pair<bool, std::string> launch_outcome(const transport::wire::Envelope::Reader* reply) {
  if (reply != nullptr && reply->isLaunchReply())
    return {reply->getLaunchReply().getOk(), reply->getLaunchReply().getMessage().cStr()};
  if (reply != nullptr && reply->isError()) return {false, reply->getError().getMessage().cStr()};
  return {false, "the head did not answer"};
}

// A model of the head's library as an OpenAI model object, with what hearth knows of it.
json library_object(const json& m) {
  json hearth = m;
  hearth.erase("id");
  return {{"id", m["id"]}, {"object", "model"}, {"created", 0}, {"owned_by", "hearth"}, {"hearth", hearth}};
}

json model_object(const json& status);

// GET /v1/models: the library's models, the loaded one marked (with its stages), and the loaded
// one also when it was launched from a file outside the library.
json model_list(const json& status, const json& library) {
  json list = {{"object", "list"}, {"data", json::array()}};
  const bool loaded = status["plan"].is_object() && !status["plan"].empty();
  bool listed = false;
  for (const json& m : library.value("models", json::array())) {
    json o = library_object(m);
    if (m.value("loaded", false) && loaded) {
      o["hearth"].update(model_object(status)["hearth"]);
      listed = true;
    }
    list["data"].push_back(std::move(o));
  }
  if (loaded && !listed) {
    json o = model_object(status);
    o["hearth"]["loaded"] = true;
    list["data"].push_back(std::move(o));
  }
  return list;
}

json model_object(const json& status) {
  const json& plan = status["plan"];
  json stages = json::array();
  for (const auto& s : plan.value("stages", json::array()))
    stages.push_back({{"device", s.value("device", "")},
                      {"first_layer", s.value("first_layer", 0)},
                      {"last_layer", s.value("last_layer", 0)}});
  return {{"id", model_id(status)},
          {"object", "model"},
          {"created", 0},
          {"owned_by", "hearth"},
          {"hearth",
           {{"name", plan.value("model_name", "")},
            {"ready", plan.value("ready", false)},
            {"n_layers", plan.value("n_layers", 0)},
            {"stages", stages}}}};
}

// The head's control socket as this process reaches it: a wildcard bind is reached on loopback.
std::string local_endpoint(const std::string& endpoint) {
  for (const char* wildcard : {"tcp://0.0.0.0:", "tcp://*:", "tcp://[::]:"})
    if (endpoint.rfind(wildcard, 0) == 0) return "tcp://127.0.0.1:" + endpoint.substr(std::string(wildcard).size());
  return endpoint;
}

}  // namespace

Gateway::Gateway(GatewayOptions options)
    : options_(std::move(options)),
      link_(local_endpoint(options_.head), options_.keys),
      server_(
          io_, options_.listen, [this](const std::shared_ptr<HttpConnection>& c) { handle(c); },
          [this](const std::string& route, int status) { stats_.count_response(route, status); }),
      rng_(std::random_device{}()) {
  server_.start();
  thread_ = std::thread([this] {
    try {
      io_.run();
    } catch (const std::exception& e) {
      spdlog::error("http: the gateway stopped: {}", e.what());
    }
  });
  spdlog::info("http: serving the OpenAI API and the web chat on {}{}", url(),
               options_.api_key.empty() ? "" : " (API key required)");
}

Gateway::~Gateway() {
  net::post(io_, [this] {
    server_.stop();
    io_.stop();
  });
  thread_.join();
}

std::string Gateway::url() const { return "http://" + server_.address(); }

std::string Gateway::new_id(const char* prefix) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s-%016llx%08llx", prefix, static_cast<unsigned long long>(rng_()),
                static_cast<unsigned long long>(rng_() & 0xffffffffu));
  return buf;
}

bool Gateway::authorized(const Request& r) const {
  if (options_.api_key.empty()) return true;
  const auto it = r.find(bhttp::field::authorization);
  if (it == r.end()) return false;
  const std::string value(it->value());
  const std::string prefix = "Bearer ";
  return value.size() > prefix.size() && value.compare(0, prefix.size(), prefix) == 0 &&
         transport::secrets_equal(value.substr(prefix.size()), options_.api_key);
}

void Gateway::handle(const std::shared_ptr<HttpConnection>& c) {
  const Request& r = c->request();
  std::string path(r.target());
  path = path.substr(0, path.find('?'));
  const bool get = r.method() == bhttp::verb::get || r.method() == bhttp::verb::head;
  const bool post = r.method() == bhttp::verb::post;
  const auto wrong_method = [&](const char* allowed) {
    c->respond(405, "application/json", error_body(405, "use " + std::string(allowed) + " for " + path, "method_not_allowed"),
               {{"Allow", allowed}});
  };
  try {
    if (path == "/" || path == "/index.html") {
      c->set_route("/");
      if (!get) return wrong_method("GET");
      c->respond(
          200, "text/html; charset=utf-8", std::string(web_page()),
          {{"Cache-Control", "no-cache"},
           {"Content-Security-Policy",
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"}});
      return;
    }
    if (path == "/health") {
      c->set_route(path);
      if (!get) return wrong_method("GET");
      return health(c);
    }
    const bool api = path.rfind("/v1/", 0) == 0 || path == "/metrics";
    if (api && !authorized(r)) {
      c->set_route("unauthorized");
      c->respond(
          401, "application/json",
          error_body(
              401,
              "a valid API key is required: send the header 'Authorization: Bearer KEY' (the key hearthd got with --api-key)",
              "invalid_api_key"),
          {{"WWW-Authenticate", "Bearer"}});
      return;
    }
    if (path == "/metrics") {
      c->set_route(path);
      if (!get) return wrong_method("GET");
      return metrics(c);
    }
    if (path == "/v1/chat/completions" || path == "/v1/completions") {
      c->set_route(path);
      if (!post) return wrong_method("POST");
      return completions(c, path == "/v1/chat/completions");
    }
    if (path == "/v1/models" || path.rfind("/v1/models/", 0) == 0) {
      c->set_route("/v1/models");
      if (!get) return wrong_method("GET");
      return models(c, path == "/v1/models" ? "" : path.substr(std::string("/v1/models/").size()));
    }
    if (path == "/v1/hearth/launch") {
      c->set_route(path);
      if (!post) return wrong_method("POST");
      return launch(c);
    }
    if (path == "/v1/hearth/status") {
      c->set_route(path);
      if (!get) return wrong_method("GET");
      return cluster_status(c);
    }
    c->respond_error(
        404,
        "no route " + std::string(r.method_string()) + " " + path +
            ": hearth serves /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics and the chat page at /",
        "not_found");
  } catch (const ApiError& e) {
    c->respond(e.status(), "application/json", e.body());
  } catch (const std::exception& e) {
    spdlog::error("http: {} {}: {}", std::string(r.method_string()), path, e.what());
    c->respond_error(500, std::string("internal error: ") + e.what(), "internal_error");
  }
}

void Gateway::completions(const std::shared_ptr<HttpConnection>& c, bool chat) {
  const std::string& body = c->request().body();
  CompletionRequest request = chat ? parse_chat_request(body, rng_()) : parse_completion_request(body, rng_());
  // The usual case needs no question to the head: the model named is the one last seen loaded.
  if (model_ready(last_status_) && names_model(last_status_, request.model)) {
    start_generation(c, std::move(request), model_id(last_status_));
    return;
  }
  auto shared = std::make_shared<CompletionRequest>(std::move(request));
  fetch_status([this, c, shared](json status) {
    if (!c->open()) return;
    if (status.is_null()) return c->respond_error(504, "the head did not answer", "head_timeout");
    const bool loaded = status["plan"].is_object() && !status["plan"].empty();
    if (loaded && names_model(status, shared->model)) return start_generation(c, std::move(*shared), model_id(status));
    // Another model than the loaded one (or none loaded): one of the library's is a conflict with
    // what the head serves, anything else unknown.
    fetch_models([this, c, shared, status, loaded](json library) {
      if (!c->open()) return;
      const std::string serving = loaded ? "this head serves '" + model_id(status) + "'" : "no model is loaded";
      for (const json& m : library.value("models", json::array())) {
        if (shared->model.empty() || m["id"] != shared->model) continue;
        if (options_.auto_load)
          return load_then(shared->model, m["path"], [this, c, shared](bool ok, const std::string& why) {
            if (!c->open()) return;
            if (!ok)
              return c->respond_error(503, "loading the model '" + shared->model + "' failed: " + why, "model_load_failed", "model");
            const std::string id = shared->model;
            start_generation(c, std::move(*shared), id);
          });
        return c->respond_error(409,
                                  "the model '" + shared->model + "' is in the library but not loaded; " + serving +
                                      ": load it with `hearth launch -m " + shared->model + "` or the chat page's model menu",
                                  "model_not_loaded", "model");
      }
      if (!loaded)
        return c->respond_error(503, "no model is loaded: run `hearth launch --model FILE` on the head first (`hearth models` "
                                     "lists its library)", "model_not_loaded");
      c->respond_error(404, "the model '" + shared->model + "' is not loaded nor in the library; " + serving + " (see GET /v1/models)",
                       "model_not_found", "model");
    });
  });
}

void Gateway::start_generation(const std::shared_ptr<HttpConnection>& c, CompletionRequest request, const std::string& model_id) {
  auto message = std::make_unique<capnp::MallocMessageBuilder>();
  auto g = message->initRoot<transport::wire::Envelope>().initGenerateRequest();
  if (request.chat) {
    auto list = g.initMessages(static_cast<unsigned>(request.messages.size()));
    for (size_t i = 0; i < request.messages.size(); ++i) {
      list[static_cast<unsigned>(i)].setRole(request.messages[i].role);
      list[static_cast<unsigned>(i)].setContent(request.messages[i].content);
    }
  } else {
    g.setPrompt(request.prompt);
  }
  g.setNPredict(request.max_tokens > 0 ? request.max_tokens : kUnlimitedTokens);
  g.setCachePrompt(request.cache_prompt);
  g.setReasoningEffort(request.reasoning_effort);
  g.setThinking(!request.thinking   ? transport::wire::ThinkingSwitch::TEMPLATE_DEFAULT
                : *request.thinking ? transport::wire::ThinkingSwitch::ON
                                    : transport::wire::ThinkingSwitch::OFF);
  cluster::to_wire(request.sampling, g.initSampling());
  // The head refuses control messages over this size: say so instead of waiting in vain.
  if (capnp::computeSerializedSizeInWords(*message) * sizeof(capnp::word) > transport::kMaxEnvelopeBytes)
    throw ApiError(413,
                   "the request's text is larger than the head accepts (" + std::to_string(transport::kMaxEnvelopeBytes >> 10) +
                       " KiB): shorten the conversation",
                   "context_length_exceeded");

  const ResponseHead head{
      new_id(request.chat ? "chatcmpl" : "cmpl"),
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count(),
      model_id.empty() ? (request.model.empty() ? "hearth" : request.model) : model_id, request.chat};
  auto launch = [this, c, head, request = std::make_shared<CompletionRequest>(std::move(request)),
                 message = std::shared_ptr<capnp::MallocMessageBuilder>(std::move(message))]() {
    if (!c->open()) return false;  // left while queued
    running_++;
    auto id = std::make_shared<uint64_t>(0);
    auto completion = std::make_shared<Completion>(
        c, std::move(*request), head, stats_, [this, id](bool forget) { link_.cancel(*id, forget); },
        [this] { generation_ended(); });
    c->watch_disconnect([completion] { completion->on_client_gone(); });
    auto copy = std::make_unique<capnp::MallocMessageBuilder>();
    copy->setRoot(message->getRoot<transport::wire::Envelope>().asReader());
    *id = link_.request(
        std::move(copy),
        [this, completion](const transport::wire::Envelope::Reader* reply) {
          HeadEvent e;
          if (reply == nullptr) e = HeadEvent::failure(504, "head_timeout", "the head stopped answering this generation");
          else if (reply->isGenerateEvent()) e = HeadEvent::from_wire(reply->getGenerateEvent());
          else if (reply->isError())
            e = HeadEvent::failure(http_status(reply->getError().getCategory()), error_code_name(reply->getError().getCategory()),
                                   std::string("head: ") + reply->getError().getMessage().cStr());
          else return true;
          net::post(io_, [completion, e] { completion->on_event(e); });
          return !e.done;
        },
        kGenerationIdleTimeout);
    return true;
  };
  if (running_ < max_running() && waiting_.empty()) {
    launch();
    return;
  }
  // Queued: a client that leaves meanwhile is simply skipped when its turn comes.
  c->watch_disconnect([] {});
  waiting_.push_back(std::move(launch));
  stats_.set_queued(waiting_.size());
}

int Gateway::max_running() const {
  if (!last_status_.is_object() || !last_status_.contains("plan") || !last_status_["plan"].is_object()) return 4;
  const json& plan = last_status_["plan"];
  for (const char* key : {"max_sequences", "streams"})
    if (plan.contains(key) && plan[key].is_number_integer() && plan[key].get<int>() > 0) return plan[key].get<int>();
  return 4;  // what `hearth launch` uses without --streams
}

void Gateway::generation_ended() {
  running_--;
  while (!waiting_.empty() && running_ < max_running()) {
    auto next = std::move(waiting_.front());
    waiting_.pop_front();
    next();
  }
  stats_.set_queued(waiting_.size());
}

void Gateway::fetch_status(JsonThen then) {
  auto message = std::make_unique<capnp::MallocMessageBuilder>();
  message->initRoot<transport::wire::Envelope>().initStatusRequest();
  link_.request(
      std::move(message),
      [this, then = std::move(then)](const transport::wire::Envelope::Reader* reply) {
        json status;
        if (reply != nullptr && reply->isStatusReply()) {
          try {
            status = transport::status_view(reply->getStatusReply());
          } catch (const json::exception& e) {
            spdlog::warn("http: the head's status is not JSON: {}", e.what());
          }
        }
        net::post(io_, [this, then, status] {
          if (!status.is_null()) last_status_ = status;
          then(status);
        });
        return false;
      },
      kQueryTimeout);
}

void Gateway::query(const std::function<void(transport::wire::Envelope::Builder)>& init, ReplyView view, JsonThen then) {
  auto message = std::make_unique<capnp::MallocMessageBuilder>();
  init(message->initRoot<transport::wire::Envelope>());
  link_.request(
      std::move(message),
      [this, view = std::move(view), then = std::move(then)](const transport::wire::Envelope::Reader* reply) {
        const json out = reply != nullptr ? view(*reply) : json();
        net::post(io_, [then, out] { then(out); });
        return false;
      },
      kQueryTimeout);
}

void Gateway::fetch_devices(JsonThen then) {
  query([](transport::wire::Envelope::Builder e) { e.initDevicesRequest(); },
        [](const transport::wire::Envelope::Reader& r) { return r.isDevicesReply() ? transport::devices_view(r.getDevicesReply()) : json(); },
        std::move(then));
}

void Gateway::fetch_models(JsonThen then) {
  query([](transport::wire::Envelope::Builder e) { e.initModelsRequest(); },
        [](const transport::wire::Envelope::Reader& r) { return r.isModelsReply() ? transport::models_view(r.getModelsReply()) : json(); },
        std::move(then));
}

void Gateway::fetch_model_list(JsonThen then) {
  fetch_status([this, then = std::move(then)](json status) {
    if (status.is_null()) return then(json());
    fetch_models([status, then](json library) {
      if (library.is_null()) return then(json());
      then(model_list(status, library));
    });
  });
}

void Gateway::models(const std::shared_ptr<HttpConnection>& c, const std::string& one) {
  fetch_model_list([c, one](json list) {
    if (list.is_null()) return c->respond_error(504, "the head did not answer", "head_timeout");
    if (one.empty()) return c->respond(200, "application/json", dump(list));
    for (const json& m : list["data"])
      if (m["id"] == one) return c->respond(200, "application/json", dump(m));
    c->respond_error(404, "the model '" + one + "' is neither loaded nor in the head's library (GET /v1/models lists them)",
                     "model_not_found", "model");
  });
}

void Gateway::launch(const std::shared_ptr<HttpConnection>& c) {
  std::string id;
  LaunchOptions options;
  try {
    const json body = json::parse(c->request().body());
    id = body.at("model").get<std::string>();
    options = launch_options(body);
  } catch (const json::exception&) {
    return c->respond_error(400, "the body must be JSON with \"model\": the id of a model GET /v1/models lists",
                            "invalid_request_error", "model");
  }
  // Only the library's models: a client on the LAN names one, never a path on the head.
  fetch_models([this, c, id, options](json library) {
    if (!c->open()) return;
    if (library.is_null()) return c->respond_error(504, "the head did not answer", "head_timeout");
    std::string path;
    for (const json& m : library.value("models", json::array()))
      if (m["id"] == id) path = m["path"];
    if (path.empty())
      return c->respond_error(404, "the model '" + id + "' is not in the head's library (GET /v1/models lists it)",
                              "model_not_found", "model");
    c->start_stream(200, "text/event-stream");
    link_.request(
        launch_request(path, options),
        [this, c](const transport::wire::Envelope::Reader* reply) {
          json event;
          bool more = false;
          if (reply != nullptr && reply->isLaunchProgress()) {
            const auto p = reply->getLaunchProgress();
            event = {{"device", p.getDevice().cStr()},
                     {"bytes_done", p.getBytesDone()},
                     {"bytes_total", p.getBytesTotal()},
                     {"state", p.getState().cStr()}};
            if (p.hasPlan()) event["plan"] = transport::plan_view(p.getPlan());
            more = true;
          } else {
            const auto [ok, why] = launch_outcome(reply);
            event = {{"done", true}, {"ok", ok}, {"message", why}};
          }
          net::post(io_, [c, event, more] {
            if (!c->open()) return;
            c->send_chunk(sse_event(dump(event)));
            if (!more) c->end_stream();
          });
          return more;
        },
        kGenerationIdleTimeout);
  });
}

void Gateway::load_then(const std::string& id, const std::string& path,
                        std::function<void(bool ok, const std::string& why)> then) {
  auto& waiters = loading_[id];
  waiters.push_back(std::move(then));
  if (waiters.size() > 1) return;  // its launch is under way
  spdlog::info("http: a request names {}: loading it (--auto-load)", id);
  link_.request(
      launch_request(path),
      [this, id](const transport::wire::Envelope::Reader* reply) {
        if (reply != nullptr && reply->isLaunchProgress()) return true;
        const auto [ok, why] = launch_outcome(reply);
        net::post(io_, [this, id, ok = ok, why = why] {
          auto waiters = std::move(loading_[id]);
          loading_.erase(id);
          for (auto& w : waiters) w(ok, why);
        });
        return false;
      },
      kGenerationIdleTimeout);
}

void Gateway::health(const std::shared_ptr<HttpConnection>& c) {
  fetch_status([c](json status) {
    if (status.is_null())
      return c->respond(503, "application/json", dump({{"status", "error"}, {"message", "the head does not answer"}}));
    const json& plan = status["plan"];
    if (!plan.is_object() || plan.empty())
      return c->respond(503, "application/json",
                        dump({{"status", "no_model"}, {"message", "no model is loaded: run `hearth launch`"}}));
    if (plan.contains("failure"))
      return c->respond(503, "application/json", dump({{"status", "failed"}, {"message", plan["failure"]}}));
    if (!plan.value("ready", false))
      return c->respond(503, "application/json", dump({{"status", "loading"}, {"model", model_id(status)}}));
    c->respond(200, "application/json", dump({{"status", "ok"}, {"model", model_id(status)}}));
  });
}

void Gateway::metrics(const std::shared_ptr<HttpConnection>& c) {
  fetch_status([this, c](json status) {
    fetch_devices([this, c, status](json devices) {
      c->respond(200, "text/plain; version=0.0.4; charset=utf-8", stats_.render(status, devices, link_.unrouted()));
    });
  });
}

void Gateway::cluster_status(const std::shared_ptr<HttpConnection>& c) {
  fetch_status([this, c](json status) {
    if (status.is_null()) return c->respond_error(504, "the head did not answer", "head_timeout");
    fetch_devices([c, status](json devices) {
      c->respond(200, "application/json",
                 dump({{"model", model_id(status).empty() ? json(nullptr) : json(model_id(status))},
                       {"status", status},
                       {"devices", devices}}));
    });
  });
}

}  // namespace hearth::http
