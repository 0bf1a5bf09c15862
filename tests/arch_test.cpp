// Architectures beyond llama 2: qwen2 (Q/K/V biases, NeoX RoPE), qwen3 (per-head Q/K RMSNorm,
// head size of its own) and Llama 3's RoPE frequency factors and linear scaling.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>

#include "runtime/model/expert_ffn.h"
#include "runtime/model/generator.h"
#include "partitioner/cost_model.h"
#include "runtime/model/model_config.h"
#include "runtime/model/model_spec_gguf.h"
#include "runtime/model/rope.h"
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

std::unique_ptr<Stage> make_stage(const Model& m, int first, int last, ThreadPool& pool) {
  const StageSpec spec{first, last, first == 0, last == m.config.n_layer};
  return std::make_unique<Stage>(std::make_shared<StageWeights>(m.file, m.config, spec),
                                 StageOptions{.n_ctx = 128, .max_batch = 32}, pool);
}

std::vector<float> run(std::span<Stage* const> stages, uint64_t seq, int pos, const std::vector<int32_t>& tokens) {
  const SeqChunk chunk{seq, pos, static_cast<int>(tokens.size())};
  auto out = forward_chain(stages, {.chunks = {&chunk, 1}, .tokens = tokens, .all_logits = true});
  return {out.begin(), out.end()};
}

// Logits of the whole model at every position of a fixed prompt, in one batch.
std::vector<float> logits_of(const std::string& path,
                             const std::vector<int32_t>& prompt = {1, 70, 300, 5, 260, 99, 411, 12, 3, 150}) {
  ThreadPool pool(2);
  const Model m = open_model(path);
  auto s = make_stage(m, 0, m.config.n_layer, pool);
  Stage* chain[] = {s.get()};
  return run(chain, 1, 0, prompt);
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, double(std::fabs(a[i] - b[i])));
  return d;
}

MakeModelOptions opts(const std::string& arch, int layers = 4) {
  MakeModelOptions o;
  o.arch = arch;
  o.shape.n_layer = layers;
  o.weight_std = 0.05f;  // enough signal that every layer matters to the logits
  return o;
}

// Copies `src` to `dst`, letting `edit` change the f32 data of each f32 tensor in place.
void edit_f32(const std::string& src, const std::string& dst,
              const std::function<void(const GgufTensorInfo&, float* data)>& edit) {
  const GgufFile f = GgufFile::open(src);
  auto bytes = hearth::test::read_bytes(src);
  for (const auto& t : f.tensors())
    if (t.type == TensorType::F32) edit(t, reinterpret_cast<float*>(&bytes[t.offset]));
  hearth::test::write_bytes(dst, bytes);
}

bool ends_with(const std::string& s, const char* suffix) { return s.ends_with(suffix); }

// The prompt through the whole model and through splits in two and three stages: the same logits
// bit for bit; then token by token in another sequence: every row equals the batch's row.
void check_splits_and_decode(const Model& m, ThreadPool& pool, const std::vector<int32_t>& prompt) {
  const int L = m.config.n_layer, V = m.config.n_vocab;
  REQUIRE(L >= 3);
  // Cuts where a stage may start (Gemma 4's shared-KV layers stay with the layers they read).
  const auto allowed = [&](int b) {
    while (!m.config.stage_may_start_at(b)) --b;
    return b;
  };
  const int half = allowed(L / 2), late = allowed(L - 1);
  REQUIRE(late > 1);
  auto whole = make_stage(m, 0, L, pool);
  auto a = make_stage(m, 0, half, pool), b = make_stage(m, half, L, pool);
  auto x = make_stage(m, 0, 1, pool), y = make_stage(m, 1, late, pool), z = make_stage(m, late, L, pool);
  Stage* one[] = {whole.get()};
  Stage* two[] = {a.get(), b.get()};
  Stage* three[] = {x.get(), y.get(), z.get()};
  const auto ref = run(one, 1, 0, prompt);
  CHECK(run(two, 1, 0, prompt) == ref);
  CHECK(run(three, 1, 0, prompt) == ref);
  for (size_t i = 0; i < prompt.size(); ++i) {
    const auto row = run(one, 2, static_cast<int>(i), {prompt[i]});
    CHECK(std::equal(row.begin(), row.end(), ref.begin() + static_cast<std::ptrdiff_t>(i) * V));
  }
}

