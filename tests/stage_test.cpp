// Stage API: ops, attention, KV cache, pipeline splits, several sequences, bad input, memory.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>

#include "runtime/model/draft_model.h"
#include "runtime/model/generator.h"
#include "runtime/model/kv_cache.h"
#include "runtime/model/model_config.h"
#include "runtime/model/ops.h"
#include "runtime/model/stage.h"
#include "tests/test_util.h"

using namespace hearth::runtime;
using hearth::test::TempDir;

namespace {

struct Model {
  GgufFile file;
  ModelConfig config;
};

Model open_model(const std::string& path) {
  GgufFile f = GgufFile::open(path);
  ModelConfig c = read_model_config(f);
  return {std::move(f), std::move(c)};
}

std::unique_ptr<Stage> make_stage(const Model& m, int first, int last, ThreadPool& pool,
                                  StageOptions o = {.n_ctx = 128, .max_batch = 32}) {
  const StageSpec spec{first, last, first == 0, last == m.config.n_layer};
  return std::make_unique<Stage>(std::make_shared<StageWeights>(m.file, m.config, spec), o, pool);
}

std::vector<int32_t> some_tokens(int n, uint32_t seed, int n_vocab) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = static_cast<int32_t>(rng() % static_cast<uint32_t>(n_vocab));
  return t;
}

std::vector<float> run(std::span<Stage* const> stages, uint64_t seq, int pos, const std::vector<int32_t>& tokens,
                       bool all = false) {
  const SeqChunk chunk{seq, pos, static_cast<int>(tokens.size())};
  auto out = forward_chain(stages, {.chunks = {&chunk, 1}, .tokens = tokens, .all_logits = all});
  return {out.begin(), out.end()};
}

MakeModelOptions opts(TensorType t, int layers = 5) {
  MakeModelOptions o;
  o.type = t;
  o.shape.n_layer = layers;
  o.weight_std = 0.05f;  // enough signal that every layer matters to the logits
  return o;
}

uint64_t rss_file_bytes() {
  std::ifstream f("/proc/self/status");
  std::string key;
  while (f >> key) {
    if (key == "RssFile:") {
      uint64_t kb = 0;
      f >> kb;
      return kb * 1024;
    }
    std::getline(f, key);
  }
  return 0;
}

}  // namespace

