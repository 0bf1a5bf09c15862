// The head's generation scheduler: conversations in progress, fed through the pipeline.
//
// Each loop iteration builds one batch for the head's own (first) stage: every sequence whose
// next token has come back contributes one decode token, and sequences still reading their
// prompt contribute a chunk of it, round-robin, up to the stage's batch size. The batch's hidden
// states go down the pipeline; sampled tokens come back as results. Prompt chunks of one sequence
// flow back to back, so later stages work on chunk k while the head computes chunk k+1.
//
// Decode tokens go in micro-batches of ceil(waiting / stages): with S stages and B conversations,
// S groups circulate, so every stage has a group to work on while the others are elsewhere in the
// ring (one batch of all B would leave every stage but one idle).
//
// A request that ends leaves its caches on the stages (cluster/prompt_cache.h): the next turn of
// its conversation prefills only the tokens it adds. Results do not change: the stages compute
// the same rows for the same positions, and the last stage starts the request's sampler afresh.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cluster/draft_pace.h"
#include "cluster/draft_source.h"
#include "cluster/failure.h"
#include "cluster/host.h"
#include "cluster/prompt_cache.h"
#include "cluster/stage_host.h"
#include "runtime/model/kv_layout.h"
#include "runtime/model/sampler.h"
#include "runtime/text/reply_filter.h"
#include "runtime/text/tokenizer.h"

namespace hearth::cluster {

struct GenerationEvent {
  std::string client;  // who asked (control socket identity)
  uint64_t request_id = 0;
  int32_t token = -1;
  std::string piece;       // what of the token to show (may be part of a UTF-8 character)
  bool reasoning = false;  // the piece is the model's reasoning, not its answer (reply_filter.h)
  bool done = false;
  std::string error;
  ErrorCategory category = ErrorCategory::INTERNAL;  // of the error, if any
  std::string finish_reason;                         // stop, length, cancelled, error
  std::string chat_template;                         // which template rendered a chat (on done)
  int prompt_tokens = 0;
  int cached_tokens = 0;  // of the prompt, found in a kept cache (not computed again)
  int generated_tokens = 0;
  double ttft_ms = 0;
  double decode_tok_s = 0;
  int decode_passes = 0;  // trips through the pipeline after the first token (fewer than tokens with drafts)
};

struct SchedulerTotals {
  uint64_t requests = 0;
  uint64_t tokens_generated = 0;
  // Speculative decoding: draft tokens sent to be checked, those the last stage accepted, and the
  // decode passes (one token of a conversation through the pipeline, with or without a draft).
  uint64_t tokens_drafted = 0, tokens_accepted = 0, decode_passes = 0;
  // Decode passes without a draft of a conversation decoding alone, and their cycles (from its
  // previous result to this one) less the head's time proposing a draft (none may come of it):
  // what a token's trip through the pipeline takes, links included (the drift watch's measure of
  // the links, cluster/drift.h).
  uint64_t lone_passes = 0, lone_pass_ns = 0;
  // Those with a draft: their rows (the draft, its token, tokens sent again), and their cycles
  // less the head's time proposing the draft.
  uint64_t lone_draft_passes = 0, lone_draft_rows = 0, lone_draft_ns = 0;
  double last_decode_tok_s = 0;
  double last_ttft_ms = 0;
};

// A conversation taken out of a pipeline that lost a stage, to be replayed on the next one: its
// prompt and every token it generated rebuild the KV caches, and the stream goes on from there.
struct CarriedSession {
  std::string client;
  uint64_t request_id = 0;
  std::vector<int32_t> prompt;
  std::vector<int32_t> output;  // generated so far (already sent to the client)
  int n_predict = 0;
  runtime::SamplingParams sampling;
  std::string chat_template;
  runtime::ReplyFilter reply;  // where the client's view of the reply is
  std::chrono::steady_clock::time_point start, first_token;
};

class Scheduler {
 public:
  using Emit = std::function<void(const GenerationEvent&)>;
  // Prompt tokens per chunk sent down the pipeline.
  static constexpr int kPrefillChunk = 64;

  // `max_sequences`: conversations the stages hold KV caches for (running or kept); more wait in
  // arrival order. `caches`: how far back the stages can take a sequence (runtime/model/kv_layout.h,
  // the whole model's with the stages' options): a kept cache is reused within its max_rewind.
  // `drafts`: where speculative decoding's drafts come from (nullptr: none; draft_pace.max_draft
  // at most caches.max_draft, to take back a rejected draft; with recurrent layers, which go back
  // only to their state before a draft, the accepted part of a draft cut short is sent again).
  Scheduler(LocalStage& stage, const runtime::Tokenizer& tokenizer, int n_ctx, int n_stages, int max_sequences,
            const runtime::KvLayout& caches, Emit emit, std::unique_ptr<DraftSource> drafts = nullptr,
            DraftPaceOptions draft_pace = {});