// A model with sliding-window layers: stages taking 8 tokens a step keep rings of window + 8
// rows, which a 40-token prompt wraps several times. Fed in chunks of 8, token by token, and
// split in two and three, they give the bits of a stage whose cache holds everything; going
// back exactly max_rewind positions recomputes the same logits, one more is refused.
void check_ring(const Model& m, ThreadPool& pool) {
  const int L = m.config.n_layer, V = m.config.n_vocab, W = m.config.n_swa;
  REQUIRE(W == 4);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 40; ++i) prompt.push_back(1 + (i * 53) % 500);
  const auto stage = [&](int first, int last, int max_batch) {
    const StageSpec spec{first, last, first == 0, last == L};
    return std::make_unique<Stage>(std::make_shared<StageWeights>(m.file, m.config, spec),
                                   StageOptions{.n_ctx = 64, .max_batch = max_batch}, pool);
  };
  auto whole = stage(0, L, 64);
  CHECK(whole->max_rewind() == 64);  // a window + 64 rows would exceed the context: no ring
  Stage* one[] = {whole.get()};
  const auto ref = run(one, 1, 0, prompt);
  const auto allowed = [&](int b) {
    while (!m.config.stage_may_start_at(b)) --b;
    return b;
  };
  const int half = allowed(L / 2), late = allowed(L - 1);
  auto r = stage(0, L, 8), a = stage(0, half, 8), b = stage(half, L, 8), x = stage(0, 1, 8), y = stage(1, late, 8),
       z = stage(late, L, 8);
  CHECK(r->max_rewind() == 8);
  const uint64_t ring_bytes = r->memory_bytes(1) - r->memory_bytes(0);
  CHECK(ring_bytes < whole->memory_bytes(1) - whole->memory_bytes(0));
  if (m.config.n_head_kv_layers.empty() && m.config.head_dim_swa == 0) {  // layers alike: the planner's count is exact
    hearth::partitioner::PartitionOptions o;
    o.ctx = 64;
    o.max_batch = 8;
    o.kv_bytes_per_elem = 4;  // the stages' f32 cache
    hearth::partitioner::DeviceProfile d;
    d.name = "box";
    d.usable_memory_bytes = 1e12;
    d.memory_bandwidth_bytes_per_s = 1e10;
    d.prefill_flop_s = 1e11;
    const hearth::partitioner::CostModel cost(model_spec_from_gguf(m.file, m.config), {&d, 1}, {}, o);
    CHECK(cost.memory(0, 0, L, false, false).kv_bytes == doctest::Approx(static_cast<double>(ring_bytes)));
  }
  Stage* ring[] = {r.get()};
  Stage* two[] = {a.get(), b.get()};
  Stage* three[] = {x.get(), y.get(), z.get()};
  const auto rows = [&](const std::vector<float>& out, size_t first) {
    return std::equal(out.begin(), out.end(), ref.begin() + static_cast<std::ptrdiff_t>(first * V));
  };
  for (std::span<Stage* const> chain :
       {std::span<Stage* const>(ring), std::span<Stage* const>(two), std::span<Stage* const>(three)}) {
    for (size_t p = 0; p < prompt.size(); p += 8)
      CHECK(rows(run(chain, 1, static_cast<int>(p), {prompt.begin() + p, prompt.begin() + p + 8}), p));
  }
  for (size_t p = 0; p < prompt.size(); ++p) CHECK(rows(run(ring, 2, static_cast<int>(p), {prompt[p]}), p));
  // Back 8 from 40: the rows 32..39 again. Back 9: refused, and the sequence is as it was.
  CHECK(rows(run(ring, 1, 32, {prompt.begin() + 32, prompt.end()}), 32));
  CHECK_THROWS_WITH_AS(run(ring, 1, 31, {prompt.begin() + 31, prompt.end()}), doctest::Contains("sliding-window"),
                       std::invalid_argument);
  CHECK(r->length(1) == 40);
  CHECK(rows(run(ring, 1, 36, {prompt.begin() + 36, prompt.end()}), 36));
  // Back to 32 and only to 36: the rows of 36..39 still sit where 24..27 were. Going back to 30
  // is 6 from the length but 10 from the furthest the sequence reached: refused.
  CHECK(rows(run(ring, 1, 32, {prompt.begin() + 32, prompt.begin() + 36}), 32));
  CHECK(r->length(1) == 36);
  CHECK_FALSE(r->can_continue(1, 30));
  CHECK_THROWS_AS(run(ring, 1, 30, {prompt.begin() + 30, prompt.end()}), std::invalid_argument);
  CHECK(r->can_continue(1, 32));
  CHECK(rows(run(ring, 1, 32, {prompt.begin() + 32, prompt.end()}), 32));
  CHECK(rows(run(ring, 1, 0, {prompt.begin(), prompt.begin() + 8}), 0));  // start over: always allowed
}

}  // namespace

