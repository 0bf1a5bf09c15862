#include "gateway/completion.h"

#include <spdlog/spdlog.h>

#include "gateway/error_status.h"
#include "gateway/sse.h"

namespace hearth::http {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

}  // namespace

HeadEvent HeadEvent::from_wire(transport::wire::GenerateEvent::Reader e) {
  HeadEvent h;
  const auto t = e.getText();
  h.text.assign(t.cStr(), t.size());
  h.reasoning = e.getReasoning();
  h.done = e.getDone();
  h.error = e.getError().cStr();
  if (!h.error.empty()) {
    h.status = http_status(e.getErrorCategory());
    h.error_code = error_code_name(e.getErrorCategory());
  }
  h.finish_reason = e.getFinishReason().cStr();
  h.prompt_tokens = e.getPromptTokens();
  h.cached_tokens = e.getCachedTokens();
  h.generated_tokens = e.getGeneratedTokens();
  h.ttft_ms = e.getTtftMs();
  h.decode_tok_s = e.getDecodeTokS();
  h.chat_template = e.getChatTemplate().cStr();
  return h;
}

HeadEvent HeadEvent::failure(int status, std::string code, std::string message) {
  HeadEvent h;
  h.done = true;
  h.error = std::move(message);
  h.status = status;
  h.error_code = std::move(code);
  h.finish_reason = "error";
  return h;
}

Completion::Completion(std::shared_ptr<ResponseSink> connection, CompletionRequest request, ResponseHead head,
                       GatewayStats& stats, std::function<void(bool)> cancel, std::function<void()> on_end)
    : connection_(std::move(connection)),
      request_(std::move(request)),
      head_(std::move(head)),
      stats_(stats),
      cancel_(std::move(cancel)),
      on_end_(std::move(on_end)),
      stop_(request_.stop),
      start_(Clock::now()) {
  stats_.generation_started();
}

void Completion::first_chunk_if_needed() {
  if (!request_.stream || streaming_) return;
  streaming_ = true;
  stats_.stream_started();
  connection_->start_stream(200, "text/event-stream", {});
}

void Completion::on_event(const HeadEvent& e) {
  if (finished_) return;
  if (e.done) {
    if (!e.error.empty() && !stop_hit_) fail(e);
    else finish(e);
    return;
  }
  if (tokens_++ == 0) {
    first_token_ = Clock::now();
    stats_.observe_ttft(std::chrono::duration<double>(first_token_ - start_).count());
  }
  if (e.reasoning) reasoning_tokens_++;
  if (stop_hit_) return;  // tokens already on their way when the cancel went out
  if (e.reasoning) {
    add_reasoning(reasoning_utf8_.push(e.text));
    return;
  }
  // What was held of the reasoning (the start of a character) ends where the answer starts.
  if (const std::string cut = reasoning_utf8_.flush(); !cut.empty()) add_reasoning(cut);
  add_answer(stop_.push(utf8_.push(e.text)));
  if (stop_.stopped()) {
    stop_hit_ = true;
    stats_.stopped_by_stop_string();
    cancel_(false);  // keep listening: the final event carries the counts
  }
}

// One chunk per token; a token whose text is held back (part of a character or of a possible
// stop string) gets none, except the very first, which carries the role.
void Completion::add_answer(const std::string& text) {
  if (!request_.stream) {
    text_ += text;
    return;
  }
  first_chunk_if_needed();
  if (!text.empty() || !sent_first_) {
    connection_->send_chunk(sse_event(dump(completion_chunk(head_, text, !sent_first_, std::nullopt))));
    sent_first_ = true;
  }
}

void Completion::add_reasoning(const std::string& text) {
  if (!request_.stream) {
    reasoning_ += text;
    return;
  }
  if (text.empty()) {
    if (!sent_first_) add_answer(text);  // the role's chunk
    return;
  }
  first_chunk_if_needed();
  connection_->send_chunk(sse_event(dump(reasoning_chunk(head_, text, !sent_first_))));
  sent_first_ = true;
}

void Completion::finish(const HeadEvent& e) {
  std::string rest;
  if (!stop_hit_) {
    if (const std::string cut = reasoning_utf8_.flush(); !cut.empty()) add_reasoning(cut);
    rest = stop_.push(utf8_.flush()) + stop_.flush();
  }
  if (stop_.stopped()) stop_hit_ = true;
  const std::string finish_reason = stop_hit_ || e.finish_reason != "length" ? "stop" : "length";
  const Usage usage{e.prompt_tokens, e.generated_tokens, e.cached_tokens, reasoning_tokens_};
  const json timings = {
      {"ttft_ms", e.ttft_ms},
      {"decode_tok_s", e.decode_tok_s},
      {"http_ttft_ms", tokens_ > 0 ? std::chrono::duration<double, std::milli>(first_token_ - start_).count() : 0.0},
      {"total_ms", ms_since(start_)},
      {"chat_template", e.chat_template}};
  if (request_.stream) {
    first_chunk_if_needed();
    if (!rest.empty() || !sent_first_)
      connection_->send_chunk(sse_event(dump(completion_chunk(head_, rest, !sent_first_, std::nullopt))));
    json last = completion_chunk(head_, std::nullopt, false, finish_reason);
    last["hearth"] = timings;
    connection_->send_chunk(sse_event(dump(last)));
    if (request_.include_usage) connection_->send_chunk(sse_event(dump(usage_chunk(head_, usage))));
    connection_->send_chunk(sse_event("[DONE]"));
    connection_->end_stream();
  } else {
    connection_->respond(200, "application/json",
                         dump(completion_response(head_, text_ + rest, reasoning_, finish_reason, usage, timings)), {});
  }
  spdlog::info("http: {} {}: {} prompt ({} cached) + {} generated tokens, first after {:.0f} ms, {:.1f} tok/s, {}",
               connection_->peer(), head_.id, e.prompt_tokens, e.cached_tokens, e.generated_tokens, e.ttft_ms, e.decode_tok_s,
               finish_reason);
  ended();
}

void Completion::fail(const HeadEvent& e) {
  const int status = e.status >= 400 && e.status < 600 ? e.status : 500;
  if (!streaming_) {
    connection_->respond_error(status, e.error, e.error_code, "");
  } else {
    // The status line has gone: the error travels as an event, and there is no [DONE].
    connection_->send_chunk(sse_event(error_body(status, e.error, e.error_code)));
    connection_->end_stream();
  }
  spdlog::warn("http: {} {}: {}", connection_->peer(), head_.id, e.error);
  ended();
}

void Completion::on_client_gone() {
  if (finished_) return;
  cancel_(true);
  stats_.client_gone();
  spdlog::info("http: {} left before the end of {}: cancelled after {} tokens", connection_->peer(), head_.id, tokens_);
  ended();
}

void Completion::ended() {
  finished_ = true;
  stats_.tokens_sent(tokens_);
  stats_.generation_ended();
  if (streaming_) stats_.stream_ended();
  if (on_end_) on_end_();
}

}  // namespace hearth::http
