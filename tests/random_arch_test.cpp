// Architectures against llama.cpp: the random-weight fixtures of ../shared/models/random-arch
// (PROVENANCE.md there says how they were made). For each file: the logits of every position in
// one batch within a stated tolerance of llama.cpp's, the same argmax on every row, the same
// greedy continuation decoded token by token, and pipeline splits that change no bit.
//
// Tolerances. F32: llama.cpp's own batch and incremental runs differ by up to 2.3e-5 on these
// files and an independent float64 pass by up to 1.1e-5, so 1e-4 leaves room for another
// summation order and nothing more. Q8_0: the x86 tables (avx2, avx512) round activations to Q8_0
// before each quantized dot as llama.cpp does and sum in its order, so they must agree as closely
// as F32 (measured: bit for bit). Tables that sum in another order (scalar, neon) meet rounding
// boundaries elsewhere: PROVENANCE.md's independent pass with the same rounding lands 0.06-0.19
// from these logits with every argmax equal, so they get 0.25 and must still agree on every argmax
// and every greedy id. One file is an exception on every table: phi3-q8_0 lands 0.1913 from
// llama.cpp on x86 too, exactly where that independent pass lands (its JSON: 0.1913), while its
// F32 twin agrees to 1e-5; so llama.cpp computes something for phi3's quantized path that neither
// we nor PROVENANCE's pass do (not found yet), and that file gets the 0.25 as well. So does
// gpt-oss-q8_0 (0.096 here): llama.cpp's own token-by-token run of it differs from its batch run
// by 0.059 and the independent pass by 0.107, its activations sitting near Q8_0 rounding
// boundaries; our RoPE angles (YaRN included) are taken in double where ggml iterates in float.
// gpt-oss-mxfp4 the same (0.1099 here on avx2 and avx512, while llama.cpp's own token-by-token run
// differs from its batch run by 0.1099 and the independent pass with its rounding by 0.122); its
// experts' bytes are llama.cpp's bit for bit (the quantizer test below), so the difference is not
// in the weights.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>

#include "runtime/model/generator.h"
#include "runtime/model/model_config.h"
#include "runtime/model/stage.h"
#include "tests/test_util.h"

using namespace hearth::runtime;
using hearth::test::shared_file;

namespace {

struct Fixture {
  const char* name;  // file stem under models/random-arch/ (or `dir`)
  const char* arch;  // general.architecture
  const char* dir = "models/random-arch/";
};

bool quantized(const Fixture& fx) { return !std::string(fx.name).ends_with("-f32"); }

double tolerance(const Fixture& fx) {
  const std::string table(best_kernels().name);
  const bool x86_order = table == "avx2" || table == "avx512";
  const std::string name(fx.name);
  const bool boundary_sensitive =
      name == "phi3-q8_0" || name == "gpt-oss-q8_0" || name == "gpt-oss-mxfp4" || name == "gemma4-e-q8_0";
  if (quantized(fx) && (!x86_order || boundary_sensitive)) return 0.25;
  // gemma3's GELU rounds its input to fp16 (ops.h: geglu), so a last-bit difference before it
  // (another f32 summation order) can move a result by an fp16 step: llama.cpp's own batch and
  // incremental runs of gemma3-f32 differ by 1.3e-3, and PROVENANCE's independent pass with
  // llama.cpp's GELU lands 3.1e-3 from it, where we land (3.09e-3). The Q8_0 file, whose dots
  // are integer sums, agrees bit for bit on the x86 tables.
  // gemma4-f32 the same (llama.cpp's own token-by-token run differs from its batch by 4.1e-4; we
  // land 6.3e-4 from it), while its Q8_0 twin agrees bit for bit.
  if (name == "gemma3-f32" || name == "gemma4-tiny-f32" || name == "gemma4-e-f32" || name == "gemma4-moe-f32") return 5e-3;
  return 1e-4;
}

struct Loaded {
  GgufFile file;
  ModelConfig config;
};

std::unique_ptr<Stage> stage_of(const Loaded& m, int first, int last, ThreadPool& pool, TensorType kv = TensorType::F32) {
  const StageSpec spec{first, last, first == 0, last == m.config.n_layer};
  return std::make_unique<Stage>(std::make_shared<StageWeights>(m.file, m.config, spec),
                                 StageOptions{.n_ctx = 128, .max_batch = 64, .max_sequences = 2, .kv_type = kv}, pool);
}

std::vector<float> forward(std::span<Stage* const> chain, int pos, const std::vector<int32_t>& ids, bool all) {
  const SeqChunk chunk{1, pos, static_cast<int>(ids.size())};
  const auto out = forward_chain(chain, {.chunks = {&chunk, 1}, .tokens = ids, .all_logits = all});
  return {out.begin(), out.end()};
}

std::vector<uint8_t> tensor_bytes(const std::string& path, const GgufTensorInfo& t) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(t.offset));
  std::vector<uint8_t> bytes(t.n_bytes);
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(in.good());
  return bytes;
}