TEST_SUITE("arch") {
  TEST_CASE("NeoX RoPE rotates (x[i], x[i + n_rot/2]) like a naive loop; both styles agree with rope_rotate") {
    const int n_rot = 8, head = 10;  // the last two dimensions are past n_rot and stay
    const RopeSpec freq{.base = 10000.f, .n_rot = n_rot};
    std::mt19937 rng(4);
    std::normal_distribution<float> d;
    std::vector<float> x(head);
    for (auto& v : x) v = d(rng);
    for (int pos : {0, 1, 7, 1000}) {
      CAPTURE(pos);
      std::vector<float> y = x, naive = x;
      rope_apply(y.data(), pos, freq, RopeStyle::NeoX);
      for (int i = 0; i < n_rot / 2; ++i) {
        const double theta = pos * std::pow(10000.0, -2.0 * i / n_rot);
        const double a = x[static_cast<size_t>(i)], b = x[static_cast<size_t>(i + n_rot / 2)];
        naive[static_cast<size_t>(i)] = static_cast<float>(a * std::cos(theta) - b * std::sin(theta));
        naive[static_cast<size_t>(i + n_rot / 2)] = static_cast<float>(a * std::sin(theta) + b * std::cos(theta));
      }
      // Angles are float as llama.cpp takes them (rope.h): at position 1000 an angle is off by up
      // to an ulp of 1000 (6e-5), so the exact rotation is only met to about that.
      for (int i = 0; i < head; ++i)
        CHECK(y[static_cast<size_t>(i)] == doctest::Approx(naive[static_cast<size_t>(i)]).epsilon(pos < 1000 ? 1e-5 : 1e-3));
      CHECK(y[8] == x[8]);
      CHECK(y[9] == x[9]);

      // NeoX on x equals normal RoPE on x with its halves interleaved (how a converter turns one
      // layout into the other).
      std::vector<float> inter(head);
      for (int i = 0; i < n_rot / 2; ++i) inter[2 * i] = x[i], inter[2 * i + 1] = x[i + n_rot / 2];
      inter[8] = x[8], inter[9] = x[9];
      rope_apply(inter.data(), pos, freq, RopeStyle::Normal);
      for (int i = 0; i < n_rot / 2; ++i) {
        CHECK(inter[2 * i] == y[i]);
        CHECK(inter[2 * i + 1] == y[i + n_rot / 2]);
      }
    }
  }

  TEST_CASE("rope angles: Llama 3 factors divide, linear scaling multiplies by 1/factor, attn_factor scales cos and sin") {
    const RopeSpec base{.base = 500000.f, .n_rot = 8};
    const RopeSpec ones{.base = 500000.f, .n_rot = 8, .factors = {1, 1, 1, 1}};
    const RopeSpec scaled{.base = 500000.f, .n_rot = 8, .freq_scale = 0.25f, .factors = {1, 2, 4, 8}, .attn_factor = 1.5f};
    float c0[4], s0[4], c1[4], s1[4], c2[4], s2[4];
    for (int pos : {1, 5, 300}) {
      rope_angles(pos, base, c0, s0);
      rope_angles(pos, ones, c1, s1);
      rope_angles(pos, scaled, c2, s2);
      for (int i = 0; i < 4; ++i) {
        CHECK(c1[i] == c0[i]);
        CHECK(s1[i] == s0[i]);
        const double theta = pos * std::pow(500000.0, -2.0 * i / 8) * 0.25 / double(1 << i);
        CHECK(c2[i] == doctest::Approx(1.5 * std::cos(theta)).epsilon(1e-4));
        CHECK(s2[i] == doctest::Approx(1.5 * std::sin(theta)).epsilon(1e-4));
      }
    }
  }

  TEST_CASE("qwen2 metadata and tensors: NeoX, biases, tied output; unknown architectures are refused with the list") {
    TempDir dir;
    MakeModelOptions o = opts("qwen2");
    o.tied_output = true;
    const Model m = open_model(hearth::test::make_model(dir, "q2.gguf", o));
    CHECK(m.config.arch == "qwen2");
    CHECK(m.config.rope_style == RopeStyle::NeoX);
    CHECK(m.file.find_tensor("output.weight") == nullptr);
    const StageWeights w(m.file, m.config, StageSpec::whole(m.config.n_layer));
    CHECK(w.layer(0).bq.size() == static_cast<size_t>(m.config.q_dim()));
    CHECK(w.layer(0).bk.size() == static_cast<size_t>(m.config.kv_dim()));
    CHECK(w.layer(0).bv.size() == static_cast<size_t>(m.config.kv_dim()));
    CHECK(w.output().data == w.token_embd().data);  // tied: the head reads the embedding

    // qwen2 requires its biases.
    const std::string nobias = dir.file("nobias.gguf");
    hearth::test::rewrite_gguf(dir.file("q2.gguf"), nobias, [](GgufMetadata&, std::vector<GgufTensorInfo>& t) {
      std::erase_if(t, [](const GgufTensorInfo& x) { return x.name == "blk.2.attn_k.bias"; });
    });
    const Model nb = open_model(nobias);
    CHECK_THROWS_WITH_AS(StageWeights(nb.file, nb.config, StageSpec::whole(nb.config.n_layer)),
                         doctest::Contains("'blk.2.attn_k.bias' is missing"), GgufError);

    const std::string other = dir.file("gemma.gguf");
    hearth::test::rewrite_gguf(dir.file("q2.gguf"), other, [](GgufMetadata& md, std::vector<GgufTensorInfo>&) {
      md.set("general.architecture", GgufValue::str("gemma"));
    });
    CHECK_THROWS_WITH_AS(
        open_model(other),
        doctest::Contains(
            "architecture 'gemma' is not supported (supported: llama, qwen2, qwen3, qwen3moe, olmoe, phi3, gemma3, gemma4, qwen35, qwen35moe, gpt-oss)"),
        GgufError);
  }

  TEST_CASE("qwen2 equals llama with Q/K rows interleaved per head (NeoX vs normal RoPE), biases included") {
    TempDir dir;
    const std::string q2 = hearth::test::make_model(dir, "q2.gguf", opts("qwen2"));
    // The llama twin: arch keys renamed, and in each head of Q and K (weights and biases) the
    // element i of the first half goes to 2i, of the second half to 2i + 1.
    const std::string twin = dir.file("llama.gguf");
    hearth::test::rewrite_gguf(q2, twin, [](GgufMetadata& md, std::vector<GgufTensorInfo>&) {
      GgufMetadata out;
      for (const auto& [k, v] : md.all()) out.set(k.rfind("qwen2.", 0) == 0 ? "llama." + k.substr(6) : k, v);
      out.set("general.architecture", GgufValue::str("llama"));
      md = out;
    });
    const Model m = open_model(q2);
    const int hd = m.config.head_dim, E = m.config.n_embd;
    edit_f32(twin, twin, [&](const GgufTensorInfo& t, float* data) {
      const bool q_or_k = t.name.find("attn_q.") != std::string::npos || t.name.find("attn_k.") != std::string::npos;
      if (!q_or_k) return;
      const size_t row = ends_with(t.name, ".bias") ? 1 : static_cast<size_t>(E);  // elements per output row
      const size_t rows = (ends_with(t.name, ".bias") ? t.shape[0] : t.shape[1]);
      std::vector<float> old(data, data + rows * row);
      for (size_t r = 0; r < rows; ++r) {
        const size_t head = r / static_cast<size_t>(hd), i = r % static_cast<size_t>(hd);
        const size_t half = static_cast<size_t>(hd / 2);
        const size_t to = head * static_cast<size_t>(hd) + (i < half ? 2 * i : 2 * (i - half) + 1);
        std::memcpy(data + to * row, old.data() + r * row, row * sizeof(float));
      }
    });
    const auto a = logits_of(q2), b = logits_of(twin);
    const double d = max_diff(a, b);
    MESSAGE("qwen2 vs interleaved llama twin: max |diff| = " << d);
    CHECK(d < 1e-4);  // the same sums in another order

    // And the biases matter: zeroing them moves the logits.
    const std::string zero = dir.file("zero.gguf");
    edit_f32(q2, zero, [](const GgufTensorInfo& t, float* data) {
      if (ends_with(t.name, ".bias")) std::fill(data, data + t.shape[0], 0.f);
    });
    const double moved = max_diff(a, logits_of(zero));
    MESSAGE("qwen2 with zero biases: max |diff| = " << moved);
    CHECK(moved > 1e-2);
  }

  TEST_CASE("qwen3: per-head Q/K RMSNorm before RoPE, with a head size of its own") {
    TempDir dir;
    MakeModelOptions o = opts("qwen3");
    o.shape.head_dim = 64;  // 4 heads x 64 = 256 != n_embd 128
    const std::string path = hearth::test::make_model(dir, "q3.gguf", o);
    const Model m = open_model(path);
    CHECK(m.config.head_dim == 64);
    CHECK(m.config.q_dim() == 256);
    CHECK(m.config.rope_style == RopeStyle::NeoX);
    const auto base = logits_of(path);

    const auto scaled = [&](const char* suffix, float s) {
      const std::string out = dir.file(std::string("scaled") + suffix + ".gguf");
      edit_f32(path, out, [&](const GgufTensorInfo& t, float* data) {
        if (ends_with(t.name, suffix))
          for (uint64_t i = 0; i < t.n_elements(); ++i) data[i] *= s;
      });
      return logits_of(out);
    };
    // Each head of q is normalised, so the scale of W_q does not matter (it would for llama)...
    const double wq = max_diff(base, scaled("attn_q.weight", 3.f));
    MESSAGE("qwen3 with W_q x3: max |diff| = " << wq);
    CHECK(wq < 1e-4);
    // ...but the norm's weight does: it scales q . k, the same whether it is on q or on k.
    const auto q2 = scaled("attn_q_norm.weight", 2.f), k2 = scaled("attn_k_norm.weight", 2.f);
    const double qk = max_diff(q2, k2), moved = max_diff(base, q2);
    MESSAGE("qwen3 q_norm x2 vs k_norm x2: " << qk << "; vs unscaled: " << moved);
    CHECK(qk < 1e-4);
    CHECK(moved > 1e-2);

    // Missing norms are reported by name.
    const std::string nonorm = dir.file("nonorm.gguf");
    hearth::test::rewrite_gguf(path, nonorm, [](GgufMetadata&, std::vector<GgufTensorInfo>& t) {
      std::erase_if(t, [](const GgufTensorInfo& x) { return x.name == "blk.3.attn_q_norm.weight"; });
    });
    const Model nn = open_model(nonorm);
    CHECK_THROWS_WITH_AS(StageWeights(nn.file, nn.config, StageSpec::whole(nn.config.n_layer)),
                         doctest::Contains("'blk.3.attn_q_norm.weight' is missing"), GgufError);
  }

  TEST_CASE("qwen2 and qwen3: pipeline splits give bit-identical logits") {
    TempDir dir;
    ThreadPool pool(2);
    for (const char* arch : {"qwen2", "qwen3"}) {
      for (TensorType t : {TensorType::F32, TensorType::Q8_0}) {
        CAPTURE(std::string(arch));
        CAPTURE(std::string(tensor_type_name(t)));
        MakeModelOptions o = opts(arch, 5);
        o.type = t;
        const Model m = open_model(hearth::test::make_model(dir, "m.gguf", o));
        auto whole = make_stage(m, 0, 5, pool);
        auto a = make_stage(m, 0, 2, pool), b = make_stage(m, 2, 5, pool);
        auto x = make_stage(m, 0, 1, pool), y = make_stage(m, 1, 3, pool), z = make_stage(m, 3, 5, pool);
        Stage* one[] = {whole.get()};
        Stage* two[] = {a.get(), b.get()};
        Stage* three[] = {x.get(), y.get(), z.get()};
        const std::vector<int32_t> prompt{1, 20, 30, 400, 5, 6, 77, 8};
        const auto ref = run(one, 1, 0, prompt);
        CHECK(run(two, 1, 0, prompt) == ref);
        CHECK(run(three, 1, 0, prompt) == ref);
        for (int i = 0; i < 3; ++i) {
          const std::vector<int32_t> tok{static_cast<int32_t>(40 + i)};
          const auto r = run(one, 1, 8 + i, tok);
          CHECK(run(two, 1, 8 + i, tok) == r);
          CHECK(run(three, 1, 8 + i, tok) == r);
        }
      }
    }
  }

  TEST_CASE("Llama 3 rope_freqs: factors of 1 change nothing, other factors do; linear scaling by 2 equals factors of 2") {
    TempDir dir;
    ThreadPool pool(2);
    MakeModelOptions o = opts("llama");
    const int half = o.shape.n_embd / o.shape.n_head / 2;
    const auto plain = logits_of(hearth::test::make_model(dir, "plain.gguf", o));

    o.rope_freq_factors.assign(static_cast<size_t>(half), 1.f);
    const std::string ones = hearth::test::make_model(dir, "ones.gguf", o);
    CHECK(logits_of(ones) == plain);

    // Llama-3.1-like: high frequencies kept, low ones slowed down.
    for (int i = 0; i < half; ++i) o.rope_freq_factors[static_cast<size_t>(i)] = i < half / 2 ? 1.f : 8.f;
    const std::string l3 = hearth::test::make_model(dir, "l3.gguf", o);
    const double moved = max_diff(plain, logits_of(l3));
    MESSAGE("rope_freqs 1/8 vs none: max |diff| = " << moved);
    CHECK(moved > 1e-3);
    // Every stage with layers maps the factors (they are not part of any layer).
    const Model m = open_model(l3);
    auto a = make_stage(m, 0, 2, pool), b = make_stage(m, 2, 4, pool), whole = make_stage(m, 0, 4, pool);
    Stage* two[] = {a.get(), b.get()};
    Stage* one[] = {whole.get()};
    const std::vector<int32_t> prompt{1, 2, 300, 4};
    CHECK(run(two, 1, 0, prompt) == run(one, 1, 0, prompt));

    o.rope_freq_factors.assign(static_cast<size_t>(half), 2.f);
    const auto twos = logits_of(hearth::test::make_model(dir, "twos.gguf", o));
    o.rope_freq_factors.clear();
    o.rope_scaling_factor = 2.f;
    const std::string linear = hearth::test::make_model(dir, "linear.gguf", o);
    CHECK(open_model(linear).config.rope_freq_scale == 0.5f);
    CHECK(logits_of(linear) == twos);
    CHECK(max_diff(twos, plain) > 1e-3);

    // Scalings this runtime does not implement are refused by name.
    const std::string yarn = dir.file("yarn.gguf");
    hearth::test::rewrite_gguf(linear, yarn, [](GgufMetadata& md, std::vector<GgufTensorInfo>&) {
      md.set("llama.rope.scaling.type", GgufValue::str("longrope"));
    });
    CHECK_THROWS_WITH_AS(open_model(yarn), doctest::Contains("'longrope' is not supported (supported: none, linear, yarn"),
                         GgufError);
  }

  TEST_CASE("routing: the top k by softmax probability, most probable first, renormalised when the model says so") {
    const std::vector<float> logits{0.5f, 2.f, -1.f, 2.f, 1.f};
    const Routing plain = route(logits, 3, false);
    CHECK(plain.experts == std::vector<int>{1, 3, 4});  // a tie keeps the lower index first
    double z = 0;
    for (float l : logits) z += std::exp(double{l});
    CHECK(plain.weights[0] == doctest::Approx(std::exp(2.0) / z).epsilon(1e-6));
    CHECK(plain.weights[2] == doctest::Approx(std::exp(1.0) / z).epsilon(1e-6));
    const Routing norm = route(logits, 3, true);
    CHECK(norm.experts == plain.experts);
    CHECK(norm.weights[0] + norm.weights[1] + norm.weights[2] == doctest::Approx(1.0).epsilon(1e-6));
    CHECK(norm.weights[0] / norm.weights[2] == doctest::Approx(plain.weights[0] / plain.weights[2]).epsilon(1e-5));
  }

  TEST_CASE(
      "MoE models from mkmodel (qwen3moe, olmoe, Mixtral-style llama, gpt-oss): splits, decode and prefill agree bit for bit") {
    TempDir dir;
    ThreadPool pool(2);
    for (const char* arch : {"qwen3moe", "olmoe", "llama", "gpt-oss"}) {
      for (TensorType t : {TensorType::F32, TensorType::Q8_0, TensorType::Q4_K}) {
        CAPTURE(std::string(arch));
        CAPTURE(std::string(tensor_type_name(t)));
        MakeModelOptions o = opts(arch, 5);
        o.shape = *random_model_preset("tiny-moe");
        o.shape.n_layer = 5;
        o.shape.n_embd = 256;  // a K-quant super-block
        o.shape.n_ff_exp = 256;
        o.type = t;
        o.sliding_window = 4;  // gpt-oss: the 12-token prompt crosses its window
        const Model m = open_model(hearth::test::make_model(dir, "m.gguf", o));
        CHECK(m.config.arch == arch);
        CHECK(m.config.n_expert == 8);
        CHECK(m.config.n_expert_used == 2);
        CHECK(m.config.n_ff_exp == 256);
        const std::vector<int32_t> prompt{1, 20, 30, 400, 5, 6, 77, 8, 9, 310, 11, 12};
        check_splits_and_decode(m, pool, prompt);
        auto whole = make_stage(m, 0, 5, pool);
        Stage* one[] = {whole.get()};
        // A stage whose batch is one token, fewer than the experts a token uses.
        const StageSpec spec{0, 5, true, true};
        Stage narrow(std::make_shared<StageWeights>(m.file, m.config, spec), StageOptions{.n_ctx = 128, .max_batch = 1}, pool);
        Stage* lone[] = {&narrow};
        for (size_t i = 0; i < prompt.size(); ++i)
          CHECK(run(lone, 3, static_cast<int>(i), {prompt[i]}) == run(one, 3, static_cast<int>(i), {prompt[i]}));
      }
    }
  }

  TEST_CASE("phi3, gemma3 and gemma4 from mkmodel: splits, and decode past the sliding window, agree bit for bit with the batch") {
    TempDir dir;
    ThreadPool pool(2);
    for (const char* arch : {"phi3", "gemma3", "gemma4"}) {
      for (TensorType t : {TensorType::F32, TensorType::Q8_0}) {
        CAPTURE(std::string(arch));
        CAPTURE(std::string(tensor_type_name(t)));
        MakeModelOptions o = opts(arch, 7);
        o.type = t;
        o.sliding_window = 4;  // the 16-token prompt crosses it many times
        const Model m = open_model(hearth::test::make_model(dir, "m.gguf", o));
        CHECK(m.config.arch == arch);
        CHECK(m.config.fused_qkv == (std::string(arch) == "phi3"));
        CHECK(m.config.is_swa(0) == std::string(arch).starts_with("gemma"));
        CHECK_FALSE(m.config.is_swa(5));
        if (std::string(arch) == "gemma4") {  // the full layer: twice the head size, half the KV heads, V from K
          CHECK(m.config.layer_head_dim(5) == 2 * m.config.layer_head_dim(0));
          CHECK(m.config.layer_n_head_kv(5) * 2 == m.config.layer_n_head_kv(0));
          CHECK(m.file.find_tensor("blk.5.attn_v.weight") == nullptr);
          CHECK(m.file.find_tensor("blk.4.attn_v.weight") != nullptr);
        }
        std::vector<int32_t> prompt;
        for (int i = 0; i < 16; ++i) prompt.push_back(1 + (i * 37) % 500);
        check_splits_and_decode(m, pool, prompt);
      }
    }
    // Gemma 4 E2B/E4B's layout (per-layer inputs carried between stages, shared-KV layers) and
    // 26B-A4B's (a dense FFN beside the experts in every layer).
    const auto e2b = [](MakeModelOptions& o) {
      o.shape.n_layer = 10;
      o.full_layer_period = 5;
      o.per_layer_embd = 32;
      o.shared_kv_layers = 5;
    };
    const auto a4b = [](MakeModelOptions& o) {
      o.shape.n_expert = 8;
      o.shape.n_expert_used = 2;
      o.shape.n_ff_exp = 64;
    };
    // E2B as published: the full layers keep a V projection and the sliding layers' KV heads,
    // and the shared-KV layers' FFN is twice as wide (feed_forward_length per layer).
    const auto e2b_published = [&](MakeModelOptions& o) {
      e2b(o);
      o.full_kv_heads = o.shape.n_head_kv;
      o.full_v_from_k = false;
      o.double_wide_shared_ffn = true;
    };
    for (const auto& layout : {std::function<void(MakeModelOptions&)>(e2b), std::function<void(MakeModelOptions&)>(a4b),
                               std::function<void(MakeModelOptions&)>(e2b_published)}) {
      for (TensorType t : {TensorType::F32, TensorType::Q8_0}) {
        MakeModelOptions o = opts("gemma4", 7);
        o.type = t;
        o.sliding_window = 4;
        layout(o);
        const Model m = open_model(hearth::test::make_model(dir, "layout.gguf", o));
        CHECK(m.config.moe_beside_dense == (o.shape.n_expert > 0));
        if (o.per_layer_embd > 0) {
          CHECK(m.config.hidden_width(3) == m.config.n_embd + 7 * 32);
          CHECK(m.file.find_tensor("blk.7.attn_k.weight") == nullptr);
        }
        CHECK(m.config.layer_n_ff(7) == (o.double_wide_shared_ffn ? 2 : 1) * m.config.layer_n_ff(3));
        const std::string first_full = "blk." + std::to_string(o.full_layer_period - 1) + ".attn_v.weight";
        CHECK((m.file.find_tensor(first_full) != nullptr) == !o.full_v_from_k);
        std::vector<int32_t> prompt;
        for (int i = 0; i < 16; ++i) prompt.push_back(1 + (i * 37) % 500);
        check_splits_and_decode(m, pool, prompt);
      }
    }
    // The window matters: the same gemma3 weights with a window longer than the prompt differ
    // after position 4, not before.
    MakeModelOptions o = opts("gemma3", 7);
    o.sliding_window = 4;
    const auto narrow = logits_of(hearth::test::make_model(dir, "narrow.gguf", o));
    o.sliding_window = 512;
    const auto wide = logits_of(hearth::test::make_model(dir, "wide.gguf", o));
    const size_t V = 512;
    CHECK(std::equal(narrow.begin(), narrow.begin() + 4 * V, wide.begin()));
    CHECK(max_diff(narrow, wide) > 1e-3);
  }

  TEST_CASE("sliding-window layers keep a ring of their latest positions: gemma3, gemma4 (E2B layout) and gpt-oss, bit for bit") {
    TempDir dir;
    ThreadPool pool(2);
    for (const char* arch : {"gemma3", "gemma4", "gpt-oss"}) {
      for (TensorType t : {TensorType::F32, TensorType::Q8_0}) {
        CAPTURE(std::string(arch));
        CAPTURE(std::string(tensor_type_name(t)));
        MakeModelOptions o = opts(arch, 7);
        if (std::string(arch) == "gpt-oss") o.shape = *random_model_preset("tiny-moe"), o.shape.n_layer = 5;
        if (std::string(arch) == "gemma4") {  // E2B: shared-KV layers read their source's ring
          o.shape.n_layer = 10;
          o.full_layer_period = 5;
          o.per_layer_embd = 32;
          o.shared_kv_layers = 5;
        }
        o.type = t;
        o.sliding_window = 4;
        check_ring(open_model(hearth::test::make_model(dir, "ring.gguf", o)), pool);
      }
    }
  }

  TEST_CASE("qwen35 and qwen35moe from mkmodel: splits, and token-by-token decode through the recurrent state, agree bit for bit") {
    TempDir dir;
    ThreadPool pool(2);
    for (const char* arch : {"qwen35", "qwen35moe"}) {
      for (TensorType t : {TensorType::F32, TensorType::Q8_0}) {
        CAPTURE(std::string(arch));
        CAPTURE(std::string(tensor_type_name(t)));
        MakeModelOptions o = opts(arch, 7);
        if (std::string(arch) == "qwen35moe") {
          o.shape = *random_model_preset("tiny-moe");
          o.shape.n_layer = 7;
          o.n_ff_shared_expert = 96;  // wider than the routed experts, as a shape may have it
        }
        if (t == TensorType::Q8_0) {  // delta-net heads of their own count and size, as the published models'
          o.ssm_k_heads = 2;
          o.ssm_v_heads = 8;
          o.ssm_head_dim = 16;
        }
        o.type = t;
        const Model m = open_model(hearth::test::make_model(dir, "m.gguf", o));
        CHECK(m.config.arch == arch);
        CHECK(m.config.is_recurrent(0));
        CHECK_FALSE(m.config.is_recurrent(3));
        CHECK(m.config.layer_kv_dim(0) == 0);  // no KV cache on a delta-net layer
        CHECK(m.config.n_ff_shexp == (std::string(arch) == "qwen35moe" ? 96 : 0));
        CHECK(m.config.ssm_dt_rank == (o.ssm_v_heads > 0 ? 8 : o.shape.n_head));
        std::vector<int32_t> prompt;
        for (int i = 0; i < 16; ++i) prompt.push_back(1 + (i * 37) % 500);
        check_splits_and_decode(m, pool, prompt);
      }
    }
  }

  TEST_CASE("MoE: a missing or misshapen expert tensor is named; expert metadata out of range is refused") {
    TempDir dir;
    MakeModelOptions o = opts("qwen3moe");
    o.shape = *random_model_preset("tiny-moe");
    const std::string path = hearth::test::make_model(dir, "moe.gguf", o);
    // The planner's view: every expert held, the used ones multiplied.
    const Model m = open_model(path);
    const auto spec = model_spec_from_gguf(m.file, m.config);
    const auto& exps = m.file.require_tensor("blk.0.ffn_up_exps.weight");
    CHECK(spec.n_expert == 8);
    CHECK(spec.n_expert_used == 2);
    CHECK(spec.n_ff == 64);
    REQUIRE(spec.layer_expert_bytes.size() == 4u);
    CHECK(spec.layer_expert_bytes[0] == doctest::Approx(3.0 * exps.n_bytes));
    const double attention_and_router = 2.0 * (128 * 128 * 2 + 128 * 64 * 2 + 128 * 8);
    CHECK(spec.layer_flops_per_token[0] == doctest::Approx(attention_and_router + 2.0 * 3 * 128 * 64 * 2));
    CHECK(hearth::partitioner::layer_read_bytes(spec, 0, 1) ==
          doctest::Approx(spec.layer_weight_bytes[0] - spec.layer_expert_bytes[0] * 6 / 8));

    const std::string missing = dir.file("missing.gguf");
    hearth::test::rewrite_gguf(path, missing, [](GgufMetadata&, std::vector<GgufTensorInfo>& t) {
      std::erase_if(t, [](const GgufTensorInfo& x) { return x.name == "blk.1.ffn_up_exps.weight"; });
    });
    const Model mm = open_model(missing);
    CHECK_THROWS_WITH_AS(StageWeights(mm.file, mm.config, StageSpec::whole(mm.config.n_layer)),
                         doctest::Contains("'blk.1.ffn_up_exps.weight' is missing"), GgufError);
    const std::string shape = dir.file("shape.gguf");
    hearth::test::rewrite_gguf(path, shape, [](GgufMetadata&, std::vector<GgufTensorInfo>& t) {
      for (auto& x : t)
        if (x.name == "blk.0.ffn_down_exps.weight") x.shape = {64, 128, 4};
    });
    const Model ms = open_model(shape);
    CHECK_THROWS_WITH_AS(StageWeights(ms.file, ms.config, StageSpec::whole(ms.config.n_layer)),
                         doctest::Contains("'blk.0.ffn_down_exps.weight' has shape [64, 128, 4], expected [64, 128, 8]"),
                         GgufError);
    const std::string used = dir.file("used.gguf");
    hearth::test::rewrite_gguf(path, used, [](GgufMetadata& md, std::vector<GgufTensorInfo>&) {
      md.set("qwen3moe.expert_used_count", GgufValue::u32(9));
    });
    CHECK_THROWS_WITH_AS(open_model(used), doctest::Contains("'qwen3moe.expert_used_count' = 9 exceeds expert_count 8"),
                         GgufError);
    const std::string none = dir.file("none.gguf");
    hearth::test::rewrite_gguf(path, none, [](GgufMetadata& md, std::vector<GgufTensorInfo>&) {
      GgufMetadata out;
      for (const auto& [k, v] : md.all())
        if (k != "qwen3moe.expert_count") out.set(k, v);
      md = out;
    });
    CHECK_THROWS_WITH_AS(open_model(none), doctest::Contains("'qwen3moe.expert_count' is missing"), GgufError);
  }

  TEST_CASE("mkmodel: a one-layer model is made (the shared-KV check asks for two layers only of models that share KV)") {
    TempDir dir;
    MakeModelOptions o;
    o.shape = *random_model_preset("tiny");
    o.shape.n_layer = 1;
    const auto file = GgufFile::open(hearth::test::make_model(dir, "one.gguf", o));
    CHECK(read_model_config(file).n_layer == 1);
    o.arch = "gemma4";
    o.shape.n_layer = 6;
    o.full_layer_period = 5;
    o.shared_kv_layers = 5;
    CHECK_THROWS_WITH_AS(hearth::test::make_model(dir, "shared.gguf", o), doctest::Contains("at least two layers"),
                         std::invalid_argument);
  }

}  // TEST_SUITE
