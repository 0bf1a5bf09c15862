// The head's scheduler on real stages in-process: a conversation's next turn reuses the caches its
// last turn left on every stage, and generates exactly what a prefill from scratch generates.
#include <doctest/doctest.h>

#include <memory>
#include <random>

#include "cluster/prompt_cache.h"
#include "cluster/scheduler.h"
#include "runtime/format/gguf.h"
#include "runtime/kernels/thread_pool.h"
#include "runtime/model/kv_layout.h"
#include "runtime/model/model_config.h"
#include "runtime/model/model_maker.h"
#include "runtime/model/weights.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/reply_filter.h"
#include "runtime/text/tokenizer.h"
#include "runtime/text/vocab.h"
#include "tests/test_util.h"

using namespace hearth::cluster;
using hearth::runtime::SamplingParams;
using hearth::test::TempDir;

namespace {

// A pipeline of StageHosts behind the head's LocalStage seam: the head's stage computes, and
// push_forward runs the later stages at once, holding their sampled tokens until the test hands
// them back (as results arrive at the head, later).
struct Pipeline final : LocalStage {
  std::vector<std::unique_ptr<StageHost>> hosts;
  std::vector<SampledToken> results;
  std::vector<uint64_t> released;

  void load(uint64_t, const std::string&, const hearth::runtime::StageSpec&, const hearth::runtime::StageOptions&,
            const hearth::cluster::NextHop&, const hearth::cluster::StepTime&) override {}
  void unload() override {}
  bool loaded() const override { return true; }
  int max_batch() const override { return hosts.front()->max_batch(); }
  bool has_output() const override { return hosts.size() == 1; }
  StageOutput compute(const Batch& batch) override { return hosts.front()->run(batch); }
  bool push_forward(const Batch& batch, const std::vector<float>& hidden) override {
    Batch b = batch;
    b.hidden = hidden;
    for (size_t i = 1; i < hosts.size(); ++i) {
      StageOutput out = hosts[i]->run(b);
      b.hidden = std::move(out.hidden);
      results.insert(results.end(), out.sampled.begin(), out.sampled.end());
    }
    return true;
  }
  void release(const std::vector<uint64_t>& seqs) override {
    for (uint64_t seq : seqs) {
      for (auto& h : hosts) h->release(seq);
      released.push_back(seq);
    }
  }
  StageCounters counters() const override { return {}; }
};

struct Model {
  hearth::runtime::GgufFile file;
  hearth::runtime::ModelConfig config;
  hearth::runtime::Tokenizer tokenizer;
};

std::unique_ptr<Model> open_model(const std::string& path) {
  auto file = hearth::runtime::GgufFile::open(path);
  auto config = hearth::runtime::read_model_config(file);
  hearth::runtime::Tokenizer tok(hearth::runtime::load_vocab(file.metadata()));
  return std::make_unique<Model>(Model{std::move(file), std::move(config), std::move(tok)});
}

// Layers cut at `cuts` (e.g. {2} = two stages [0,2) and [2,n)).
std::unique_ptr<Pipeline> make_pipeline(const Model& m, const std::vector<int>& cuts, hearth::runtime::ThreadPool& pool,
                                        int max_batch = 64) {
  auto p = std::make_unique<Pipeline>();
  std::vector<int> bounds{0};
  bounds.insert(bounds.end(), cuts.begin(), cuts.end());
  bounds.push_back(m.config.n_layer);
  for (size_t i = 0; i + 1 < bounds.size(); ++i) {
    const hearth::runtime::StageSpec spec{bounds[i], bounds[i + 1], i == 0, i + 2 == bounds.size()};
    p->hosts.push_back(std::make_unique<StageHost>(
        std::make_shared<hearth::runtime::StageWeights>(m.file, m.config, spec),
        hearth::runtime::StageOptions{.n_ctx = 256, .max_batch = max_batch, .max_sequences = 4}, pool));
  }
  return p;
}

struct Reply {
  std::vector<int32_t> tokens;
  std::vector<GenerationEvent> events;  // one per token
  GenerationEvent done;
};

// Drives a scheduler and its pipeline: results go back to the scheduler after every step.
struct Driver {
  Pipeline& pipeline;
  std::vector<GenerationEvent> events;
  Scheduler scheduler;
  // The stages go back as far as their caches allow, as the head tells its scheduler.
  Driver(Pipeline& p, const Model& m, int max_sequences, std::unique_ptr<DraftSource> drafts = nullptr,
         DraftPaceOptions pace = {})
      : pipeline(p),
        scheduler(
            p, m.tokenizer, 256, static_cast<int>(p.hosts.size()), max_sequences,
            hearth::runtime::kv_layout(m.config, 0, m.config.n_layer, 256, p.max_batch()),
            [this](const GenerationEvent& e) { events.push_back(e); }, std::move(drafts), pace) {}

