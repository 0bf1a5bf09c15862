#include "gateway/openai_api.h"

#include <cmath>
#include <limits>

namespace hearth::http {

using nlohmann::json;

namespace {

constexpr size_t kMaxStops = 16;
constexpr size_t kMaxStopBytes = 512;

ApiError bad(const std::string& param, const std::string& message) { return ApiError(400, message, "invalid_value", param); }

// Deeper JSON is refused before it is parsed: the parsed tree costs about 70 bytes per level, so
// an 8 MB body of '[' would take some 600 MB of the head's memory (requests nest 5 deep or so).
constexpr int kMaxJsonDepth = 64;

bool nested_too_deep(const std::string& body) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (in_string) {
      if (c == '\\') ++i;  // skip the escaped character
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

json parse_object(const std::string& body) {
  if (nested_too_deep(body))
    throw ApiError(400, "the request body nests JSON deeper than " + std::to_string(kMaxJsonDepth) + " levels", "invalid_json");
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number like 1e999
    throw ApiError(400, std::string("the request body is not valid JSON: ") + e.what(), "invalid_json");
  }
  if (!j.is_object()) throw ApiError(400, "the request body must be a JSON object", "invalid_json");
  return j;
}

const json* field(const json& j, const char* name) {
  auto it = j.find(name);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

double number(const json& j, const char* name, double lo, double hi) {
  const json* v = field(j, name);
  if (!v->is_number()) throw bad(name, std::string("'") + name + "' must be a number");
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    throw bad(name, std::string("'") + name + "' must be between " + json(lo).dump() + " and " + json(hi).dump());
  return x;
}

int64_t integer(const json& j, const char* name, int64_t lo, int64_t hi) {
  const json* v = field(j, name);
  if (!v->is_number_integer()) throw bad(name, std::string("'") + name + "' must be an integer");
  const int64_t x = v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
                        ? std::numeric_limits<int64_t>::max()
                        : v->get<int64_t>();
  if (x < lo || x > hi)
    throw bad(name, std::string("'") + name + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  return x;
}

bool boolean(const json& j, const char* name) {
  const json* v = field(j, name);
  if (!v->is_boolean()) throw bad(name, std::string("'") + name + "' must be true or false");
  return v->get<bool>();
}

std::string text(const json& j, const char* name) {
  const json* v = field(j, name);
  if (!v->is_string()) throw bad(name, std::string("'") + name + "' must be a string");
  return v->get<std::string>();
}

// The fields both endpoints share.
void parse_common(const json& j, CompletionRequest& r, uint64_t random_seed) {
  if (field(j, "model")) r.model = text(j, "model");
  if (field(j, "stream")) r.stream = boolean(j, "stream");
  if (field(j, "cache_prompt")) r.cache_prompt = boolean(j, "cache_prompt");
  if (const json* o = field(j, "stream_options")) {
    if (!o->is_object()) throw bad("stream_options", "'stream_options' must be an object");
    if (field(*o, "include_usage")) r.include_usage = boolean(*o, "include_usage");
  }
  if (field(j, "temperature")) r.sampling.temperature = static_cast<float>(number(j, "temperature", 0, 2));
  if (field(j, "top_p")) r.sampling.top_p = static_cast<float>(number(j, "top_p", 0, 1));
  if (field(j, "top_k")) r.sampling.top_k = static_cast<int>(integer(j, "top_k", 0, 1 << 20));
  if (field(j, "min_p")) r.sampling.min_p = static_cast<float>(number(j, "min_p", 0, 1));
  if (field(j, "repeat_penalty")) r.sampling.repeat_penalty = static_cast<float>(number(j, "repeat_penalty", 0.01, 100));
  // Checked so that a typo is caught, then ignored (see the header).
  if (field(j, "presence_penalty")) number(j, "presence_penalty", -2, 2);
  if (field(j, "frequency_penalty")) number(j, "frequency_penalty", -2, 2);
  r.sampling.seed =
      field(j, "seed")
          ? static_cast<uint64_t>(integer(j, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()))
          : random_seed;
  for (const char* name : {"max_completion_tokens", "max_tokens"})
    if (field(j, name)) r.max_tokens = static_cast<uint32_t>(integer(j, name, 1, 1 << 20));
  if (field(j, "n") && integer(j, "n", 1, 128) != 1) throw bad("n", "'n' must be 1: hearth generates one choice per request");
  if (field(j, "logprobs") && j["logprobs"].is_boolean() && j["logprobs"].get<bool>())
    throw bad("logprobs", "'logprobs' is not supported by hearth");
  if (field(j, "logprobs") && j["logprobs"].is_number()) throw bad("logprobs", "'logprobs' is not supported by hearth");
  if (const json* s = field(j, "stop")) {
    if (s->is_string()) r.stop.push_back(s->get<std::string>());
    else if (s->is_array()) {
      for (const auto& e : *s) {
        if (!e.is_string()) throw bad("stop", "'stop' must be a string or a list of strings");
        r.stop.push_back(e.get<std::string>());
      }
    } else {
      throw bad("stop", "'stop' must be a string or a list of strings");
    }
    if (r.stop.size() > kMaxStops) throw bad("stop", "'stop' has more than " + std::to_string(kMaxStops) + " strings");
    for (const auto& stop : r.stop)
      if (stop.empty() || stop.size() > kMaxStopBytes)
        throw bad("stop", "each 'stop' string must have 1 to " + std::to_string(kMaxStopBytes) + " bytes");
  }
}

// How much a reasoning model thinks: OpenAI's reasoning_effort, and the enable_thinking switch
// Qwen's templates read, as vLLM and llama.cpp's server take it.
void parse_reasoning(const json& j, CompletionRequest& r) {
  if (field(j, "reasoning_effort")) {
    const std::string effort = text(j, "reasoning_effort");
    if (effort == "none" || effort == "minimal") {
      r.thinking = false;
    } else if (effort == "low" || effort == "medium" || effort == "high") {
      r.reasoning_effort = effort;
      r.thinking = true;  // asked to reason: a Qwen 3.5 that does not by default does
    } else {
      throw bad("reasoning_effort", "'reasoning_effort' must be none, minimal, low, medium or high");
    }
  }
  if (const json* k = field(j, "chat_template_kwargs")) {  // the explicit switch wins
    if (!k->is_object()) throw bad("chat_template_kwargs", "'chat_template_kwargs' must be an object");
    if (field(*k, "enable_thinking")) r.thinking = boolean(*k, "enable_thinking");
  }
}

// A message's content: a string, or a list of parts of which hearth reads the text ones.
std::string message_content(const json& m, size_t index) {
  const std::string param = "messages[" + std::to_string(index) + "].content";
  const json* c = field(m, "content");
  if (!c) return "";  // an assistant turn that only called tools
  if (c->is_string()) return c->get<std::string>();
  if (!c->is_array()) throw bad(param, "'" + param + "' must be a string or a list of content parts");
  std::string out;
  for (const auto& part : *c) {
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
      throw bad(param, "each part of '" + param + "' must be an object with a 'type'");
    if (part["type"] != "text")
      throw bad(param, "'" + param + "' has a " + part["type"].get<std::string>() + " part: hearth reads text only");
    if (!part.contains("text") || !part["text"].is_string())
      throw bad(param, "a text part of '" + param + "' has no 'text' string");
    out += part["text"].get<std::string>();
  }
  return out;
}

}  // namespace

ApiError::ApiError(int status, const std::string& message, std::string code, std::string param)
    : std::runtime_error(message), status_(status), code_(std::move(code)), param_(std::move(param)) {}

std::string ApiError::body() const { return error_body(status_, what(), code_, param_); }

std::string error_type(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

std::string error_body(int status, const std::string& message, const std::string& code, const std::string& param) {
  return dump({{"error",
                {{"message", message},
                 {"type", error_type(status)},
                 {"param", param.empty() ? json(nullptr) : json(param)},
                 {"code", code.empty() ? json(nullptr) : json(code)}}}});
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

CompletionRequest parse_chat_request(const std::string& body, uint64_t random_seed) {
  const json j = parse_object(body);
  CompletionRequest r;
  r.chat = true;
  const json* messages = field(j, "messages");
  if (!messages) throw bad("messages", "'messages' is required: a list of {\"role\", \"content\"}");
  if (!messages->is_array() || messages->empty()) throw bad("messages", "'messages' must be a non-empty list");
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string param = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) throw bad(param, "'" + param + "' must be an object");
    if (!field(m, "role") || !m["role"].is_string()) throw bad(param + ".role", "'" + param + ".role' must be a string");
    std::string role = m["role"].get<std::string>();
    if (role == "developer") role = "system";  // OpenAI's newer name for the system role
    if (role != "system" && role != "user" && role != "assistant")
      throw bad(param + ".role", "'" + param + ".role' is '" + role + "': hearth takes system, user and assistant messages");
    r.messages.push_back({role, message_content(m, i)});
  }
  if (field(j, "tools") && j["tools"].is_array() && !j["tools"].empty())
    throw bad("tools", "'tools' are not supported by hearth");
  parse_reasoning(j, r);
  parse_common(j, r, random_seed);
  return r;
}

CompletionRequest parse_completion_request(const std::string& body, uint64_t random_seed) {
  const json j = parse_object(body);
  CompletionRequest r;
  r.chat = false;
  const json* p = field(j, "prompt");
  if (!p) throw bad("prompt", "'prompt' is required");
  if (p->is_string()) r.prompt = p->get<std::string>();
  else if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) r.prompt = (*p)[0].get<std::string>();
  else throw bad("prompt", "'prompt' must be a string (or a list of one string)");
  if (field(j, "echo") && boolean(j, "echo")) throw bad("echo", "'echo' is not supported by hearth");
  if (field(j, "suffix")) throw bad("suffix", "'suffix' is not supported by hearth");
  parse_common(j, r, random_seed);
  return r;
}

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}},
          {"completion_tokens_details", {{"reasoning_tokens", u.reasoning_tokens}}}};
}

