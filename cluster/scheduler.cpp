#include "cluster/scheduler.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <stdexcept>

namespace hearth::cluster {

using Steady = std::chrono::steady_clock;

namespace {

double ms_between(Steady::time_point a, Steady::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }

}  // namespace

Scheduler::Scheduler(LocalStage& stage, const runtime::Tokenizer& tokenizer, int n_ctx, int n_stages, int max_sequences,
                     const runtime::KvLayout& caches, Emit emit, std::unique_ptr<DraftSource> drafts, DraftPaceOptions draft_pace)
    : stage_(stage),
      tokenizer_(tokenizer),
      n_ctx_(n_ctx),
      n_stages_(std::max(1, n_stages)),
      max_sequences_(std::max(1, max_sequences)),
      emit_(std::move(emit)),
      drafts_(std::move(drafts)),
      draft_pace_(draft_pace),
      resend_accepted_(caches.recurrent),
      cache_(static_cast<size_t>(std::max(0, caches.max_rewind))) {
  // A draft's rejected tail is undone by overwriting its positions (a sliding-window layer's ring
  // only so far), or by going back to the recurrent state before it.
  if (drafts_ && draft_pace.max_draft > caches.max_draft)
    throw std::invalid_argument("drafts of " + std::to_string(draft_pace.max_draft) +
                                " tokens cannot be taken back by stages that go back " + std::to_string(caches.max_draft) +
                                ": use a smaller --draft-max");
}

size_t Scheduler::queued() const {
  size_t n = 0;
  for (const auto& [seq, s] : sessions_) n += s.admitted ? 0 : 1;
  return n;
}

size_t Scheduler::admitted() const { return sessions_.size() - queued(); }

// Admits waiting conversations, oldest first (sequence ids grow with arrival), while the stages
// have cache slots for them: free ones, or kept caches, reused or evicted.
void Scheduler::admit() {
  std::vector<uint64_t> waiting;
  for (const auto& [seq, s] : sessions_)
    if (!s.admitted) waiting.push_back(seq);
  for (uint64_t seq : waiting) {
    if (admitted() + draining_.size() >= static_cast<size_t>(max_sequences_)) break;
    admit(seq);
  }
}

// A session that reuses a kept cache takes its sequence id: the stages know the caches by it.
void Scheduler::admit(uint64_t seq) {
  auto node = sessions_.extract(seq);
  Session& s = node.mapped();
  // The prompt's last token is always computed (its logits give the first token), and with a
  // repetition penalty so are the last repeat_last_n, which the new sampler must see.
  size_t compute = 1;
  if (s.sampling.repeat_penalty != 1.0f) compute = std::max<size_t>(compute, static_cast<size_t>(std::max(0, s.sampling.repeat_last_n)));
  const size_t max_reuse = s.prompt.size() > compute ? s.prompt.size() - compute : 0;
  std::optional<PromptCache::Hit> hit;
  if (s.use_cache) hit = cache_.take(s.prompt, max_reuse);
  if (hit) {
    node.key() = hit->seq;
    s.prompt_sent = s.cached = hit->reuse;
    s.fed.assign(s.prompt.begin(), s.prompt.begin() + static_cast<long>(hit->reuse));
    s.reach = s.end = static_cast<int>(hit->reach);
  } else if (admitted() + draining_.size() + cache_.size() >= static_cast<size_t>(max_sequences_)) {
    stage_.release({*cache_.evict_oldest()});  // admit() left a slot: one is kept
  }
  s.admitted = true;
  sessions_.insert(std::move(node));
}

void Scheduler::add(const std::string& client, uint64_t request_id, std::vector<int32_t> prompt, int n_predict,
                    const runtime::SamplingParams& sampling, std::string chat_template, runtime::ReplyFilter reply,
                    bool use_cache) {
  totals_.requests++;
  GenerationEvent refuse{
      .client = client, .request_id = request_id, .done = true, .category = ErrorCategory::BAD_REQUEST, .finish_reason = "error"};
  if (prompt.empty()) refuse.error = "the prompt has no tokens";
  else if (static_cast<int>(prompt.size()) >= n_ctx_) {
    // What a client needs to decide: how much of the conversation to leave out.
    const size_t drop = prompt.size() - static_cast<size_t>(n_ctx_) + 1;
    refuse.error = "the prompt has " + std::to_string(prompt.size()) + " tokens; the context holds " + std::to_string(n_ctx_) +
                   ": leave out at least " + std::to_string(drop) + " tokens (the oldest messages), or start a new conversation";
    refuse.category = ErrorCategory::TOO_LARGE;
  } else if (n_predict <= 0) refuse.error = "n_predict must be positive";
  if (!refuse.error.empty()) {
    emit_(refuse);
    return;
  }
  Session s;
  s.client = client;
  s.request_id = request_id;
  s.prompt = std::move(prompt);
  s.n_predict = n_predict;
  s.sampling = sampling;
  s.chat_template = std::move(chat_template);
  s.reply = reply;
  s.use_cache = use_cache;
  s.pace = DraftPace(draft_pace_);
  s.start = Steady::now();
  s.original_prompt = s.prompt.size();
  sessions_.emplace(next_seq_++, std::move(s));
}

std::vector<CarriedSession> Scheduler::suspend() {
  std::vector<CarriedSession> out;
  for (auto& [seq, s] : sessions_) {
    CarriedSession c{.client = s.client,
                     .request_id = s.request_id,
                     .n_predict = s.n_predict,
                     .sampling = s.sampling,
                     .chat_template = s.chat_template,
                     .reply = s.reply,
                     .start = s.start,
                     .first_token = s.first_token};
    c.prompt.assign(s.prompt.begin(), s.prompt.begin() + static_cast<long>(s.original_prompt));
    c.output = s.output;
    out.push_back(std::move(c));
  }
  sessions_.clear();  // the stages that held their caches are gone or reassigned
  cache_.clear();
  draining_.clear();
  return out;
}

void Scheduler::resume(CarriedSession c) {
  Session s;
  s.client = std::move(c.client);
  s.request_id = c.request_id;
  s.original_prompt = c.prompt.size();
  s.prompt = std::move(c.prompt);
  s.prompt.insert(s.prompt.end(), c.output.begin(), c.output.end());
  s.generated = static_cast<int>(c.output.size());
  s.output = std::move(c.output);
  s.n_predict = c.n_predict;
  s.sampling = c.sampling;
  // Each token it generated took one random draw (with a temperature): the new last stage's
  // sampler skips them and continues the same stream.
  if (s.sampling.temperature > 0) s.sampling.draws_done = s.output.size();
  s.chat_template = std::move(c.chat_template);
  s.reply = c.reply;
  s.start = c.start;
  s.first_token = c.first_token;
  s.pace = DraftPace(draft_pace_);
  sessions_.emplace(next_seq_++, std::move(s));
}

bool Scheduler::has_work() const {
  for (const auto& [seq, s] : sessions_)
    if (s.admitted && (s.pending || s.prompt_sent < s.prompt.size())) return true;
  return admitted() + draining_.size() < static_cast<size_t>(max_sequences_) && queued() > 0;
}

bool Scheduler::step() {
  if (!stage_.loaded() || sessions_.empty()) return false;
  admit();
  const int room_total = stage_.max_batch();
  // Decoding conversations (waiting or in flight) split into one micro-batch per stage.
  int decoding = 0;
  for (const auto& [seq, s] : sessions_) decoding += s.admitted && s.prompt_sent == s.prompt.size() ? 1 : 0;
  const int micro_batch = std::max(1, (decoding + n_stages_ - 1) / n_stages_);
  int decode_tokens = 0;
  Batch batch;
  // Round-robin from a rotating start so that no conversation waits behind the others.
  std::vector<uint64_t> order;
  for (const auto& [seq, s] : sessions_) order.push_back(seq);
  const size_t start = static_cast<size_t>(round_robin_++ % order.size());
  for (size_t k = 0; k < order.size(); ++k) {
    const uint64_t seq = order[(start + k) % order.size()];
    Session& s = sessions_.at(seq);
    if (!s.admitted) continue;
    const int room = room_total - batch.n_tokens();
    if (room <= 0) break;
    if (s.pending) {
      if (decode_tokens == micro_batch || room < 1 + s.resend) continue;
      ++decode_tokens;
      s.fed.push_back(*s.pending);
      s.pending.reset();
      s.draft = draft_for(seq, s, room - 1 - s.resend);
      const int drafts = static_cast<int>(s.draft.size());
      // Recurrent stages went back to their state before the last draft: its accepted part again.
      const int from = s.next_pos - s.resend, n = s.resend + 1 + drafts;
      s.sent(from, n, drafts);
      batch.chunks.push_back({seq, from, n, false, true, s.sampling, false, drafts});
      batch.tokens.insert(batch.tokens.end(), s.fed.end() - (s.resend + 1), s.fed.end());
      batch.tokens.insert(batch.tokens.end(), s.draft.begin(), s.draft.end());
      s.next_pos++;
      s.resent = s.resend;
      s.resend = 0;
      s.in_flight = true;
      s.decoding = true;
    } else if (s.prompt_sent < s.prompt.size()) {
      const int n = static_cast<int>(
          std::min<size_t>({s.prompt.size() - s.prompt_sent, static_cast<size_t>(room), static_cast<size_t>(kPrefillChunk)}));
      const bool last = s.prompt_sent + static_cast<size_t>(n) == s.prompt.size();
      // A request that continues a kept cache starts at its end: the last stage then needs to be
      // told to start a new sampler.
      const bool restarts = !s.started && s.prompt_sent > 0;
      s.sent(static_cast<int>(s.prompt_sent), n);
      batch.chunks.push_back({seq, static_cast<int>(s.prompt_sent), n, true, last, s.sampling, restarts});
      const auto from = s.prompt.begin() + static_cast<long>(s.prompt_sent);
      batch.tokens.insert(batch.tokens.end(), from, from + n);
      s.fed.insert(s.fed.end(), from, from + n);
      s.prompt_sent += static_cast<size_t>(n);
      s.started = true;
      if (last) s.next_pos = static_cast<int>(s.prompt.size()), s.in_flight = true;
    }
  }
  if (batch.chunks.empty()) return false;
  StageOutput out;
  try {
    out = stage_.compute(batch);
  } catch (const std::invalid_argument& e) {
    std::vector<uint64_t> seqs;
    for (const auto& c : batch.chunks) seqs.push_back(c.seq);
    fail(std::string("the head's stage refused the batch: ") + e.what(), ErrorCategory::INTERNAL, seqs);
    return true;
  }
  if (stage_.has_output()) on_sampled(out.sampled);
  else if (!stage_.push_forward(batch, out.hidden)) {
    std::vector<uint64_t> seqs;
    for (const auto& c : batch.chunks) seqs.push_back(c.seq);
    fail("the next stage does not take data (is it down?)", ErrorCategory::UNAVAILABLE, seqs);
  }
  return true;
}

std::vector<int32_t> Scheduler::draft_for(uint64_t seq, Session& s, int room) {
  totals_.decode_passes++;
  s.passes++;
  if (!drafts_) return {};
  // No further than the context, the tokens still wanted, and the batch allow.
  const int k = std::min({s.pace.next(), room, n_ctx_ - s.next_pos - 1, s.n_predict - s.generated - 1});
  std::vector<int32_t> draft;
  const auto t0 = Steady::now();
  if (k > 0) draft = drafts_->propose(seq, s.fed, k);
  s.drafting = std::chrono::duration_cast<std::chrono::nanoseconds>(Steady::now() - t0);
  if (draft.size() > static_cast<size_t>(std::max(0, k))) draft.resize(static_cast<size_t>(std::max(0, k)));
  if (draft.empty()) s.pace.plain_step(s.resend == 0);
  totals_.tokens_drafted += draft.size();
  return draft;
}

void Scheduler::on_sampled(const std::vector<SampledToken>& tokens) {
  for (const SampledToken& t : tokens) {
    if (auto d = draining_.find(t.seq); d != draining_.end()) {
      cache_.keep(t.seq, std::move(d->second.tokens), d->second.reach);  // the token of a request that ended: dropped
      draining_.erase(d);
      continue;
    }
    auto it = sessions_.find(t.seq);
    if (it == sessions_.end()) continue;  // failed meanwhile
    Session& s = it->second;
    s.in_flight = false;
    if (s.generated == 0) s.first_token = Steady::now();
    // The accepted part of the draft is in every stage's cache now; the rest is overwritten by
    // the next chunk, which starts right after it. (A peer claiming more than was sent gets no more.)
    const std::vector<int32_t> draft = std::move(s.draft);
    s.draft.clear();
    const int accepted = std::min(t.accepted, static_cast<int>(draft.size()));
    // Recurrent stages hold the state after the whole chunk: right if all of the draft was
    // accepted, else they go back to the state before the draft, and the accepted part goes again.
    if (resend_accepted_ && accepted < static_cast<int>(draft.size())) s.resend = accepted;
    // A decode step's cycle, from the conversation's previous result: its drafting and its pass.
    const auto now = Steady::now();
    // Tokens sent again are what the draft before cost: a step carrying them counts as drafting's.
    if (s.decoding && s.last_result) {
      const auto cycle = now - *s.last_result;
      s.pace.timed(static_cast<int>(draft.size()) + s.resent, accepted + 1, std::chrono::duration<double>(cycle).count());
      // The pass alone: less the head's time proposing a draft (which may have proposed nothing).
      const auto ns = static_cast<uint64_t>(
          std::max<int64_t>(0, (std::chrono::duration_cast<std::chrono::nanoseconds>(cycle) - s.drafting).count()));
      if (sessions_.size() == 1 && draft.empty() && s.resent == 0) {
        totals_.lone_passes++;
        totals_.lone_pass_ns += ns;
      } else if (sessions_.size() == 1 && !draft.empty()) {
        totals_.lone_draft_passes++;
        totals_.lone_draft_rows += draft.size() + static_cast<size_t>(s.resent) + 1;
        totals_.lone_draft_ns += ns;
      }
    }
    s.decoding = false;
    s.last_result = now;
    if (!draft.empty()) s.pace.checked(static_cast<int>(draft.size()), accepted);
    totals_.tokens_accepted += static_cast<uint64_t>(accepted);
    bool going = true;
    for (int i = 0; i < accepted && going; ++i) {
      s.fed.push_back(draft[static_cast<size_t>(i)]);
      s.next_pos++;
      going = deliver(t.seq, s, draft[static_cast<size_t>(i)]);
    }
    if (going && deliver(t.seq, s, t.token)) s.pending = t.token;
  }
}

bool Scheduler::deliver(uint64_t seq, Session& s, int32_t token) {
  s.output.push_back(token);
  if (tokenizer_.vocab().is_end_of_generation(token)) {
    finish(seq, "stop");
    return false;
  }
  s.generated++;
  totals_.tokens_generated++;
  runtime::ReplyPiece shown = s.reply.next(token, tokenizer_.piece(token));
  emit_({.client = s.client,
         .request_id = s.request_id,
         .token = token,
         .piece = std::move(shown.text),
         .reasoning = shown.part == runtime::ReplyPart::kReasoning});
  if (s.generated >= s.n_predict || s.next_pos >= n_ctx_) {
    finish(seq, "length");
    return false;
  }
  return true;
}

void Scheduler::cancel(const std::string& client, uint64_t request_id) {
  for (const auto& [seq, s] : sessions_) {
    if (s.client == client && s.request_id == request_id) {
      finish(seq, "cancelled");
      return;
    }
  }
}

void Scheduler::finish(uint64_t seq, const std::string& reason, const std::string& error, ErrorCategory category) {
  auto it = sessions_.find(seq);
  if (it == sessions_.end()) return;
  const Session& s = it->second;
  GenerationEvent done{.client = s.client,
                       .request_id = s.request_id,
                       .done = true,
                       .error = error,
                       .category = category,
                       .finish_reason = reason,
                       .chat_template = s.chat_template};
  done.prompt_tokens = static_cast<int>(s.original_prompt);
  done.cached_tokens = static_cast<int>(std::min(s.cached, s.original_prompt));
  done.generated_tokens = s.generated;
  done.decode_passes = s.passes;
  const auto now = Steady::now();
  if (s.generated > 0) {
    done.ttft_ms = ms_between(s.start, s.first_token);
    const double decode_ms = ms_between(s.first_token, now);
    done.decode_tok_s = s.generated > 1 && decode_ms > 0 ? (s.generated - 1) / (decode_ms / 1000) : 0;
    totals_.last_ttft_ms = done.ttft_ms;
    totals_.last_decode_tok_s = done.decode_tok_s;
  }
  emit_(done);
  if (drafts_) drafts_->forget(seq);
  if (stage_.loaded() && s.admitted) keep_or_release(seq, s, reason);
  sessions_.erase(it);
}

void Scheduler::keep_or_release(uint64_t seq, const Session& s, const std::string& reason) {
  Kept k = kept(s);
  // After an error the caches may be anywhere, or their stage gone.
  if (reason == "error" || k.tokens.empty()) stage_.release({seq});
  else if (s.in_flight) draining_[seq] = std::move(k);
  else cache_.keep(seq, std::move(k.tokens), k.reach);
}

// Recurrent stages continue a sequence only where their state is: after its last chunk, or at
// the checkpoint before that chunk's draft. The last chunk may end past the fed tokens (a draft
// cut short, one that ended the reply inside it, one still in flight), and reach, the furthest
// position ever stored, may stay past them after a chunk went back: the sequence is kept as far
// as the state a chunk can start from (none: freed).
Scheduler::Kept Scheduler::kept(const Session& s) const {
  if (!resend_accepted_) return {s.fed, static_cast<size_t>(s.reach)};
  const int fed = static_cast<int>(s.fed.size());
  const int at = s.end <= fed ? s.end : s.checkpoint <= fed ? s.checkpoint : -1;
  if (at <= 0) return {};
  return {{s.fed.begin(), s.fed.begin() + at}, static_cast<size_t>(at)};
}

void Scheduler::fail(const std::string& message, ErrorCategory category, const std::vector<uint64_t>& seqs) {
  std::vector<uint64_t> which = seqs;
  if (which.empty())
    for (const auto& [seq, s] : sessions_) which.push_back(seq);
  for (uint64_t seq : which) finish(seq, "error", message, category);
  // A stage that failed a sequence may have failed one that was ending; when all fail, nothing is
  // worth keeping.
  std::vector<uint64_t> dropped;
  for (auto d = draining_.begin(); d != draining_.end();) {
    if (seqs.empty() || std::find(seqs.begin(), seqs.end(), d->first) != seqs.end())
      dropped.push_back(d->first), d = draining_.erase(d);
    else ++d;
  }
  if (seqs.empty())
    for (uint64_t seq : cache_.clear()) dropped.push_back(seq);
  if (!dropped.empty() && stage_.loaded()) stage_.release(dropped);
}

}  // namespace hearth::cluster