  void deliver() {
    auto results = std::move(pipeline.results);
    pipeline.results.clear();
    scheduler.on_sampled(results);
  }
  Reply generate(uint64_t request_id, const std::vector<int32_t>& prompt, int n, const SamplingParams& sampling,
                 hearth::runtime::ReplyFilter reply = {}) {
    scheduler.add("client", request_id, prompt, n, sampling, "", std::move(reply));
    Reply r;
    for (int guard = 0; guard < 10000; ++guard) {
      scheduler.step();
      deliver();
      for (const auto& e : events) {
        if (e.request_id != request_id) continue;
        if (e.done) {
          r.done = e;
          events.clear();
          return r;
        }
        r.tokens.push_back(e.token);
        r.events.push_back(e);
      }
      std::erase_if(events, [&](const GenerationEvent& e) { return e.request_id == request_id; });
    }
    FAIL("the generation did not end");
    return r;
  }
};

// The "tiny" preset with weights large enough that greedy paths do not sit on near-ties.
hearth::runtime::MakeModelOptions tiny_model(hearth::runtime::TensorType type = hearth::runtime::TensorType::F32) {
  hearth::runtime::MakeModelOptions o;
  o.shape = *hearth::runtime::random_model_preset("tiny");
  o.weight_std = 0.08f;
  o.type = type;
  return o;
}

std::vector<int32_t> random_tokens(int n, uint32_t seed, int n_vocab) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(3, n_vocab - 1);  // no BOS/EOS
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(rng);
  return t;
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<int32_t> head_of(const std::vector<int32_t>& a, size_t n) { return {a.begin(), a.begin() + static_cast<long>(n)}; }

// What a prefill from scratch generates: new stages, a new scheduler.
Reply fresh(const Model& m, const std::vector<int>& cuts, const std::vector<int32_t>& prompt, int n, const SamplingParams& s) {
  hearth::runtime::ThreadPool pool(2);
  auto p = make_pipeline(m, cuts, pool);
  Driver h(*p, m, 4);
  return h.generate(1, prompt, n, s);
}

std::vector<std::pair<const char*, SamplingParams>> samplings() {
  SamplingParams greedy;
  greedy.temperature = 0;
  SamplingParams seeded;
  seeded.temperature = 0.9f;
  seeded.seed = 7;
  SamplingParams penalised = seeded;
  penalised.repeat_penalty = 1.3f;
  penalised.repeat_last_n = 16;
  return {{"greedy", greedy}, {"seeded", seeded}, {"seeded, repetition penalty over 16", penalised}};
}

// Drafts from a fixed script: what follows the history in it, with `wrong` added to every token
// but the first `right` of a draft (wrong 0: the target's own continuation, every draft accepted;
// 1: a draft that never agrees, or that agrees `right` tokens and no further).
struct ScriptSource final : DraftSource {
  std::vector<int32_t> script;
  int wrong = 0, right = 0, n_vocab = 0;
  std::vector<int32_t> propose(uint64_t, std::span<const int32_t> history, int k) override {
    if (history.size() >= script.size() || !std::equal(history.begin(), history.end(), script.begin())) return {};
    std::vector<int32_t> out;
    for (size_t i = history.size(); i < script.size() && out.size() < static_cast<size_t>(k); ++i)
      out.push_back((script[i] + (out.size() < static_cast<size_t>(right) ? 0 : wrong)) % n_vocab);
    return out;
  }
  std::string name() const override { return "script"; }
};

std::unique_ptr<DraftSource> script_source(const std::vector<int32_t>& prompt, const std::vector<int32_t>& reply, int wrong,
                                           int V, int right = 0) {
  auto s = std::make_unique<ScriptSource>();
  s->script = concat(prompt, reply);
  s->wrong = wrong;
  s->right = right;
  s->n_vocab = V;
  return s;
}

// A tiny Qwen 3.5-shaped model: delta-net layers, and full attention every 4th layer.
std::unique_ptr<Model> open_hybrid_model(TempDir& dir) {
  hearth::runtime::MakeModelOptions o;
  o.shape = *hearth::runtime::random_model_preset("tiny");
  o.arch = "qwen35";
  o.weight_std = 0.08f;
  auto m = open_model(hearth::test::make_model(dir, "q.gguf", o));
  REQUIRE(m->config.full_attention_interval > 0);
  return m;
}

// Tokens a turn's caches hold after it: the prompt and the generated tokens, but the last of a
// reply cut by its length (never fed back; an end-of-generation token is not among `tokens`).
size_t held_after(const std::vector<int32_t>& prompt, const Reply& r) {
  return prompt.size() + r.tokens.size() - (r.done.finish_reason == "length" ? 1 : 0);
}

}  // namespace