int argmax(const float* row, int n) { return static_cast<int>(std::max_element(row, row + n) - row); }

// What llama.cpp made of one model: its prompt and greedy ids (JSON as the fixtures write them) and
// the logits of every position of both in one batch.
struct Reference {
  nlohmann::json ids;
  std::vector<float> logits;
};

Reference read_reference(const std::string& json_path, const std::string& logits_path) {
  std::ifstream in(json_path);
  return {nlohmann::json::parse(in), hearth::test::read_f32(logits_path)};
}

void check_model(const Fixture& fx, const std::string& model, const Reference& reference, TensorType kv, double limit);

// With a KV cache of another type than the reference's f32, `limit` replaces the tolerance.
void check_fixture(const Fixture& fx, TensorType kv = TensorType::F32, double limit = 0) {
  const std::string base = std::string(fx.dir) + fx.name;
  const auto model = shared_file(base + ".gguf"), ref_path = shared_file(base + ".json");
  if (!model || !ref_path) return;
  check_model(fx, *model, read_reference(*ref_path, *shared_file(base + ".logits.f32")), kv, limit);
}

void check_model(const Fixture& fx, const std::string& model, const Reference& reference, TensorType kv, double limit) {
  const nlohmann::json& ref = reference.ids;
  const std::vector<float>& expected = reference.logits;
  Loaded m{GgufFile::open(model), {}};
  m.config = read_model_config(m.file);
  CHECK(m.config.arch == fx.arch);
  const int V = m.config.n_vocab, L = m.config.n_layer;
  const auto prompt = ref.at("prompt_ids").get<std::vector<int32_t>>();
  const auto greedy = ref.at("greedy_ids").get<std::vector<int32_t>>();
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), greedy.begin(), greedy.end());
  REQUIRE(expected.size() == all.size() * static_cast<size_t>(V));

  ThreadPool pool(2);
  auto whole = stage_of(m, 0, L, pool, kv);
  Stage* one[] = {whole.get()};
  const auto logits = forward(one, 0, all, true);
  const double allowed = kv == TensorType::F32 ? tolerance(fx) : limit;
  double diff = 0;
  for (size_t row = 0; row < all.size(); ++row)
    for (int i = 0; i < V; ++i) diff = std::max(diff, std::fabs(double{logits[row * V + i]} - double{expected[row * V + i]}));
  MESSAGE(std::string(fx.name) << ": max |logit - llama.cpp| = " << diff << " over " << all.size() << " positions ("
                               << best_kernels().name << " kernels, " << tensor_type_name(kv) << " KV cache, tolerance "
                               << allowed << ")");
  CHECK(diff < allowed);
  // Every row's argmax agrees, except where the reference's own top two are closer than the
  // distance measured (a deviation of `diff` per logit closes a margin of up to 2 diff): no order
  // of summation can be held to those. Only tables that sum in another order than the
  // reference's meet such rows (gemma4-q8_0, whose greedy path has a margin of 0.004, on scalar
  // and NEON); the x86 tables land at 0 on it.
  int argmax_differs = 0, within_noise = 0;
  bool greedy_path_decided = true;
  for (size_t row = 0; row < all.size(); ++row) {
    const float* b = &expected[row * V];
    const int top = argmax(b, V);
    float second = -INFINITY;
    for (int i = 0; i < V; ++i)
      if (i != top) second = std::max(second, b[i]);
    const bool decided = b[top] - second > 2 * diff;
    if (!decided && row + 1 >= prompt.size()) greedy_path_decided = false;
    if (argmax(&logits[row * V], V) != top) (decided ? argmax_differs : within_noise)++;
  }
  CHECK(argmax_differs == 0);
  if (within_noise > 0)
    MESSAGE(std::string(fx.name) << ": " << within_noise << " rows whose reference margin is within 2 x " << diff << " pick another argmax");

  // Greedy, token by token after the prompt, as the reference ran it (where its path is decided
  // beyond the measured distance; else it is reported).
  whole->release(1);
  std::vector<int32_t> got;
  auto last = forward(one, 0, prompt, false);
  for (size_t i = 0; i < greedy.size(); ++i) {
    got.push_back(argmax(last.data(), V));
    last = forward(one, static_cast<int>(prompt.size() + i), {got.back()}, false);
  }
  if (greedy_path_decided) CHECK(got == greedy);
  else if (got != greedy) MESSAGE(std::string(fx.name) << ": the greedy path, within the measured distance of a tie, went another way");

  // Split in two and, where there are layers enough, three: every logit bit for bit.
  // (Gemma 4's shared-KV layers stay on the stage of the layers whose caches they read.)
  int half = L / 2;
  while (!m.config.stage_may_start_at(half)) --half;
  std::vector<std::vector<int>> splits{{0, half, L}};
  if (L >= 3 && m.config.stage_may_start_at(1) && m.config.stage_may_start_at(2)) splits.push_back({0, 1, 2, L});
  for (const auto& cuts : splits) {
    std::vector<std::unique_ptr<Stage>> owned;
    std::vector<Stage*> chain;
    for (size_t i = 0; i + 1 < cuts.size(); ++i) {
      owned.push_back(stage_of(m, cuts[i], cuts[i + 1], pool, kv));
      chain.push_back(owned.back().get());
    }
    CAPTURE(cuts.size() - 1);
    CHECK(forward(chain, 0, all, true) == logits);
  }
}

}  // namespace