  // Starts a generation; emits an error event at once when it cannot start.
  void add(const std::string& client, uint64_t request_id, std::vector<int32_t> prompt, int n_predict,
           const runtime::SamplingParams& sampling, std::string chat_template = "", runtime::ReplyFilter reply = {},
           bool use_cache = true);
  // Stops a generation a client asked to cancel (unknown ones are ignored).
  void cancel(const std::string& client, uint64_t request_id);
  // Runs one batch on the head's stage if any sequence has work. Returns true if it did.
  bool step();
  void on_sampled(const std::vector<SampledToken>& tokens);
  // Takes every conversation out (nothing is emitted): the pipeline lost a stage.
  std::vector<CarriedSession> suspend();
  // Continues a carried conversation: its prompt and output are fed again as a prompt, and the
  // sampler skips the random draws already made, so the text is what it would have been.
  void resume(CarriedSession c);
  // Ends sequences with an error (all of them when `seqs` is empty).
  void fail(const std::string& message, ErrorCategory category, const std::vector<uint64_t>& seqs = {});
  bool has_work() const;
  size_t active() const { return sessions_.size() - queued(); }
  size_t kept() const { return cache_.size(); }
  size_t queued() const;
  const SchedulerTotals& totals() const { return totals_; }

 private:
  struct Session {
    std::string client;
    uint64_t request_id = 0;
    std::vector<int32_t> prompt;  // for a resumed conversation: its prompt and output so far
    size_t prompt_sent = 0;
    size_t original_prompt = 0;   // tokens of `prompt` the client sent (the rest it has seen generated)
    std::vector<int32_t> output;  // generated tokens, in order
    std::vector<int32_t> fed;     // tokens sent down the pipeline: what the caches hold, in order
    // The furthest position the stages stored since the sequence last started at 0 (beyond fed:
    // a rejected draft's tail, an earlier turn's); how far it may go back counts from here.
    int reach = 0;
    // Where the last chunk sent ends, and the checkpoint before its draft (-1: none): where
    // recurrent stages can continue the sequence.
    int end = 0;
    int checkpoint = -1;
    void sent(int pos, int n, int drafts = 0) {
      reach = pos == 0 ? n : std::max(reach, pos + n);
      end = pos + n;
      checkpoint = drafts > 0 ? end - drafts : -1;
    }
    size_t cached = 0;            // leading prompt tokens a kept cache held when admitted
    bool use_cache = true;        // may reuse a kept cache
    bool started = false;         // its first chunk was sent
    bool in_flight = false;       // a chunk that samples is in the pipeline
    int next_pos = 0;
    int n_predict = 0;
    int generated = 0;
    runtime::SamplingParams sampling;
    std::optional<int32_t> pending;  // sampled, waiting to be fed back
    std::vector<int32_t> draft;      // sent behind the last fed token, waiting to be checked
    std::chrono::nanoseconds drafting{0};  // what proposing it took the head
    int resend = 0;                  // accepted draft tokens recurrent stages must compute again
    int resent = 0;                  // of those, carried by the chunk in flight
    DraftPace pace;
    int passes = 0;                  // decode steps sent
    bool decoding = false;           // the chunk in flight is a decode step (timed for the pace)
    std::optional<std::chrono::steady_clock::time_point> last_result;
    std::string chat_template;
    runtime::ReplyFilter reply;  // what of each token the client sees
    std::chrono::steady_clock::time_point start, first_token;
    bool admitted = false;  // holds a KV cache slot on the stages
  };
  void admit();
  void admit(uint64_t seq);
  size_t admitted() const;
  // Leaves a finished sequence's caches on the stages for a later request (or frees them).
  void keep_or_release(uint64_t seq, const Session& s, const std::string& reason);
  // What a finished sequence's caches hold that a later request may continue: tokens in order,
  // and the furthest position the stages stored.
  struct Kept {
    std::vector<int32_t> tokens;
    size_t reach = 0;
  };
  Kept kept(const Session& s) const;
  void finish(uint64_t seq, const std::string& reason, const std::string& error = "",
              ErrorCategory category = ErrorCategory::INTERNAL);
  // The draft to send behind a decoding session's pending token, within `room` batch tokens.
  std::vector<int32_t> draft_for(uint64_t seq, Session& s, int room);
  // Hands one generated token to the client; false when it ended the session.
  bool deliver(uint64_t seq, Session& s, int32_t token);

  LocalStage& stage_;
  const runtime::Tokenizer& tokenizer_;
  int n_ctx_;
  int n_stages_;
  int max_sequences_;
  Emit emit_;
  std::unique_ptr<DraftSource> drafts_;
  DraftPaceOptions draft_pace_;
  bool resend_accepted_;  // recurrent stages: see the constructor
  std::map<uint64_t, Session> sessions_;
  PromptCache cache_;
  // Finished sequences with a sampled token still on its way back: kept once it arrives (until
  // then a new request could not tell that token from its own).
  std::map<uint64_t, Kept> draining_;
  uint64_t next_seq_ = 1;
  uint64_t round_robin_ = 0;
  SchedulerTotals totals_;
};

}  // namespace hearth::cluster