json completion_response(const ResponseHead& h, const std::string& text, const std::string& reasoning,
                         const std::string& finish_reason, const Usage& usage, const json& timings) {
  json choice = {{"index", 0}, {"finish_reason", finish_reason}, {"logprobs", nullptr}};
  if (h.chat) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
    if (!reasoning.empty()) choice["message"]["reasoning_content"] = reasoning;
  } else {
    choice["text"] = text;
  }
  return {{"id", h.id},
          {"object", h.chat ? "chat.completion" : "text_completion"},
          {"created", h.created},
          {"model", h.model},
          {"choices", json::array({choice})},
          {"usage", usage_json(usage)},
          {"hearth", timings}};
}

namespace {

json chunk(const ResponseHead& h, json choice) {
  return {{"id", h.id},
          {"object", h.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", h.created},
          {"model", h.model},
          {"choices", json::array({std::move(choice)})}};
}

json chat_delta(bool first) {
  json delta = json::object();
  if (first) delta["role"] = "assistant";
  return delta;
}

}  // namespace

json completion_chunk(const ResponseHead& h, const std::optional<std::string>& text, bool first,
                      const std::optional<std::string>& finish_reason) {
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason ? json(*finish_reason) : json(nullptr)}};
  if (h.chat) {
    json delta = chat_delta(first);
    if (text) delta["content"] = *text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text.value_or("");
  }
  return chunk(h, std::move(choice));
}

json reasoning_chunk(const ResponseHead& h, const std::string& reasoning, bool first) {
  json delta = chat_delta(first);
  delta["reasoning_content"] = reasoning;
  return chunk(h, {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", nullptr}, {"delta", std::move(delta)}});
}

json usage_chunk(const ResponseHead& h, const Usage& usage) {
  return {{"id", h.id},
          {"object", h.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", h.created},
          {"model", h.model},
          {"choices", json::array()},
          {"usage", usage_json(usage)}};
}

}  // namespace hearth::http