TEST_SUITE("stage") {
  TEST_CASE("rope: position 0 is the identity, a pair turns by pos x frequency, dot products see relative positions") {
    const RopeSpec inv{.base = 10000.f, .n_rot = 8};
    float c[4], sn[4];
    rope_angles(1, inv, c, sn);
    CHECK(c[1] == doctest::Approx(std::cos(std::pow(10000.0, -0.25))));
    CHECK(sn[1] == doctest::Approx(std::sin(std::pow(10000.0, -0.25))));
    float x[10] = {1, 0, 0.5f, -2, 3, 4, 1, 1, 7, 9};  // the last two are past n_rot and stay
    float y[10];
    std::copy(x, x + 10, y);
    rope_apply(y, 0, inv, RopeStyle::Normal);
    for (int i = 0; i < 10; ++i) CHECK(y[i] == x[i]);
    rope_apply(y, 3, inv, RopeStyle::Normal);
    CHECK(y[0] == doctest::Approx(std::cos(3.0)));
    CHECK(y[1] == doctest::Approx(std::sin(3.0)));
    CHECK(y[8] == 7);
    CHECK(y[9] == 9);

    std::mt19937 rng(1);
    std::normal_distribution<float> d;
    float q[8], k[8];
    for (int i = 0; i < 8; ++i) q[i] = d(rng), k[i] = d(rng);
    const auto rotated_dot = [&](int m, int n) {
      float a[8], b[8];
      std::copy(q, q + 8, a);
      std::copy(k, k + 8, b);
      rope_apply(a, m, inv, RopeStyle::Normal);
      rope_apply(b, n, inv, RopeStyle::Normal);
      double s = 0;
      for (int i = 0; i < 8; ++i) s += a[i] * b[i];
      return s;
    };
    CHECK(rotated_dot(5, 2) == doctest::Approx(rotated_dot(105, 102)).epsilon(1e-4));
    CHECK(rotated_dot(5, 2) != doctest::Approx(rotated_dot(5, 3)).epsilon(1e-4));
  }

  TEST_CASE("attend_tokens over an f32, f16 or q8_0 cache equals attend_heads over its rows read as f32, bit for bit") {
    std::mt19937 rng(3);
    std::normal_distribution<float> d;
    const int n_ctx = 300, hd = 64, n_kv = 2, n_q = 3, KV = n_kv * hd;  // 300 keys: several tiles of 128
    const float sinks[n_q] = {0.5f, -1.f, 2.f};
    for (TensorType type : {TensorType::F32, TensorType::F16, TensorType::Q8_0}) {
      CAPTURE(tensor_type_name(type));
      KvCache cache(n_ctx, {KV}, {}, type);
      std::vector<float> k(KV), v(KV);
      for (int pos = 0; pos < n_ctx; ++pos) {
        for (auto& x : k) x = d(rng);
        for (auto& x : v) x = d(rng);
        cache.store(0, pos, k.data(), v.data(), best_kernels());
      }
      // The second K/V head's rows read back as f32, for the reference.
      std::vector<float> keys(static_cast<size_t>(n_ctx) * hd), values(keys.size());
      for (int pos = 0; pos < n_ctx; ++pos) {
        const KvRows kr = cache.keys(0).from(hd), vr = cache.values(0).from(hd);
        dequantize_row(type, kr.data + pos * kr.row_bytes, &keys[static_cast<size_t>(pos) * hd], hd);
        dequantize_row(type, vr.data + pos * vr.row_bytes, &values[static_cast<size_t>(pos) * hd], hd);
      }
      // Three tokens of a chunk: a window (keys 20..259), all keys to 280, and all to 299.
      const int first[] = {20, 0, 0}, count[] = {240, 281, 300};
      std::vector<float> q(3 * n_q * hd), out(q.size()), qpack(q.size()), scores(3 * n_q * n_ctx), inv(3 * n_q);
      std::vector<float> tile(kKvTileFloats);
      for (auto& x : q) x = d(rng);
      AttendToken tokens[3];
      for (int i = 0; i < 3; ++i) tokens[i] = {&q[static_cast<size_t>(i) * n_q * hd], &out[static_cast<size_t>(i) * n_q * hd], first[i], count[i]};
      attend_tokens(tokens, n_q, cache.keys(0).from(hd), cache.values(0).from(hd), hd, 0.125f, qpack.data(), scores.data(),
                    static_cast<size_t>(n_ctx), inv.data(), tile.data(), best_kernels(), sinks);
      for (int i = 0; i < 3; ++i) {
        std::vector<float> alone(static_cast<size_t>(n_q) * hd), s(static_cast<size_t>(n_q) * n_ctx);
        const size_t at = static_cast<size_t>(first[i]) * hd;
        attend_heads(tokens[i].q, n_q, &keys[at], &values[at], count[i], hd, hd, 0.125f, s.data(), static_cast<size_t>(n_ctx),
                     alone.data(), best_kernels(), sinks, score_order(type));
        CAPTURE(i);
        CHECK(std::memcmp(alone.data(), tokens[i].out, alone.size() * sizeof(float)) == 0);
      }
    }
  }

  TEST_CASE("attend_tokens over a ring of the latest positions equals it over the whole cache, bit for bit") {
    // A sliding-window layer keeps position p in row p % ring: a window that crosses the wrap is
    // read in two parts, and must give the bits one read gives.
    std::mt19937 rng(4);
    std::normal_distribution<float> d;
    const int n_ctx = 300, ring = 40, hd = 64, n_q = 2;
    const float sinks[n_q] = {0.5f, -1.f};
    for (TensorType type : {TensorType::F32, TensorType::F16, TensorType::Q8_0}) {
      CAPTURE(tensor_type_name(type));
      KvCache whole(n_ctx, {hd}, {}, type), latest(n_ctx, {hd}, {}, type, {ring});
      REQUIRE(latest.keys(0).ring == ring);
      REQUIRE(whole.keys(0).ring == 0);
      CHECK(latest.bytes() * n_ctx == whole.bytes() * ring);
      std::vector<float> k(hd), v(hd);
      int stored = 0;
      // Ends where the ring wraps mid-window (300: rows 20..39 then 0..19), at its last row (280)
      // and just after its first (241).
      for (int end : {241, 280, 300}) {
        CAPTURE(end);
        for (; stored < end; ++stored) {
          for (auto& x : k) x = d(rng);
          for (auto& x : v) x = d(rng);
          whole.store(0, stored, k.data(), v.data(), best_kernels());
          latest.store(0, stored, k.data(), v.data(), best_kernels());
        }
        const int first[] = {end - ring, end - 33, end - 10}, count[] = {ring, 20, 10};
        std::vector<float> q(3 * n_q * hd), qpack(q.size()), scores(3 * n_q * n_ctx), inv(3 * n_q), tile(kKvTileFloats);
        for (auto& x : q) x = d(rng);
        std::vector<float> from_whole(q.size()), from_ring(q.size());
        for (auto [cache, out] : {std::pair{&whole, &from_whole}, std::pair{&latest, &from_ring}}) {
          AttendToken tokens[3];
          for (int i = 0; i < 3; ++i)
            tokens[i] = {&q[static_cast<size_t>(i) * n_q * hd], &(*out)[static_cast<size_t>(i) * n_q * hd], first[i], count[i]};
          attend_tokens(tokens, n_q, cache->keys(0), cache->values(0), hd, 0.125f, qpack.data(), scores.data(),
                        static_cast<size_t>(n_ctx), inv.data(), tile.data(), best_kernels(), sinks);
        }
        CHECK(std::memcmp(from_whole.data(), from_ring.data(), from_whole.size() * sizeof(float)) == 0);
      }
    }
  }

  TEST_CASE("attend equals a naive softmax attention") {
    std::mt19937 rng(2);
    std::normal_distribution<float> d;
    const int n_keys = 37, hd = 16, stride = 48;
    std::vector<float> q(hd), keys(static_cast<size_t>(n_keys * stride)), values(keys.size()), scores(n_keys), out(hd);
    for (auto& v : q) v = d(rng);
    for (auto& v : keys) v = d(rng);
    for (auto& v : values) v = d(rng);
    attend(q.data(), keys.data(), values.data(), n_keys, hd, stride, 0.25f, scores.data(), out.data(), best_kernels());
    std::vector<double> w(n_keys);
    double sum = 0;
    for (int j = 0; j < n_keys; ++j) {
      double s = 0;
      for (int i = 0; i < hd; ++i) s += q[static_cast<size_t>(i)] * keys[static_cast<size_t>(j * stride + i)];
      sum += w[static_cast<size_t>(j)] = std::exp(0.25 * s);
    }
    for (int i = 0; i < hd; ++i) {
      double o = 0;
      for (int j = 0; j < n_keys; ++j) o += w[static_cast<size_t>(j)] / sum * values[static_cast<size_t>(j * stride + i)];
      CHECK(out[static_cast<size_t>(i)] == doctest::Approx(o).epsilon(1e-5));
    }
  }

  TEST_CASE("grouped-query attention equals full attention with the shared K/V heads duplicated") {
    TempDir dir;
    auto o = opts(TensorType::F32, 2);
    o.shape.n_head = 4;
    o.shape.n_head_kv = 2;
    const std::string gqa = hearth::test::make_model(dir, "gqa.gguf", o);
    // The same model with each K/V head copied for both query heads of its group.
    const std::string mha = dir.file("mha.gguf");
    const GgufFile src = GgufFile::open(gqa);
    const auto src_bytes = hearth::test::read_bytes(gqa);
    const int hd = o.shape.n_embd / o.shape.n_head;
    hearth::test::rewrite_gguf(gqa, mha, [](GgufMetadata& md, std::vector<GgufTensorInfo>& t) {
      md.set("llama.attention.head_count_kv", GgufValue::u32(4));
      for (auto& x : t)
        if (x.name.find("attn_k") != std::string::npos || x.name.find("attn_v") != std::string::npos) x.shape[1] *= 2;
    });
    {
      // rewrite_gguf zero-filled the widened tensors; write the duplicated rows in place.
      const GgufFile dst = GgufFile::open(mha);
      auto bytes = hearth::test::read_bytes(mha);
      const size_t row = static_cast<size_t>(o.shape.n_embd) * 4;
      for (const auto& t : dst.tensors()) {
        if (t.name.find("attn_k") == std::string::npos && t.name.find("attn_v") == std::string::npos) continue;
        const auto& s = src.require_tensor(t.name);
        for (uint64_t r = 0; r < t.shape[1]; ++r) {
          const uint64_t head = r / static_cast<uint64_t>(hd), within = r % static_cast<uint64_t>(hd);
          const uint64_t src_row = (head / 2) * static_cast<uint64_t>(hd) + within;
          std::memcpy(&bytes[t.offset + r * row], &src_bytes[s.offset + src_row * row], row);
        }
      }
      hearth::test::write_bytes(mha, bytes);
    }
    ThreadPool pool(2);
    const Model a = open_model(gqa), b = open_model(mha);
    CHECK(a.config.n_head_kv == 2);
    CHECK(b.config.n_head_kv == 4);
    auto sa = make_stage(a, 0, 2, pool), sb = make_stage(b, 0, 2, pool);
    Stage* ca[] = {sa.get()};
    Stage* cb[] = {sb.get()};
    const auto tokens = some_tokens(9, 3, a.config.n_vocab);
    const auto la = run(ca, 1, 0, tokens, true), lb = run(cb, 1, 0, tokens, true);
    REQUIRE(la.size() == lb.size());
    double diff = 0;
    for (size_t i = 0; i < la.size(); ++i) diff = std::max(diff, double(std::fabs(la[i] - lb[i])));
    CHECK(diff < 1e-5);
  }

  TEST_CASE("stages [0,2)+[2,5) and [0,1)+[1,3)+[3,5) give bit-identical logits to one stage [0,5)") {
    TempDir dir;
    for (TensorType t : {TensorType::F32, TensorType::Q4_0}) {
      CAPTURE(std::string(tensor_type_name(t)));
      const Model m = open_model(hearth::test::make_model(dir, "m.gguf", opts(t)));
      ThreadPool pool(2);
      auto whole = make_stage(m, 0, 5, pool);
      auto a = make_stage(m, 0, 2, pool), b = make_stage(m, 2, 5, pool);
      auto x = make_stage(m, 0, 1, pool), y = make_stage(m, 1, 3, pool), z = make_stage(m, 3, 5, pool);
      Stage* one[] = {whole.get()};
      Stage* two[] = {a.get(), b.get()};
      Stage* three[] = {x.get(), y.get(), z.get()};
      const auto prompt = some_tokens(12, 5, m.config.n_vocab);
      const auto ref = run(one, 1, 0, prompt, true);
      CHECK(run(two, 1, 0, prompt, true) == ref);
      CHECK(run(three, 1, 0, prompt, true) == ref);
      for (int i = 0; i < 4; ++i) {  // decode steps reuse each stage's cache
        const std::vector<int32_t> tok{static_cast<int32_t>(17 + i)};
        const auto r = run(one, 1, 12 + i, tok);
        CHECK(run(two, 1, 12 + i, tok) == r);
        CHECK(run(three, 1, 12 + i, tok) == r);
      }
    }
  }

  TEST_CASE("a KV cache larger than memory is an error that says what was asked for, not std::bad_alloc") {
#if defined(__SANITIZE_ADDRESS__)
    MESSAGE("skipped under AddressSanitizer, which aborts on allocations this large instead of failing them");
#else
    try {
      hearth::runtime::KvCache cache(4096, 1 << 24, 4096);  // ~2 PB: no machine has it
      FAIL("the allocation succeeded");
    } catch (const std::runtime_error& e) {
      const std::string what = e.what();
      CAPTURE(what);
      CHECK(what.find("16777216 tokens") != std::string::npos);
      CHECK(what.find("--ctx") != std::string::npos);
    }
#endif
  }

  TEST_CASE("KV cache reuse: prefill then decode equals one batch; rewinding regenerates the same logits") {
    TempDir dir;
    // Q8_0 uses the same kernel at any batch size, so the results must be bit-identical.
    const Model m = open_model(hearth::test::make_model(dir, "m.gguf", opts(TensorType::Q8_0)));
    ThreadPool pool(2);
    auto s = make_stage(m, 0, 5, pool);
    Stage* chain[] = {s.get()};
    const auto tokens = some_tokens(10, 9, m.config.n_vocab);
    const auto batch = run(chain, 1, 0, tokens, true);
    s->release(1);
    CHECK(s->length(1) == 0);
    std::vector<float> step = run(chain, 2, 0, {tokens.begin(), tokens.begin() + 6}, true);
    for (int i = 6; i < 10; ++i) {
      const auto l = run(chain, 2, i, {tokens[static_cast<size_t>(i)]});
      step.insert(step.end(), l.begin(), l.end());
    }
    CHECK(step == batch);
    CHECK(s->length(2) == 10);
    // Rewind to position 7 and feed the same tokens again.
    const auto again = run(chain, 2, 7, {tokens.begin() + 7, tokens.end()}, true);
    CHECK(std::vector<float>(batch.end() - 3L * m.config.n_vocab, batch.end()) == again);
    CHECK(s->length(2) == 10);
  }

  TEST_CASE("recurrent layers go back only to their state before the last chunk's draft, and from there compute alike") {
    TempDir dir;
    MakeModelOptions o = opts(TensorType::Q8_0, 4);
    o.arch = "qwen35";
    const Model m = open_model(hearth::test::make_model(dir, "q.gguf", o));
    REQUIRE(m.config.full_attention_interval > 0);
    ThreadPool pool(2);
    auto s = make_stage(m, 0, 4, pool);
    Stage* chain[] = {s.get()};
    const auto tokens = some_tokens(12, 4, m.config.n_vocab);
    const auto plain = run(chain, 1, 0, tokens, true);
    const auto V = static_cast<size_t>(m.config.n_vocab);
    auto forward = [&](int pos, std::span<const int32_t> ids, int drafts) {
      const SeqChunk chunk{.seq = 2, .pos = pos, .n_tokens = static_cast<int>(ids.size()), .logits = 1, .drafts = drafts};
      const auto out = forward_chain(chain, {.chunks = {&chunk, 1}, .tokens = ids, .all_logits = true});
      return std::vector<float>(out.begin(), out.end());
    };
    const std::span<const int32_t> all(tokens);
    forward(0, all.first(6), 0);
    // Positions 6-10, the last three a draft that turns out wrong from its second token.
    std::vector<int32_t> drafted(tokens.begin() + 6, tokens.begin() + 11);
    drafted[3] = (drafted[3] + 1) % m.config.n_vocab;
    drafted[4] = (drafted[4] + 1) % m.config.n_vocab;
    forward(6, drafted, 3);
    CHECK(s->length(2) == 11);
    // Not back to a position inside the draft: only to the state before it (length 8).
    CHECK_FALSE(s->can_continue(2, 9));
    CHECK_THROWS_WITH_AS(forward(9, all.subspan(9, 1), 0), doctest::Contains("recurrent layers cannot rewind"),
                         std::invalid_argument);
    REQUIRE(s->can_continue(2, 8));
    // From there, the accepted draft token and the rest: what the plain run computed.
    const auto again = forward(8, all.subspan(8), 0);
    CHECK(again == std::vector<float>(plain.begin() + 8 * static_cast<long>(V), plain.end()));
    // A chunk without a draft dropped the checkpoint: nothing to go back to any more.
    CHECK_FALSE(s->can_continue(2, 8));
    CHECK(s->can_continue(2, 12));
    CHECK(s->checkpoint(2) == -1);
    // Chunks that are all draft (a draft model's own tokens, one at a time) keep the state from
    // before the first of them.
    forward(0, all.first(9), 0);
    forward(9, std::vector<int32_t>{drafted[3]}, 1);
    forward(10, std::vector<int32_t>{drafted[4]}, 1);
    CHECK(s->checkpoint(2) == 9);
    CHECK_FALSE(s->can_continue(2, 10));
    const auto resumed = forward(9, all.subspan(9), 0);
    CHECK(resumed == std::vector<float>(plain.begin() + 9 * static_cast<long>(V), plain.end()));
    // Starting over forgets it.
    forward(12, std::vector<int32_t>{drafted[4]}, 1);
    REQUIRE(s->checkpoint(2) == 12);
    forward(0, all.first(2), 2);
    CHECK(s->checkpoint(2) == 0);
    forward(0, all.first(3), 0);
    CHECK(s->checkpoint(2) == -1);
  }

  TEST_CASE("a draft model proposes what a fresh one would, whatever part of its last draft the model took") {
    for (const char* arch : {"llama", "qwen35"}) {
      CAPTURE(std::string(arch));
      TempDir dir;
      MakeModelOptions o = opts(TensorType::Q8_0, 4);
      o.arch = arch;
      const std::string path = hearth::test::make_model(dir, "d.gguf", o);
      const Model m = open_model(path);
      const Vocab vocab = load_vocab(m.file.metadata());
      DraftModel kept(path, vocab, 128, 2, 2);
      std::vector<int32_t> history = some_tokens(12, 5, m.config.n_vocab);
      for (int round = 0; round < 8; ++round) {
        CAPTURE(round);
        const std::vector<int32_t> draft = kept.propose(1, history, 4);
        REQUIRE(draft.size() == 4);
        CHECK(draft == DraftModel(path, vocab, 128, 1, 1).propose(1, history, 4));
        // The model takes `a` of its tokens, then one of its own (not the draft's next).
        const size_t a = static_cast<size_t>(round) % 5;
        history.insert(history.end(), draft.begin(), draft.begin() + static_cast<long>(a));
        history.push_back(a < draft.size() ? (draft[a] + 1) % m.config.n_vocab : draft[0]);
      }
    }
  }

  TEST_CASE("a stage told that chunks may end in drafts counts each recurrent state twice per sequence") {
    TempDir dir;
    MakeModelOptions o = opts(TensorType::Q8_0, 4);
    o.arch = "qwen35";
    const Model m = open_model(hearth::test::make_model(dir, "q.gguf", o));
    ThreadPool pool(2);
    const KvLayout k = kv_layout(m.config, 0, 4, 128, 32);
    uint64_t state_bytes = 0;
    for (const int64_t f : k.state_floats) state_bytes += static_cast<uint64_t>(f) * sizeof(float);
    REQUIRE(state_bytes > 0);
    const auto plain = make_stage(m, 0, 4, pool);
    const auto drafting = make_stage(m, 0, 4, pool, {.n_ctx = 128, .max_batch = 32, .drafts = true});
    CHECK(drafting->memory_bytes(3) - plain->memory_bytes(3) == 3 * state_bytes);
    CHECK(k.bytes(TensorType::F32, true) - k.bytes(TensorType::F32) == state_bytes);
    // Only the states: a model without recurrent layers counts the same either way.
    const Model dense = open_model(hearth::test::make_model(dir, "d.gguf", opts(TensorType::Q8_0)));
    CHECK(make_stage(dense, 0, 5, pool, {.n_ctx = 128, .max_batch = 32, .drafts = true})->memory_bytes(3) ==
          make_stage(dense, 0, 5, pool)->memory_bytes(3));
  }

  TEST_CASE("several sequences in one batch give the same results as each alone") {
    TempDir dir;
    const Model m = open_model(hearth::test::make_model(dir, "m.gguf", opts(TensorType::Q4_0)));
    ThreadPool pool(2);
    auto s = make_stage(m, 0, 5, pool);
    Stage* chain[] = {s.get()};
    const auto ta = some_tokens(4, 1, m.config.n_vocab), tb = some_tokens(7, 2, m.config.n_vocab);
    const auto alone_a = run(chain, 10, 0, ta), alone_b = run(chain, 11, 0, tb);
    s->release(10);
    s->release(11);

    const SeqChunk chunks[] = {{20, 0, 4}, {21, 0, 7}};
    std::vector<int32_t> both = ta;
    both.insert(both.end(), tb.begin(), tb.end());
    const auto out = s->forward({.chunks = chunks, .tokens = both});
    const size_t V = static_cast<size_t>(m.config.n_vocab);
    REQUIRE(out.size() == 2 * V);
    CHECK(std::vector<float>(out.begin(), out.begin() + static_cast<long>(V)) == alone_a);
    CHECK(std::vector<float>(out.begin() + static_cast<long>(V), out.end()) == alone_b);
    // Then one decode token each, batched, against each alone.
    const SeqChunk next[] = {{20, 4, 1}, {21, 7, 1}};
    const std::vector<int32_t> toks{5, 6};
    const auto dec = s->forward({.chunks = next, .tokens = toks});
    const std::vector<float> dec_a(dec.begin(), dec.begin() + static_cast<long>(V)),
        dec_b(dec.begin() + static_cast<long>(V), dec.end());
    run(chain, 10, 0, ta);
    run(chain, 11, 0, tb);
    CHECK(run(chain, 10, 4, {5}) == dec_a);
    CHECK(run(chain, 11, 7, {6}) == dec_b);
  }

  // Batch invariance for every weight type: the cluster batches several sequences' tokens together
  // and must still produce the tokens a single device produces, so each token's logits must not
  // depend, bit for bit, on the batch it was computed in (the kernels compute every output with the
  // same operations whatever the batch; see kernels.h).
  namespace {

  // A shape every type can take (rows in whole 256-element K-quant super-blocks).
  MakeModelOptions any_type_model(TensorType t) {
    MakeModelOptions o = opts(t, 3);
    o.shape.n_embd = 256;
    o.shape.n_head = 4;
    o.shape.n_head_kv = 2;
    o.shape.n_ff = 512;
    return o;
  }

  constexpr TensorType kEveryType[] = {TensorType::F32,  TensorType::F16,  TensorType::BF16, TensorType::Q8_0, TensorType::Q4_0,
                                       TensorType::Q5_0, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K};

  std::vector<float> part(std::span<const float> v, size_t from, size_t n) {
    return {v.begin() + static_cast<long>(from), v.begin() + static_cast<long>(from + n)};
  }

  }  // namespace

  TEST_CASE("f16 and q8_0 KV caches: prefill then decode equals one batch, batched sequences equal each alone, splits "
            "change no bit") {
    TempDir dir;
    const Model m = open_model(hearth::test::make_model(dir, "m.gguf", any_type_model(TensorType::Q8_0)));
    ThreadPool pool(2);
    const size_t V = static_cast<size_t>(m.config.n_vocab);
    for (TensorType kv : {TensorType::F16, TensorType::Q8_0}) {
      CAPTURE(tensor_type_name(kv));
      const StageOptions o{.n_ctx = 128, .max_batch = 32, .kv_type = kv};
      auto s = make_stage(m, 0, 3, pool, o);
      Stage* chain[] = {s.get()};
      const auto tokens = some_tokens(20, 4, m.config.n_vocab);
      const auto batch = run(chain, 1, 0, tokens, true);
      std::vector<float> step = run(chain, 2, 0, {tokens.begin(), tokens.begin() + 11}, true);
      for (size_t i = 11; i < tokens.size(); ++i) {
        const auto l = run(chain, 2, static_cast<int>(i), {tokens[i]});
        step.insert(step.end(), l.begin(), l.end());
      }
      CHECK(step == batch);
      // Two sequences' decode tokens in one batch, against each alone.
      const SeqChunk next[] = {{1, 20, 1}, {2, 20, 1}};
      const std::vector<int32_t> toks{5, 6};
      const auto dec = s->forward({.chunks = next, .tokens = toks});
      CHECK(run(chain, 1, 20, {5}) == part(dec, 0, V));
      CHECK(run(chain, 2, 20, {6}) == part(dec, V, V));
      // The cache differs from f32's only by its rounding: close, not equal.
      auto exact = make_stage(m, 0, 3, pool);
      Stage* exact_chain[] = {exact.get()};
      const auto ref = run(exact_chain, 1, 0, tokens, true);
      double diff = 0;
      for (size_t i = 0; i < ref.size(); ++i) diff = std::max(diff, double(std::fabs(ref[i] - batch[i])));
      MESSAGE(tensor_type_name(kv) << " KV cache: max |logit - f32 cache's| = " << diff);
      CHECK(diff > 0);
      CHECK(diff < 0.5);
      auto a = make_stage(m, 0, 1, pool, o), b = make_stage(m, 1, 3, pool, o);
      Stage* two[] = {a.get(), b.get()};
      CHECK(run(two, 1, 0, tokens, true) == batch);
    }
    // Heads of 16 cannot be cut into q8_0 blocks of 32: refused, naming the way out.
    MakeModelOptions heads16 = opts(TensorType::F32);
    heads16.shape.n_embd = 64;
    heads16.shape.n_head = 4;
    heads16.shape.n_head_kv = 2;
    const Model small = open_model(hearth::test::make_model(dir, "small.gguf", heads16));
    REQUIRE(small.config.head_dim % 32 != 0);
    CHECK_THROWS_WITH_AS(make_stage(small, 0, 5, pool, {.n_ctx = 64, .max_batch = 8, .kv_type = TensorType::Q8_0}),
                         doctest::Contains("--kv-type f16"), std::invalid_argument);
  }

  TEST_CASE("every weight type: prefill then decode equals one batch, bit for bit") {
    TempDir dir;
    for (TensorType t : kEveryType) {
      CAPTURE(std::string(tensor_type_name(t)));
      const Model m = open_model(hearth::test::make_model(dir, "m.gguf", any_type_model(t)));
      ThreadPool pool(2);
      auto s = make_stage(m, 0, 3, pool);
      Stage* chain[] = {s.get()};
      const auto tokens = some_tokens(11, 9, m.config.n_vocab);
      const auto batch = run(chain, 1, 0, tokens, true);
      std::vector<float> step = run(chain, 2, 0, {tokens.begin(), tokens.begin() + 5}, true);
      for (int i = 5; i < 11; ++i) {
        const auto l = run(chain, 2, i, {tokens[static_cast<size_t>(i)]});
        step.insert(step.end(), l.begin(), l.end());
      }
      CHECK(step == batch);
    }
  }

  TEST_CASE("every weight type: several sequences in one batch give the same results as each alone, bit for bit") {
    TempDir dir;
    for (TensorType t : kEveryType) {
      CAPTURE(std::string(tensor_type_name(t)));
      const Model m = open_model(hearth::test::make_model(dir, "m.gguf", any_type_model(t)));
      ThreadPool pool(2);
      auto s = make_stage(m, 0, 3, pool);
      Stage* chain[] = {s.get()};
      const size_t V = static_cast<size_t>(m.config.n_vocab);
      const auto ta = some_tokens(3, 1, m.config.n_vocab), tb = some_tokens(6, 2, m.config.n_vocab),
                 tc = some_tokens(1, 3, m.config.n_vocab);
      const auto alone_a = run(chain, 10, 0, ta, true), alone_b = run(chain, 11, 0, tb, true),
                 alone_c = run(chain, 12, 0, tc, true);
      const auto next_a = run(chain, 10, 3, {7}), next_b = run(chain, 11, 6, {8}), next_c = run(chain, 12, 1, {9});
      for (uint64_t q : {10, 11, 12}) s->release(q);

      // The three prompts as one batch (every token's logits), then one decode token each, batched.
      const SeqChunk chunks[] = {{20, 0, 3}, {21, 0, 6}, {22, 0, 1}};
      std::vector<int32_t> all = ta;
      all.insert(all.end(), tb.begin(), tb.end());
      all.insert(all.end(), tc.begin(), tc.end());
      const auto out = s->forward({.chunks = chunks, .tokens = all, .all_logits = true});
      REQUIRE(out.size() == 10 * V);
      CHECK(part(out, 0, 3 * V) == alone_a);
      CHECK(part(out, 3 * V, 6 * V) == alone_b);
      CHECK(part(out, 9 * V, V) == alone_c);
      const SeqChunk next[] = {{20, 3, 1}, {21, 6, 1}, {22, 1, 1}};
      const std::vector<int32_t> toks{7, 8, 9};
      const auto dec = s->forward({.chunks = next, .tokens = toks});
      REQUIRE(dec.size() == 3 * V);
      CHECK(part(dec, 0, V) == next_a);
      CHECK(part(dec, V, V) == next_b);
      CHECK(part(dec, 2 * V, V) == next_c);
    }
  }

  TEST_CASE("greedy generation gives the same tokens and logits at 1 and 2 threads") {
    TempDir dir;
    for (TensorType t :
         {TensorType::F32, TensorType::F16, TensorType::Q8_0, TensorType::Q4_0, TensorType::Q4_K, TensorType::Q6_K}) {
      CAPTURE(std::string(tensor_type_name(t)));
      const Model m = open_model(hearth::test::make_model(dir, "m.gguf", any_type_model(t)));
      const auto greedy = [&](int threads) {
        ThreadPool pool(threads);
        auto s = make_stage(m, 0, 3, pool);
        Stage* chain[] = {s.get()};
        std::vector<int32_t> tokens = some_tokens(7, 4, m.config.n_vocab);
        std::vector<float> logits = run(chain, 1, 0, tokens);
        std::vector<float> all = logits;
        for (int i = 0; i < 16; ++i) {
          const auto next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
          logits = run(chain, 1, static_cast<int>(tokens.size()), {next});
          tokens.push_back(next);
          all.insert(all.end(), logits.begin(), logits.end());
        }
        return std::make_pair(tokens, all);
      };
      const auto one = greedy(1), two = greedy(2);
      CHECK(one.first == two.first);
      CHECK(one.second == two.second);
    }
  }

  TEST_CASE("bad input is refused with a clear message and changes nothing") {
    TempDir dir;
    const Model m = open_model(hearth::test::make_model(dir, "m.gguf", opts(TensorType::F32, 2)));
    ThreadPool pool(1);
    auto first = make_stage(m, 0, 1, pool, {.n_ctx = 16, .max_batch = 8, .max_sequences = 2});
    auto second = make_stage(m, 1, 2, pool, {.n_ctx = 16, .max_batch = 8, .max_sequences = 2});
    Stage* chain[] = {first.get(), second.get()};
    run(chain, 1, 0, {1, 2, 3});
    const auto expect_error = [&](const StageInput& in, const char* text) {
      CHECK_THROWS_WITH_AS(first->forward(in), doctest::Contains(text), std::invalid_argument);
    };
    SeqChunk c{1, 3, 1};
    std::vector<int32_t> tok{m.config.n_vocab};
    expect_error({.chunks = {&c, 1}, .tokens = tok}, "outside the vocabulary");
    tok = {-1};
    expect_error({.chunks = {&c, 1}, .tokens = tok}, "outside the vocabulary");
    tok = {1};
    c = {1, 5, 1};
    expect_error({.chunks = {&c, 1}, .tokens = tok}, "continues at position 5 but holds 3 tokens");
    c = {1, 3, 2};
    expect_error({.chunks = {&c, 1}, .tokens = tok}, "expected 2 token ids");
    std::vector<int32_t> nine(9, 1);
    c = {1, 3, 9};
    expect_error({.chunks = {&c, 1}, .tokens = nine}, "exceeds 8 tokens");
    c = {1, 14, 1};
    expect_error({.chunks = {&c, 1}, .tokens = tok}, "continues at position 14");
    const SeqChunk dup[] = {{1, 3, 1}, {1, 4, 1}};
    std::vector<int32_t> two{1, 1};
    expect_error({.chunks = dup, .tokens = two}, "appears twice");
    const SeqChunk many[] = {{2, 0, 1}, {3, 0, 1}};
    expect_error({.chunks = many, .tokens = two}, "more than 2 sequences");
    std::vector<float> hidden(static_cast<size_t>(m.config.n_embd) - 1);
    c = {1, 3, 1};
    CHECK_THROWS_WITH_AS(second->forward({.chunks = {&c, 1}, .hidden = hidden}), doctest::Contains("expected hidden states"),
                         std::invalid_argument);
    CHECK(first->length(1) == 3);
    CHECK(first->n_sequences() == 1);
    // Context full.
    auto full = make_stage(m, 0, 2, pool, {.n_ctx = 4, .max_batch = 8, .max_sequences = 1});
    Stage* f[] = {full.get()};
    run(f, 1, 0, {1, 2, 3, 4});
    c = {1, 4, 1};
    CHECK_THROWS_WITH_AS(full->forward({.chunks = {&c, 1}, .tokens = tok}), doctest::Contains("exceed the context of 4"),
                         std::invalid_argument);
    // The stage still serves valid input.
    CHECK(run(chain, 1, 3, {4}).size() == static_cast<size_t>(m.config.n_vocab));
  }

  TEST_CASE("a stage maps and touches only its own layers (resident memory)") {
    TempDir dir;
    MakeModelOptions o = opts(TensorType::F16, 8);
    o.shape.n_embd = 512;
    o.shape.n_head = 8;
    o.shape.n_head_kv = 8;
    o.shape.n_ff = 1536;
    const Model m = open_model(hearth::test::make_model(dir, "big.gguf", o));
    const uint64_t layer_bytes = (4ull * 512 * 512 + 3ull * 512 * 1536) * 2;  // ~5.8 MB
    ThreadPool pool(2);
    const uint64_t before = rss_file_bytes();
    auto stage = make_stage(m, 3, 5, pool);
    std::vector<float> hidden(static_cast<size_t>(4 * m.config.n_embd), 0.5f);
    const SeqChunk c{1, 0, 4};
    stage->forward({.chunks = {&c, 1}, .hidden = hidden});
    const uint64_t grew = rss_file_bytes() - before;
    MESSAGE("stage [3,5) of 8 layers: file-backed RSS grew " << grew / 1e6 << " MB; its layers hold " << 2 * layer_bytes / 1e6
                                                             << " MB, the whole model " << (m.file.file_size() / 1e6) << " MB");
    CHECK(grew >= layer_bytes);                   // it did read its weights
    CHECK(grew <= 2 * layer_bytes + 512 * 1024);  // and nothing of the other six layers
  }

}  // TEST_SUITE
