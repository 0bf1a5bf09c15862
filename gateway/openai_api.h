// The OpenAI HTTP API as hearth serves it: request bodies parsed and checked into a plain
// struct, errors in OpenAI's shape, and the JSON objects of responses and stream chunks. Pure
// code: no sockets, no threads.
//
// Sampling: fields not given keep hearth's defaults (temperature 0.8, top_p 0.95, top_k 40,
// min_p 0.05), not OpenAI's; `top_k`, `min_p` and `repeat_penalty` are accepted as extensions
// (as llama.cpp's server does). `presence_penalty` and `frequency_penalty` are checked and
// ignored: hearth's sampler has no such penalties and a multiplicative repeat penalty is not the
// same thing. A request without `seed` gets a random one.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/model/sampler.h"

namespace hearth::http {

// An error an HTTP client gets, as {"error": {"message", "type", "param", "code"}}.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, const std::string& message, std::string code, std::string param = "");
  int status() const { return status_; }
  const std::string& code() const { return code_; }
  const std::string& param() const { return param_; }
  std::string body() const;

 private:
  int status_;
  std::string code_, param_;
};

// OpenAI's error type for a status: invalid_request_error, authentication_error, ...
std::string error_type(int status);
std::string error_body(int status, const std::string& message, const std::string& code, const std::string& param = "");

struct ChatTurn {
  std::string role;  // system | user | assistant
  std::string content;
};

struct CompletionRequest {
  bool chat = true;                // /v1/chat/completions (messages) or /v1/completions (prompt)
  std::string model;               // empty when not given
  std::vector<ChatTurn> messages;  // chat
  std::string prompt;              // completions
  runtime::SamplingParams sampling;
  uint32_t max_tokens = 0;  // 0: until the end of generation or of the context
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool cache_prompt = true;    // llama.cpp's field: false computes the whole prompt again
  // Chat: how much a reasoning model thinks. reasoning_effort low|medium|high is gpt-oss's
  // effort; "none" or "minimal", or chat_template_kwargs.enable_thinking = false (vLLM's and
  // llama.cpp's field), switches a Qwen 3 / 3.5 model's thinking off.
  std::string reasoning_effort;  // "" = the model's default
  std::optional<bool> thinking;  // unset: the template's default
};

// Throw ApiError(400) naming the offending field.
CompletionRequest parse_chat_request(const std::string& body, uint64_t random_seed);
CompletionRequest parse_completion_request(const std::string& body, uint64_t random_seed);

// JSON serialisation that never throws on bad UTF-8 (replaces it).
std::string dump(const nlohmann::json& j);

struct Usage {
  uint32_t prompt_tokens = 0;
  uint32_t completion_tokens = 0;
  uint32_t cached_tokens = 0;     // of the prompt, served from a kept KV cache
  uint32_t reasoning_tokens = 0;  // of the completion, the model's reasoning (reply_filter.h)
};

// The ids, names and times every object of one response shares.
struct ResponseHead {
  std::string id;       // chatcmpl-... or cmpl-...
  int64_t created = 0;  // unix seconds
  std::string model;
  bool chat = true;
};

// A whole (non-streamed) response. `timings` goes under the extension key "hearth". A chat's
// reasoning, if the model gave any, is the message's `reasoning_content` (llama.cpp's server and
// vLLM name it so; OpenAI's own API returns none).
nlohmann::json completion_response(const ResponseHead& h, const std::string& text, const std::string& reasoning,
                                   const std::string& finish_reason, const Usage& usage, const nlohmann::json& timings);
// A stream chunk: the first one of a chat carries the role, the last one the finish reason.
nlohmann::json completion_chunk(const ResponseHead& h, const std::optional<std::string>& text, bool first,
                                const std::optional<std::string>& finish_reason);
// A chat stream chunk of reasoning: its delta's `reasoning_content`.
nlohmann::json reasoning_chunk(const ResponseHead& h, const std::string& reasoning, bool first);
// The usage chunk of stream_options.include_usage: no choices.
nlohmann::json usage_chunk(const ResponseHead& h, const Usage& usage);
nlohmann::json usage_json(const Usage& usage);

}  // namespace hearth::http
