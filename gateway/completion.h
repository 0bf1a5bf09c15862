// One OpenAI completion in flight: it turns the head's GenerateEvents for one request into that
// request's HTTP response, streamed (one SSE chunk per token, then "data: [DONE]") or whole. It
// cuts the answer at a stop string and cancels the generation there, and cancels it when the
// client goes away, so the head frees the conversation's KV cache at once. A reasoning model's
// reasoning goes to `reasoning_content`, apart from the answer; stop strings are looked for in the
// answer only (a stop string the model thinks about does not end its reply). Each part is
// streamed in its own order; answer text held back (part of a character or of a possible stop
// string) when reasoning comes after the answer has begun (a second block) is sent after that
// reasoning.
//
// Lives on the gateway's Asio thread; events are posted to it from the head link's thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "gateway/metrics.h"
#include "gateway/openai_api.h"
#include "gateway/response_sink.h"
#include "gateway/stop_matcher.h"
#include "runtime/text/tokenizer.h"
#include "transport/codec.h"

namespace hearth::http {

// A GenerateEvent copied out of its message.
struct HeadEvent {
  std::string text;
  bool reasoning = false;  // text is the model's reasoning, not its answer
  bool done = false;
  std::string error;
  int status = 0;          // the HTTP status of the error (gateway/error_status.h)
  std::string error_code;  // OpenAI's error.code for it
  std::string finish_reason;
  uint32_t prompt_tokens = 0, cached_tokens = 0, generated_tokens = 0;
  double ttft_ms = 0, decode_tok_s = 0;
  std::string chat_template;

  static HeadEvent from_wire(transport::wire::GenerateEvent::Reader e);
  static HeadEvent failure(int status, std::string code, std::string message);
};

class Completion {
 public:
  // `cancel(forget)` sends a CancelRequest for this generation (see HeadLink::cancel); `on_end`
  // runs once when the response has ended or the client has gone.
  Completion(std::shared_ptr<ResponseSink> connection, CompletionRequest request, ResponseHead head, GatewayStats& stats,
             std::function<void(bool forget)> cancel, std::function<void()> on_end);
  Completion(const Completion&) = delete;
  Completion& operator=(const Completion&) = delete;

  void on_event(const HeadEvent& e);
  void on_client_gone();

 private:
  void first_chunk_if_needed();
  void add_answer(const std::string& text);
  void add_reasoning(const std::string& text);
  void finish(const HeadEvent& e);
  void fail(const HeadEvent& e);
  void ended();

  std::shared_ptr<ResponseSink> connection_;
  CompletionRequest request_;
  ResponseHead head_;
  GatewayStats& stats_;
  std::function<void(bool)> cancel_;
  std::function<void()> on_end_;
  runtime::Utf8Stream utf8_, reasoning_utf8_;
  StopMatcher stop_;
  std::string text_;         // the whole answer, for a response that is not streamed
  std::string reasoning_;    // the whole reasoning, for a response that is not streamed
  bool streaming_ = false;   // the SSE headers went out
  bool sent_first_ = false;  // the chunk with the role went out
  bool stop_hit_ = false;    // cut at a stop string, cancelled, waiting for the final event
  bool finished_ = false;
  uint32_t tokens_ = 0;
  uint32_t reasoning_tokens_ = 0;
  std::chrono::steady_clock::time_point start_, first_token_;
};

}  // namespace hearth::http