TEST_SUITE("scheduler") {
  TEST_CASE("the prompt cache takes the kept sequence with the longest shared prefix, and frees the least recently kept") {
    PromptCache c(1000);
    c.keep(1, {5, 6, 7, 8});
    c.keep(2, {5, 6, 9, 9, 9, 9});
    c.keep(3, {1, 2, 3});
    // Shares 3 of sequence 1's 4 tokens, 2 of sequence 2's 6 (too few to take it from its conversation).
    auto hit = c.take(std::vector<int32_t>{5, 6, 7, 1, 1}, 4);
    REQUIRE(hit);
    CHECK(hit->seq == 1);
    CHECK(hit->reuse == 3);
    CHECK(c.size() == 2);
    // The reuse is capped where the caller must compute.
    hit = c.take(std::vector<int32_t>{1, 2, 3}, 2);
    REQUIRE(hit);
    CHECK(hit->seq == 3);
    CHECK(hit->reuse == 2);
    CHECK_FALSE(c.take(std::vector<int32_t>{7, 7}, 1));
    c.keep(4, {7});
    c.keep(2, {5, 6, 9});  // kept again: now the most recent
    CHECK(c.evict_oldest() == 4);
    CHECK(c.evict_oldest() == 2);
    CHECK_FALSE(c.evict_oldest());
  }

  TEST_CASE("without rewinding, only a prompt that continues all of a kept sequence reuses it") {
    PromptCache c(0);
    c.keep(1, {5, 6, 7, 8});
    CHECK_FALSE(c.take(std::vector<int32_t>{5, 6, 7, 9, 9}, 4));
    CHECK_FALSE(c.take(std::vector<int32_t>{5, 6, 7, 8, 9}, 3));  // the caller must compute from token 3
    auto hit = c.take(std::vector<int32_t>{5, 6, 7, 8, 9}, 4);
    REQUIRE(hit);
    CHECK(hit->reuse == 4);
  }

  TEST_CASE("the prompt cache reuses a kept sequence only as far back as the stages can go") {
    PromptCache c(2);
    c.keep(1, {5, 6, 7, 8});
    auto hit = c.take(std::vector<int32_t>{5, 6, 9, 9}, 4);  // back 2: allowed
    REQUIRE(hit);
    CHECK(hit->reuse == 2);
    c.keep(1, {5, 6, 7, 8});
    c.keep(2, {1, 2, 3, 4, 5, 6});
    CHECK_FALSE(c.take(std::vector<int32_t>{1, 2, 3, 9}, 3));  // back 3: sequence 2 stays kept
    CHECK(c.size() == 2);
    hit = c.take(std::vector<int32_t>{5, 6, 7, 8, 9}, 3);  // back 1
    REQUIRE(hit);
    CHECK(hit->seq == 1);
    CHECK(hit->reuse == 3);
    CHECK(hit->reach == 4);
    // Counted from the furthest the stages stored, not from the kept tokens' end.
    c.keep(3, {5, 6, 7, 8}, 6);
    CHECK_FALSE(c.take(std::vector<int32_t>{5, 6, 7, 9}, 4));  // 3 back from 6
    hit = c.take(std::vector<int32_t>{5, 6, 7, 8, 9}, 4);
    REQUIRE(hit);
    CHECK(hit->reach == 6);
  }

  TEST_CASE("a sliding-window model whose rings wrap: kept turns, deep edits and drafts give what a fresh run does") {
    // Stages of 8 tokens a step keep rings of 4 + 8 rows: they go back 8 positions at most, and a
    // kept conversation is reused only to within 8 - 4 (the longest draft) of its end.
    TempDir dir;
    hearth::runtime::MakeModelOptions o = tiny_model();
    o.arch = "gemma3";
    o.sliding_window = 4;
    const std::string path = hearth::test::make_model(dir, "swa.gguf", o);
    const auto m = open_model(path);
    REQUIRE(m->config.n_swa == 4);
    const int V = m->config.n_vocab;
    const DraftTarget target{.vocab = m->tokenizer.vocab(), .n_ctx = 256, .max_sequences = 4, .threads = 1};
    // Drafts from n-grams, and from a draft model with sliding-window layers of its own.
    for (const std::string& source : {std::string("ngram"), path})
      for (const std::vector<int>& cuts : std::vector<std::vector<int>>{{}, {2}}) {
        for (const auto& [name, sampling] : samplings()) {
          CAPTURE(source);
          CAPTURE(cuts.size() + 1);
          CAPTURE(std::string(name));
          hearth::runtime::ThreadPool pool(2);
          auto p = make_pipeline(*m, cuts, pool, 8);
          Driver head(*p, *m, 4, make_draft_source(source, target), {.max_draft = 4, .first_draft = 4});
          const auto phrase = random_tokens(9, 11, V);
          const auto p1 = concat(concat(concat(phrase, phrase), phrase), random_tokens(6, 12, V));
          const Reply r1 = head.generate(1, p1, 12, sampling);
          CHECK(r1.tokens == fresh(*m, cuts, p1, 12, sampling).tokens);
          const auto p2 = concat(concat(p1, r1.tokens), random_tokens(10, 13, V));
          const Reply r2 = head.generate(2, p2, 12, sampling);
          // A repetition penalty's sampler sees the prompt's last 16 tokens computed again: 5 of
          // them before the kept sequence's end, within reach or not as the last draft went.
          const bool penalty = sampling.repeat_penalty != 1.0f;
          if (!penalty) CHECK(r2.done.cached_tokens > 0);
          CHECK(r2.tokens == fresh(*m, cuts, p2, 12, sampling).tokens);
          // An edit 20 tokens back: deeper than the rings reach, so the prompt is computed anew.
          const auto p3 = concat(head_of(p2, p2.size() - 20), random_tokens(7, 14, V));
          const Reply r3 = head.generate(3, p3, 12, sampling);
          CHECK(r3.done.cached_tokens == 0);
          CHECK(r3.tokens == fresh(*m, cuts, p3, 12, sampling).tokens);
          // A regenerate goes back over the 12-token reply too: computed anew, to the same tokens.
          const Reply r4 = head.generate(4, p3, 12, sampling);
          CHECK(r4.done.cached_tokens == 0);
          CHECK(r4.tokens == r3.tokens);
          // A turn that ends short of where the kept one reached, then an edit a few tokens before
          // its end but further from that reach: what a fresh run gives, never an error.
          const auto kept = concat(p3, head_of(r4.tokens, 11));
          const auto p5 = concat(head_of(kept, kept.size() - 6), random_tokens(1, 15, V));
          const Reply r5 = head.generate(5, p5, 1, sampling);
          CHECK(r5.done.finish_reason == "length");
          const auto p6 = concat(head_of(p5, p5.size() - 4), random_tokens(6, 16, V));
          const Reply r6 = head.generate(6, p6, 8, sampling);
          CHECK(r6.done.finish_reason == "length");
          CHECK(r6.tokens == fresh(*m, cuts, p6, 8, sampling).tokens);
        }
      }
  }

  TEST_CASE("a conversation's next turns prefill only their new tokens and generate what a prefill from scratch does") {
    TempDir dir;
    const auto m = open_model(hearth::test::make_model(dir, "m.gguf", tiny_model()));
    const int V = m->config.n_vocab;
    for (const std::vector<int>& cuts : std::vector<std::vector<int>>{{}, {2}, {1, 3}}) {
      for (const auto& [name, sampling] : samplings()) {
        CAPTURE(cuts.size() + 1);
        CAPTURE(name);
        hearth::runtime::ThreadPool pool(2);
        auto p = make_pipeline(*m, cuts, pool);
        Driver head(*p, *m, 4);
        const size_t computed = sampling.repeat_penalty != 1.0f ? 16 : 1;
        // Turn 1, then turn 2 extends it (the history with the reply, then a new message).
        const auto p1 = random_tokens(30, 1, V);
        const Reply r1 = head.generate(1, p1, 12, sampling);
        CHECK(r1.done.cached_tokens == 0);
        const auto p2 = concat(concat(p1, r1.tokens), random_tokens(20, 2, V));
        const Reply r2 = head.generate(2, p2, 12, sampling);
        CHECK(r2.done.cached_tokens == static_cast<int>(std::min(held_after(p1, r1), p2.size() - computed)));
        CHECK(r2.tokens == fresh(*m, cuts, p2, 12, sampling).tokens);
        // An edited last message: everything before the edit is reused.
        const auto p3 = concat(head_of(p2, p2.size() - 5), random_tokens(7, 3, V));
        const Reply r3 = head.generate(3, p3, 12, sampling);
        CHECK(r3.done.cached_tokens == static_cast<int>(std::min(p2.size() - 5, p3.size() - computed)));
        CHECK(r3.tokens == fresh(*m, cuts, p3, 12, sampling).tokens);
        // A regenerate: the same prompt again, all but its last token(s) cached.
        const Reply r4 = head.generate(4, p3, 12, sampling);
        CHECK(r4.done.cached_tokens == static_cast<int>(p3.size() - computed));
        CHECK(r4.tokens == r3.tokens);
        CHECK(p->released.empty());
      }
    }
  }

  TEST_CASE("kept caches stay within the plan's streams: a new conversation frees the least recently used") {
    TempDir dir;
    const auto m = open_model(hearth::test::make_model(dir, "m.gguf", {.shape = *hearth::runtime::random_model_preset("tiny")}));
    hearth::runtime::ThreadPool pool(2);
    auto p = make_pipeline(*m, {2}, pool);
    Driver head(*p, *m, 2);
    SamplingParams greedy;
    greedy.temperature = 0;
    const int V = m->config.n_vocab;
    const auto a = random_tokens(20, 10, V), b = random_tokens(20, 11, V), c = random_tokens(20, 12, V);
    const Reply ra = head.generate(1, a, 4, greedy);
    const Reply rb = head.generate(2, b, 4, greedy);
    CHECK(head.scheduler.kept() == 2);
    CHECK(p->released.empty());
    // A conversation that shares only a short opening with a (system prompt) takes no cache from it.
    const auto d = concat(head_of(a, 3), random_tokens(30, 13, V));
    CHECK(head.generate(3, d, 4, greedy).done.cached_tokens == 0);
    REQUIRE(p->released.size() == 1);  // a's: the least recently used
    CHECK(head.scheduler.kept() == 2);
    // b is still kept; a is not.
    CHECK(head.generate(4, concat(b, rb.tokens), 4, greedy).done.cached_tokens == static_cast<int>(held_after(b, rb)));
    CHECK(head.generate(5, concat(a, ra.tokens), 4, greedy).done.cached_tokens == 0);
    CHECK(head.generate(6, c, 4, greedy).tokens == fresh(*m, {2}, c, 4, greedy).tokens);
    CHECK(head.scheduler.kept() <= 2);
  }

  TEST_CASE("a reasoning model's reply reaches the client as reasoning, then answer, the markers hidden") {
    TempDir dir;
    const auto m = open_model(hearth::test::make_model(dir, "m.gguf", tiny_model()));
    const int V = m->config.n_vocab;
    SamplingParams greedy;
    greedy.temperature = 0;
    const auto prompt = random_tokens(20, 5, V);
    hearth::runtime::ThreadPool pool(2);
    auto p = make_pipeline(*m, {2}, pool);
    Driver head(*p, *m, 4);
    const Reply plain = head.generate(1, prompt, 12, greedy);
    REQUIRE(plain.tokens.size() == 12);
    // The model's vocabulary, with the token it says 6th named </think> (and one it never says
    // <think>): a reasoning model that thinks for the first tokens, then answers.
    const int32_t close = plain.tokens[5];
    const size_t k = static_cast<size_t>(std::find(plain.tokens.begin(), plain.tokens.end(), close) - plain.tokens.begin());
    int32_t open = 3;
    while (std::find(plain.tokens.begin(), plain.tokens.end(), open) != plain.tokens.end()) ++open;
    auto pieces = m->file.metadata().get_string_array("tokenizer.ggml.tokens");
    pieces[static_cast<size_t>(close)] = "</think>";
    pieces[static_cast<size_t>(open)] = "<think>";
    hearth::runtime::GgufMetadata md;
    std::vector<hearth::runtime::GgufValue> values;
    for (const auto& t : pieces) values.push_back(hearth::runtime::GgufValue::str(t));
    md.set("tokenizer.ggml.model", hearth::runtime::GgufValue::str("llama"));
    md.set("tokenizer.ggml.tokens", hearth::runtime::GgufValue::array(hearth::runtime::GgufType::STRING, std::move(values)));
    const auto thinking = hearth::runtime::detect_chat_template("<|im_start|> </think> '<|im_start|>assistant\\n<think>\\n'");
    REQUIRE(thinking.think);
    const Reply r =
        head.generate(2, prompt, 12, greedy, hearth::runtime::ReplyFilter::for_chat(thinking, hearth::runtime::load_vocab(md)));
    CHECK(r.tokens == plain.tokens);  // what is shown changes nothing of what is generated
    std::string reasoning, answer, expected_reasoning, expected_answer;
    for (size_t i = 0; i < r.events.size(); ++i) {
      CAPTURE(i);
      CHECK(r.events[i].reasoning == (i < k));
      (r.events[i].reasoning ? reasoning : answer) += r.events[i].piece;
      if (plain.tokens[i] == close) CHECK(r.events[i].piece.empty());  // every </think>, the second too
      else (i < k ? expected_reasoning : expected_answer) += m->tokenizer.piece(plain.tokens[i]);
    }
    const auto trim = [](std::string t, bool both) {
      t.erase(0, t.find_first_not_of(" \n\t\r"));
      if (both) t.erase(t.find_last_not_of(" \n\t\r") + 1);
      return t;
    };
    CHECK(reasoning == trim(expected_reasoning, true));
    CHECK(answer == trim(expected_answer, false));
    CHECK_FALSE(reasoning.empty());
  }

  TEST_CASE("a model with recurrent layers reuses a kept cache only to continue it, with the same tokens") {
    TempDir dir;
    const auto m = open_hybrid_model(dir);
    const int V = m->config.n_vocab;
    for (const std::vector<int>& cuts : std::vector<std::vector<int>>{{}, {2}}) {
      CAPTURE(cuts.size() + 1);
      SamplingParams seeded;
      seeded.temperature = 0.9f;
      seeded.seed = 3;
      hearth::runtime::ThreadPool pool(2);
      auto p = make_pipeline(*m, cuts, pool);
      Driver head(*p, *m, 4);
      const auto p1 = random_tokens(25, 4, V);
      const Reply r1 = head.generate(1, p1, 8, seeded);
      const auto p2 = concat(concat(p1, r1.tokens), random_tokens(10, 5, V));
      const Reply r2 = head.generate(2, p2, 8, seeded);
      CHECK(r2.done.cached_tokens == static_cast<int>(held_after(p1, r1)));
      CHECK(r2.tokens == fresh(*m, cuts, p2, 8, seeded).tokens);
      // An edit cannot cut the recurrent state back: computed from scratch, same tokens.
      const auto p3 = concat(head_of(p2, p2.size() - 4), random_tokens(6, 6, V));
      const Reply r3 = head.generate(3, p3, 8, seeded);
      CHECK(r3.done.cached_tokens == 0);
      CHECK(r3.tokens == fresh(*m, cuts, p3, 8, seeded).tokens);
    }
  }

  TEST_CASE("a request cancelled while its token is in the pipeline keeps its cache once the token is back") {
    TempDir dir;
    const auto m = open_model(hearth::test::make_model(dir, "m.gguf", {.shape = *hearth::runtime::random_model_preset("tiny")}));
    hearth::runtime::ThreadPool pool(2);
    auto p = make_pipeline(*m, {2}, pool);
    Driver head(*p, *m, 4);
    SamplingParams greedy;
    greedy.temperature = 0;
    const auto prompt = random_tokens(20, 20, m->config.n_vocab);
    head.scheduler.add("client", 1, prompt, 50, greedy);
    head.scheduler.step();  // the prompt
    head.deliver();         // its first token
    head.scheduler.step();  // which goes down the pipeline
    REQUIRE(p->results.size() == 1);
    head.scheduler.cancel("client", 1);
    CHECK(head.scheduler.kept() == 0);
    head.events.clear();
    head.deliver();
    CHECK(head.events.empty());  // the token of an ended request reaches nobody
    CHECK(head.scheduler.kept() == 1);
    CHECK(p->released.empty());
    const auto next = concat(prompt, random_tokens(5, 21, m->config.n_vocab));
    const Reply r = head.generate(2, next, 6, greedy);
    CHECK(r.done.cached_tokens == static_cast<int>(prompt.size()));  // the prompt; its first token was dropped from view
    CHECK(r.tokens == fresh(*m, {2}, next, 6, greedy).tokens);
  }

  TEST_CASE("speculative decoding gives the plain tokens whether the drafts always, sometimes or never agree") {
    // Quantized weights too: a draft's rows go through the multi-token kernels, and must give the
    // logits one token at a time gives, bit for bit, or an oracle's drafts would be rejected.
    for (auto type : {hearth::runtime::TensorType::F32, hearth::runtime::TensorType::Q8_0, hearth::runtime::TensorType::Q4_0}) {
      CAPTURE(hearth::runtime::tensor_type_name(type));
      TempDir dir;
      const hearth::runtime::MakeModelOptions o = tiny_model(type);
      const std::string path = hearth::test::make_model(dir, "m.gguf", o);
      const auto m = open_model(path);
      const int V = m->config.n_vocab;
      // A draft model: another random model of the same vocabulary (it agrees now and then at most).
      hearth::runtime::MakeModelOptions other = o;
      other.seed = 99;
      other.shape.n_layer = 2;
      other.vocab_from = path;
      const std::string other_path = hearth::test::make_model(dir, "draft.gguf", other);
      const DraftTarget target{.vocab = m->tokenizer.vocab(), .n_ctx = 256, .max_sequences = 4, .threads = 1};
      // A prompt that repeats itself, so that n-gram drafts find something.
      const auto phrase = random_tokens(9, 30, V);
      const auto prompt = concat(concat(concat(phrase, phrase), phrase), head_of(phrase, 4));
      const int n = 24;
      for (const std::vector<int>& cuts : std::vector<std::vector<int>>{{}, {2}, {1, 3}}) {
        for (const auto& [name, sampling] : samplings()) {
          CAPTURE(cuts.size() + 1);
          CAPTURE(std::string(name));
          const Reply plain = fresh(*m, cuts, prompt, n, sampling);
          REQUIRE(plain.tokens.size() == static_cast<size_t>(n));
          struct Case {
            const char* source;
            std::unique_ptr<DraftSource> drafts;
          };
          std::vector<Case> cases;
          cases.push_back({"oracle", script_source(prompt, plain.tokens, 0, V)});
          cases.push_back({"never agrees", script_source(prompt, plain.tokens, 1, V)});
          cases.push_back({"ngram", make_draft_source("ngram", target)});
          cases.push_back({"draft model: the target itself", make_draft_source(path, target)});
          cases.push_back({"draft model: another random model", make_draft_source(other_path, target)});
          for (auto& c : cases) {
            CAPTURE(std::string(c.source));
            hearth::runtime::ThreadPool pool(2);
            auto p = make_pipeline(*m, cuts, pool);
            Driver head(*p, *m, 4, std::move(c.drafts), {.max_draft = 4, .first_draft = 4});
            const Reply r = head.generate(1, prompt, n, sampling);
            CHECK(r.tokens == plain.tokens);
            CHECK(r.done.finish_reason == "length");
            const SchedulerTotals& t = head.scheduler.totals();
            CHECK(t.tokens_generated == static_cast<uint64_t>(n));
            CHECK(t.decode_passes + 1 + t.tokens_accepted == static_cast<uint64_t>(n));  // the first token came from the prompt
            // A draft model proposes its greedy continuation: the target's own, when it samples greedily.
            const bool always = std::string(c.source) == "oracle" ||
                                (std::string(c.source) == "draft model: the target itself" && sampling.temperature == 0);
            if (always) {
              CHECK(t.tokens_accepted == t.tokens_drafted);
              CHECK(t.decode_passes <= static_cast<uint64_t>((n - 1 + 4) / 5));  // up to 4 drafts and the target's own each pass
            } else if (std::string(c.source) == "never agrees") {
              CHECK(t.tokens_drafted > 0);
              CHECK(t.tokens_accepted == 0);
            }
            // The caches hold what a plain run's do: the next turn reuses them and continues alike.
            const auto next = concat(concat(prompt, r.tokens), head_of(phrase, 5));
            const Reply r2 = head.generate(2, next, 8, sampling);
            CHECK(r2.done.cached_tokens > static_cast<int>(prompt.size()));
            CHECK(r2.tokens == fresh(*m, cuts, next, 8, sampling).tokens);
          }
        }
      }
    }
  }

  TEST_CASE("a model with recurrent layers speculates: the accepted part of a draft cut short is computed again") {
    TempDir dir;
    const auto m = open_hybrid_model(dir);
    const int V = m->config.n_vocab;
    const auto phrase = random_tokens(9, 31, V);
    const auto prompt = concat(concat(phrase, phrase), head_of(phrase, 4));
    const int n = 20;
    const DraftTarget target{.vocab = m->tokenizer.vocab(), .n_ctx = 256, .max_sequences = 4, .threads = 1};
    // Draft models with recurrent layers too: the model itself, and another of its vocabulary.
    const std::string self = dir.file("q.gguf");
    hearth::runtime::MakeModelOptions other;
    other.shape = *hearth::runtime::random_model_preset("tiny");
    other.arch = "qwen35";
    other.seed = 99;
    other.vocab_from = self;
    const std::string other_path = hearth::test::make_model(dir, "other.gguf", other);
    // Stages of recurrent layers only, of both kinds, and the whole model on the head.
    for (const std::vector<int>& cuts : std::vector<std::vector<int>>{{}, {2}, {1, 3}}) {
      for (const auto& [name, sampling] : samplings()) {
        CAPTURE(cuts.size() + 1);
        CAPTURE(std::string(name));
        const Reply plain = fresh(*m, cuts, prompt, n, sampling);
        REQUIRE(plain.tokens.size() == static_cast<size_t>(n));
        struct Case {
          const char* source;
          std::unique_ptr<DraftSource> drafts;
          int accepted_per_draft;  // -1: not known in advance
        };
        std::vector<Case> cases;
        cases.push_back({"oracle", script_source(prompt, plain.tokens, 0, V), 4});
        cases.push_back({"never agrees", script_source(prompt, plain.tokens, 1, V), 0});
        cases.push_back({"agrees twice, then not", script_source(prompt, plain.tokens, 1, V, 2), 2});
        cases.push_back({"ngram", make_draft_source("ngram", target), -1});
        // Its greedy continuation is the model's own when the model samples greedily.
        cases.push_back({"draft model: the model itself", make_draft_source(self, target), sampling.temperature == 0 ? 4 : -1});
        cases.push_back({"draft model: another", make_draft_source(other_path, target), -1});
        for (auto& c : cases) {
          CAPTURE(std::string(c.source));
          hearth::runtime::ThreadPool pool(2);
          auto p = make_pipeline(*m, cuts, pool);
          Driver head(*p, *m, 4, std::move(c.drafts), {.max_draft = 4, .first_draft = 4});
          const Reply r = head.generate(1, prompt, n, sampling);
          CHECK(r.tokens == plain.tokens);
          const SchedulerTotals& t = head.scheduler.totals();
          CHECK(t.decode_passes + 1 + t.tokens_accepted == static_cast<uint64_t>(n));
          if (c.accepted_per_draft == 2) {
            CHECK(t.tokens_accepted > 0);
            CHECK(t.tokens_accepted < t.tokens_drafted);
          } else if (c.accepted_per_draft >= 0) {
            CHECK(t.tokens_accepted == (c.accepted_per_draft == 0 ? 0 : t.tokens_drafted));
            CHECK(t.tokens_drafted > 0);
          }
          // The next turn continues the kept caches from where the recurrent state is (after the
          // last chunk, or its checkpoint when the last draft was cut short) and gives a fresh
          // run's tokens. (Not with a repetition penalty: its window is computed again, and a
          // recurrent state cannot go back over it.)
          const auto next = concat(concat(prompt, r.tokens), head_of(phrase, 5));
          const Reply r2 = head.generate(2, next, 6, sampling);
          if (sampling.repeat_penalty == 1.0f) CHECK(r2.done.cached_tokens > static_cast<int>(prompt.size()));
          CHECK(r2.tokens == fresh(*m, cuts, next, 6, sampling).tokens);
        }
      }
    }
  }

  TEST_CASE("a model with recurrent layers whose reply ends inside an accepted draft keeps its caches from before it") {
    TempDir dir;
    const auto m = open_hybrid_model(dir);
    const int V = m->config.n_vocab;
    SamplingParams greedy;
    greedy.temperature = 0;
    const auto prompt = random_tokens(12, 50, V);
    const Reply plain = fresh(*m, {2}, prompt, 24, greedy);
    // A token of the reply that a draft proposes after its first and before its last (drafts of
    // 4 accepted whole: the model's own tokens come at 5, 10, ...), not seen before it, becomes
    // an end of generation.
    size_t j = 2;
    while (j < plain.tokens.size() && (j % 5 < 2 || j % 5 == 4 ||
                                       std::find(plain.tokens.begin(), plain.tokens.begin() + static_cast<long>(j),
                                                 plain.tokens[j]) != plain.tokens.begin() + static_cast<long>(j)))
      ++j;
    REQUIRE(j < plain.tokens.size());
    hearth::runtime::Vocab vocab = m->tokenizer.vocab();
    vocab.eot = plain.tokens[j];
    m->tokenizer = hearth::runtime::Tokenizer(vocab);
    hearth::runtime::ThreadPool pool(2);
    auto p = make_pipeline(*m, {2}, pool);
    Driver head(*p, *m, 4, script_source(prompt, plain.tokens, 0, V), {.max_draft = 4, .first_draft = 4});
    const Reply r = head.generate(1, prompt, 24, greedy);
    CHECK(r.done.finish_reason == "stop");
    CHECK(r.tokens == head_of(plain.tokens, j));
    CHECK(head.scheduler.totals().tokens_accepted == head.scheduler.totals().tokens_drafted);
    // The stages hold the whole draft's state, past the reply's end: the next turn starts from
    // the state before that draft, and gives a fresh run's tokens.
    const auto next = concat(concat(prompt, r.tokens), random_tokens(6, 51, V));
    const Reply r2 = head.generate(2, next, 6, greedy);
    CHECK(r2.done.error.empty());
    CHECK(r2.done.cached_tokens > static_cast<int>(prompt.size()));
    CHECK(r2.done.cached_tokens == static_cast<int>(prompt.size() + j - j % 5 + 1));
    CHECK(r2.tokens == fresh(*m, {2}, next, 6, greedy).tokens);
  }

  TEST_CASE("conversations speculate side by side, and one that ends inside an accepted draft stops there") {
    TempDir dir;
    const auto m = open_model(hearth::test::make_model(dir, "m.gguf", tiny_model()));
    const int V = m->config.n_vocab;
    SamplingParams greedy;
    greedy.temperature = 0;
    const auto a = random_tokens(20, 40, V), b = random_tokens(15, 41, V);
    const Reply pa = fresh(*m, {2}, a, 16, greedy), pb = fresh(*m, {2}, b, 16, greedy);
    // One oracle knowing both conversations.
    struct Both final : DraftSource {
      std::unique_ptr<DraftSource> x, y;
      std::vector<int32_t> propose(uint64_t seq, std::span<const int32_t> h, int k) override {
        auto d = x->propose(seq, h, k);
        return d.empty() ? y->propose(seq, h, k) : d;
      }
      std::string name() const override { return "both"; }
    };
    auto both = std::make_unique<Both>();
    both->x = script_source(a, pa.tokens, 0, V);
    both->y = script_source(b, pb.tokens, 0, V);
    hearth::runtime::ThreadPool pool(2);
    auto p = make_pipeline(*m, {2}, pool);
    Driver head(*p, *m, 4, std::move(both), {.max_draft = 3, .first_draft = 3});
    head.scheduler.add("client", 1, a, 16, greedy);
    head.scheduler.add("client", 2, b, 7, greedy);  // ends in the middle of a draft
    std::map<uint64_t, std::vector<int32_t>> got;
    std::map<uint64_t, std::string> finish;
    for (int guard = 0; guard < 1000 && finish.size() < 2; ++guard) {
      head.scheduler.step();
      head.deliver();
      for (const auto& e : head.events) {
        if (e.done) finish[e.request_id] = e.finish_reason;
        else got[e.request_id].push_back(e.token);
      }
      head.events.clear();
    }
    CHECK(got[1] == pa.tokens);
    CHECK(got[2] == head_of(pb.tokens, 7));
    CHECK(finish[1] == "length");
    CHECK(finish[2] == "length");
    CHECK(head.scheduler.totals().tokens_accepted > 10);
  }

  TEST_CASE("a draft model must share the model's vocabulary") {
    TempDir dir;
    hearth::runtime::MakeModelOptions o;
    o.shape = *hearth::runtime::random_model_preset("tiny");
    const auto m = open_model(hearth::test::make_model(dir, "m.gguf", o));
    const DraftTarget target{.vocab = m->tokenizer.vocab(), .n_ctx = 256};
    hearth::runtime::MakeModelOptions larger = o;
    larger.shape.n_vocab = 600;
    CHECK_THROWS_WITH_AS(make_draft_source(hearth::test::make_model(dir, "v.gguf", larger), target),
                         doctest::Contains("must share the model's vocabulary"), std::invalid_argument);
    hearth::runtime::MakeModelOptions hybrid = o;  // recurrent layers go back to their checkpoint
    hybrid.arch = "qwen35";
    CHECK(make_draft_source(hearth::test::make_model(dir, "q.gguf", hybrid), target) != nullptr);
    const std::string junk = dir.file("junk.gguf");
    hearth::test::write_bytes(junk, {1, 2, 3});
    CHECK_THROWS_WITH_AS(make_draft_source(junk, target), doctest::Contains("the draft model"), std::invalid_argument);
  }
}
