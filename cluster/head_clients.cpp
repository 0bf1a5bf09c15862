// Generation requests from clients (the CLI, the HTTP gateway): tokenized here, run by the
// scheduler, answered with one event per token and a final one.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "cluster/head.h"
#include "cluster/pace.h"
#include "cluster/wire_convert.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/reply_filter.h"

namespace hearth::cluster {

namespace wire = transport::wire;

void Head::on_generate(const std::string& client, uint64_t request_id, wire::GenerateRequest::Reader r) {
  // While the stages load (after a launch's switch, or a re-plan) requests wait in the queue.
  const bool serving = plan_ && scheduler_ && (plan_->ready() || plan_->state() == LaunchState::kLoading);
  if (!serving) {
    const std::string why = plan_ ? "the cluster lost its plan (" + plan_->failure + "): launch again"
                            : next_ ? "no model is loaded yet: the launch of " + next_->config.name + " is receiving its weights"
                                    : "no model is loaded: run `hearth launch --model FILE` first";
    emit({.client = client,
          .request_id = request_id,
          .done = true,
          .error = why,
          .category = ErrorCategory::UNAVAILABLE,
          .finish_reason = "error"});
    return;
  }
  runtime::SamplingParams sampling;
  std::vector<int32_t> prompt;
  std::string chat_template;
  runtime::ReplyFilter reply;
  try {
    sampling = from_wire(r.getSampling());
    prompt = encode_request(r, chat_template, reply);
  } catch (const std::exception& e) {
    emit({.client = client,
          .request_id = request_id,
          .done = true,
          .error = e.what(),
          .category = category_of(e),
          .finish_reason = "error"});
    return;
  }
  scheduler_->add(client, request_id, std::move(prompt), static_cast<int>(std::min<uint32_t>(r.getNPredict(), 1u << 20)),
                  sampling, chat_template, reply, r.getCachePrompt());
}

std::vector<int32_t> Head::encode_request(wire::GenerateRequest::Reader r, std::string& chat_template,
                                          runtime::ReplyFilter& reply) const {
  if (r.getMessages().size() == 0) return plan_->tokenizer->encode(r.getPrompt().cStr());
  // A conversation: the model's own template renders it, and its control tokens are real tokens.
  std::vector<runtime::ChatMessage> messages;
  for (auto m : r.getMessages()) {
    const std::string role = m.getRole().cStr();
    if (role != "system" && role != "user" && role != "assistant")
      throw Failure(ErrorCategory::BAD_REQUEST, "unknown message role '" + role + "'");
    messages.push_back({role, m.getContent().cStr()});
  }
  const runtime::ChatTemplate t =
      runtime::detect_chat_template(plan_->file->metadata().get_string_opt("tokenizer.chat_template").value_or(""));
  chat_template = t.name + (t.fallback ? " (fallback)" : "");
  runtime::ChatRenderOptions options;
  if (r.getThinking() != wire::ThinkingSwitch::TEMPLATE_DEFAULT) options.thinking = r.getThinking() == wire::ThinkingSwitch::ON;
  if (r.getReasoningEffort().size() > 0) options.reasoning_effort = r.getReasoningEffort().cStr();
  if (options.reasoning_effort != "low" && options.reasoning_effort != "medium" && options.reasoning_effort != "high")
    throw Failure(ErrorCategory::BAD_REQUEST, "reasoning effort '" + options.reasoning_effort + "': low, medium or high");
  reply = runtime::ReplyFilter::for_chat(t, plan_->tokenizer->vocab(), options);
  return plan_->tokenizer->encode(runtime::render_chat(t, messages, options), {.add_bos = true, .parse_special = true});
}

void Head::emit(const GenerationEvent& e) {
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<wire::Envelope>();
  env.setRequestId(e.request_id);
  auto ev = env.initGenerateEvent();
  ev.setText(kj::StringPtr(e.piece.c_str(), e.piece.size()));
  ev.setReasoning(e.reasoning);
  ev.setToken(e.token);
  ev.setDone(e.done);
  ev.setError(e.error);
  ev.setPromptTokens(static_cast<uint32_t>(e.prompt_tokens));
  ev.setCachedTokens(static_cast<uint32_t>(e.cached_tokens));
  ev.setGeneratedTokens(static_cast<uint32_t>(e.generated_tokens));
  ev.setTtftMs(e.ttft_ms);
  ev.setDecodeTokS(e.decode_tok_s);
  ev.setFinishReason(e.finish_reason);
  if (!e.error.empty()) ev.setErrorCategory(e.category);
  ev.setChatTemplate(e.chat_template);
  ports_.outbox.send(e.client, b);
  // Long enough for a rate to mean something; alone, as the plan's figure is for one stream.
  if (e.done && e.error.empty() && e.generated_tokens >= 16 && e.decode_tok_s > 0 && scheduler_ && scheduler_->active() <= 1 &&
      scheduler_->queued() == 0) {
    // The plan predicts a trip through the pipeline per token; with drafts a trip gives more.
    const double tokens_per_pass = e.decode_passes > 0 ? static_cast<double>(e.generated_tokens - 1) / e.decode_passes : 1.0;
    check_pace(e.decode_tok_s / std::max(1.0, tokens_per_pass));
  }
}

void Head::check_pace(double passes_per_s) {
  if (!plan_ || !plan_->ready()) return;
  // The first check only marks where the counters are (they count since each daemon started,
  // earlier plans included); later ones judge the steps since the last check.
  const bool first = plan_->pace_mark.empty();
  Pace pace;
  // A drafting launch's passes carry drafts: the plan's pass with its draft is what they should
  // take at most (passes that drafted less take less).
  const partitioner::Prediction& predicted = plan_->plan.predicted;
  pace.planned_ms_per_token = std::max(predicted.ms_per_token, predicted.draft_pass_ms);
  pace.measured_ms_per_token = 1e3 / passes_per_s;
  std::vector<StepCount> now;
  for (const PlannedStage& s : plan_->stages) now.push_back(steps_of(s));
  for (size_t i = 0; i < plan_->stages.size() && !first; ++i) {
    const PlannedStage& s = plan_->stages[i];
    const std::optional<StepCount> steps = now[i].since(plan_->pace_mark[i]);
    if (!steps) {  // a daemon restarted: count from here
      plan_->pace_mark = now;
      return;
    }
    // A device's counters come with its heartbeats (every 400 ms): without new ones, judge later.
    if (steps->steps == 0) return;
    // As one-token steps (a drafting launch's steps carry drafts): against the plan's time for
    // the same steps.
    pace.stages.push_back(
        {registry_.at(s.node_id).profile.name, s.planned.one_ms(), s.planned.one_ms() * steps->vs_plan(s.planned)});
  }
  plan_->pace_mark = now;
  if (first) return;
  spdlog::debug("head: decode pace {:.2f} ms/token, planned {:.2f}", pace.measured_ms_per_token, pace.planned_ms_per_token);
  const auto slow = explain_slow_pace(pace);
  if (slow && !plan_->slow_pace) {
    spdlog::warn("head: {}", *slow);
    plan_->events.add(*slow);
  } else if (!slow && plan_->slow_pace) {
    plan_->events.add(
        fmt::format("back on pace: {:.1f} ms/token (planned {:.1f})", pace.measured_ms_per_token, pace.planned_ms_per_token));
  }
  plan_->slow_pace = slow.has_value();
}

void Head::on_result(wire::Result::Reader r) {
  if (!plan_ || r.getPlanId() != plan_->id || !scheduler_) {
    ports_.host.count_out_of_plan();
    return;
  }
  std::vector<SampledToken> tokens;
  for (auto t : r.getTokens()) {
    if (t.getToken() < 0 || t.getToken() >= plan_->config.n_vocab)
      throw std::invalid_argument("result with a token outside the vocabulary");
    tokens.push_back({t.getSeq(), t.getToken(), static_cast<int>(std::min<uint32_t>(t.getAccepted(), 1u << 16))});
  }
  scheduler_->on_sampled(tokens);
}

void Head::on_sampled(const std::vector<SampledToken>& tokens) {
  if (scheduler_) scheduler_->on_sampled(tokens);
}

}  // namespace hearth::cluster