TEST_SUITE("random_arch") {
  TEST_CASE("qwen3 (per-head q/k norm, head size of its own, tied)") {
    check_fixture({"qwen3-f32", "qwen3"});
    check_fixture({"qwen3-q8_0", "qwen3"});
  }
  TEST_CASE("llama32 (Llama 3 rope_freqs, tied)") {
    check_fixture({"llama32-f32", "llama"});
    check_fixture({"llama32-q8_0", "llama"});
  }
  TEST_CASE("mixtral (llama with 8 experts, top 2, renormalised)") {
    check_fixture({"mixtral-f32", "llama"});
    check_fixture({"mixtral-q8_0", "llama"});
  }
  TEST_CASE("qwen3moe (16 experts, top 4, renormalised; per-head q/k norm)") {
    check_fixture({"qwen3moe-f32", "qwen3moe"});
    check_fixture({"qwen3moe-q8_0", "qwen3moe"});
  }
  TEST_CASE("phi3 (fused QKV and gate-up, 24 of 32 dims rotated, LongRoPE short factors, attn_factor, tied)") {
    check_fixture({"phi3-f32", "phi3"});
    check_fixture({"phi3-q8_0", "phi3"});
  }
  TEST_CASE("gemma3 (5 sliding-window layers of 8 then a global one, GeGLU, pre and post norms, embeddings scaled, tied)") {
    check_fixture({"gemma3-f32", "gemma3"});
    check_fixture({"gemma3-q8_0", "gemma3"});
  }
  TEST_CASE(
      "gpt-oss (sinks, biases, YaRN, sliding and full layers alternating, softmax over the chosen experts, clamped SwiGLU)") {
    check_fixture({"gpt-oss-f32", "gpt-oss"});
    check_fixture({"gpt-oss-q8_0", "gpt-oss"});
    check_fixture({"gpt-oss-mxfp4", "gpt-oss"});
  }
  TEST_CASE("gemma4 (sliding layers of head size 32 and a full one of 64 with its own KV heads, V from K, V norm, "
            "proportional RoPE, layer output scales, soft-capped logits)") {
    check_fixture({"gemma4-tiny-f32", "gemma4", "models/random-arch-2026/"});
    check_fixture({"gemma4-tiny-q8_0", "gemma4", "models/random-arch-2026/"});
  }
  // No fixture has these (PROVENANCE.md: left out), so the reference is our own: a random model
  // mkmodel writes again here, bit for bit the file llama.cpp b10573 ran (tests/reference/ says
  // how, and holds the program). The F32 file gets gemma4-f32's tolerance (measured 3.9e-4, its
  // GELU table). The Q8_0 file is exact on 37 of its 38 rows and 0.0078 off on one: a Q8_0
  // rounding of an activation flipped by a last-bit difference in a layer whose KV no later row
  // reads. Such flips are not this layout's: mkmodel's plain gemma4 of the same shape lands 0.013
  // from llama.cpp from row 7 on and its llama 0.007 from row 20 on (the flip's row then feeds
  // every later one through the cache), while the fixtures above happen to meet none. So it is
  // held to the 0.25 of the boundary-sensitive files, and to every decided argmax and greedy id.
  TEST_CASE(
      "gemma4 E2B/E4B layout (per-layer embeddings, the last 5 of 10 layers reading earlier layers' KV caches) "
      "against llama.cpp") {
    hearth::test::TempDir dir;
    for (const auto& [name, type] : {std::pair{"gemma4-e-f32", TensorType::F32}, std::pair{"gemma4-e-q8_0", TensorType::Q8_0}}) {
      CAPTURE(name);
      MakeModelOptions o{.type = type, .seed = 7, .sliding_window = 8};
      o.arch = "gemma4";
      o.shape.n_layer = 10;
      o.full_layer_period = 5;
      o.per_layer_embd = 64;
      o.shared_kv_layers = 5;
      const std::string model = dir.file(std::string(name) + ".gguf");
      make_random_model(model, o);
      const std::string ref = std::string(HEARTH_SOURCE_DIR) + "/tests/reference/" + name;
      const Fixture fx{name, "gemma4"};
      check_model(fx, model, read_reference(ref + ".json", ref + ".logits.f32"), TensorType::F32, 0);
      // A stage of the shared layers without the layers whose caches they read is refused.
      const GgufFile file = GgufFile::open(model);
      const ModelConfig config = read_model_config(file);
      CHECK(config.n_layer_kv == 5);
      CHECK(config.kv_source(7) == 3);  // sliding
      CHECK(config.kv_source(9) == 4);  // full
      CHECK_THROWS_WITH_AS(StageWeights(file, config, StageSpec{4, 10, false, true}),
                           doctest::Contains("reads the KV cache of layer 3: a stage holding it must start at layer 3 or before"),
                           GgufError);
    }
  }
  TEST_CASE(
      "gemma4 26B-A4B layout (a dense FFN beside 8 experts, top 2, in every layer; fused gate-up experts; the "
      "router's scaled input; per-expert output scales) against llama.cpp") {
    hearth::test::TempDir dir;
    for (const auto& [name, type] :
         {std::pair{"gemma4-moe-f32", TensorType::F32}, std::pair{"gemma4-moe-q8_0", TensorType::Q8_0}}) {
      CAPTURE(name);
      MakeModelOptions o{.type = type, .seed = 9, .sliding_window = 8};
      o.arch = "gemma4";
      o.shape.n_layer = 4;
      o.shape.n_expert = 8;
      o.shape.n_expert_used = 2;
      o.shape.n_ff_exp = 64;
      const std::string model = dir.file(std::string(name) + ".gguf");
      make_random_model(model, o);
      const std::string ref = std::string(HEARTH_SOURCE_DIR) + "/tests/reference/" + name;
      check_model({name, "gemma4"}, model, read_reference(ref + ".json", ref + ".logits.f32"), TensorType::F32, 0);
    }
  }
  TEST_CASE("qwen35 (gated delta-net layers with their recurrent state, a gated full-attention layer, partial rotary)") {
    check_fixture({"qwen35-tiny-f32", "qwen35", "models/random-arch-2026/"});
    check_fixture({"qwen35-tiny-q8_0", "qwen35", "models/random-arch-2026/"});
  }
  TEST_CASE("qwen35moe (the same hybrid layers, 8 routed experts top 2 renormalised, a sigmoid-gated shared expert)") {
    check_fixture({"qwen35moe-tiny-f32", "qwen35moe", "models/random-arch-2026/"});
    check_fixture({"qwen35moe-tiny-q8_0", "qwen35moe", "models/random-arch-2026/"});
  }
  TEST_CASE("KV caches of f16 and q8_0 against the f32 references") {
    const Fixture all[] = {{"qwen3-f32", "qwen3"}, {"llama32-f32", "llama"}, {"mixtral-f32", "llama"}, {"qwen3moe-f32", "qwen3moe"},
                           {"phi3-f32", "phi3"}, {"gemma3-f32", "gemma3"}, {"gpt-oss-f32", "gpt-oss"}, {"olmoe-f32", "olmoe"},
                           {"gemma4-tiny-f32", "gemma4", "models/random-arch-2026/"},
                           {"qwen35-tiny-f32", "qwen35", "models/random-arch-2026/"},
                           {"qwen35moe-tiny-f32", "qwen35moe", "models/random-arch-2026/"}};
    // Measured on avx512 (max |logit - llama.cpp's f32-cache logits|): f16 0.0003-0.011, and
    // gpt-oss 0.093 (its sinks and YaRN-scaled attention are the most sensitive); q8_0 0.008-0.24
    // on dense models and 1.2-1.5 on mixtral, qwen3moe and gpt-oss, whose routers pick other
    // experts for a few tokens. The limits leave room for other tables' summation orders; the
    // checks that matter are every decided argmax and greedy path (check_fixture).
    for (const Fixture& fx : all) {
      CAPTURE(fx.name);
      check_fixture(fx, TensorType::F16, 0.15);
      check_fixture(fx, TensorType::Q8_0, 2.0);
    }
  }
  TEST_CASE("a recurrent model's sequence cannot rewind; starting over at 0 clears its state") {
    const auto model = shared_file("models/random-arch-2026/qwen35-tiny-f32.gguf");
    if (!model) return;
    Loaded m{GgufFile::open(*model), {}};
    m.config = read_model_config(m.file);
    ThreadPool pool(2);
    auto whole = stage_of(m, 0, m.config.n_layer, pool);
    Stage* one[] = {whole.get()};
    const std::vector<int32_t> ids{1, 403, 407, 261, 378, 432};
    const auto first = forward(one, 0, ids, true);
    CHECK_THROWS_WITH_AS(forward(one, 3, {261}, false), doctest::Contains("recurrent layers cannot rewind"), std::invalid_argument);
    CHECK(forward(one, 0, ids, true) == first);  // the state of the first run is gone
  }
  TEST_CASE("the MXFP4 quantizer writes llama.cpp's bytes: the F32 experts quantized equal the MXFP4 file's") {
    const auto f32 = shared_file("models/random-arch/gpt-oss-f32.gguf");
    const auto mx = shared_file("models/random-arch/gpt-oss-mxfp4.gguf");
    if (!f32 || !mx) return;
    const GgufFile a = GgufFile::open(*f32), b = GgufFile::open(*mx);
    int compared = 0;
    for (const GgufTensorInfo& t : b.tensors()) {
      if (t.type != TensorType::MXFP4) continue;
      const GgufTensorInfo* src = a.find_tensor(t.name);
      REQUIRE(src != nullptr);
      REQUIRE(src->type == TensorType::F32);
      const auto n = static_cast<int64_t>(src->n_elements());
      const auto x = tensor_bytes(*f32, *src);
      std::vector<uint8_t> out(row_bytes(TensorType::MXFP4, static_cast<uint64_t>(n)));
      quantize_row(TensorType::MXFP4, reinterpret_cast<const float*>(x.data()), out.data(), n);
      CAPTURE(t.name);
      CHECK(out == tensor_bytes(*mx, t));
      ++compared;
    }
    CHECK(compared == 12);  // gate, up and down experts of 4 layers
  }
  TEST_CASE("olmoe (16 experts, top 4, not renormalised; q/k norm over the whole projection)") {
    check_fixture({"olmoe-f32", "olmoe"});
    check_fixture({"olmoe-q8_0", "olmoe"});
  }
}
