// Agreement with an independent implementation (llama.cpp) on real files from ../shared/models.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

#include "runtime/model/generator.h"
#include "runtime/model/model_config.h"
#include "runtime/model/stage.h"
#include "runtime/text/tokenizer.h"
#include "tests/test_util.h"

using namespace hearth::runtime;
using hearth::test::open_whole_model;
using hearth::test::shared_file;
using hearth::test::WholeModel;

namespace {

nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  return nlohmann::json::parse(f);
}

// Logits at every position of `ids`, computed in one batch as the reference did.
std::vector<float> all_logits(const WholeModel& m, const std::vector<int32_t>& ids, int threads = 2) {
  ThreadPool pool(threads);
  Stage stage(m.weights, {.n_ctx = 512, .max_batch = 64, .max_sequences = 1}, pool);
  SeqChunk chunk{1, 0, static_cast<int>(ids.size())};
  auto out = stage.forward({.chunks = {&chunk, 1}, .tokens = ids, .all_logits = true});
  return {out.begin(), out.end()};
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double{a[i]} - double{b[i]}));
  return m;
}

std::vector<int32_t> ids_of(const nlohmann::json& j, const char* key) { return j.at(key).get<std::vector<int32_t>>(); }

}  // namespace

TEST_SUITE("reference") {
  TEST_CASE("stories260K: prompt ids, greedy continuation and logits match llama.cpp") {
    auto model = shared_file("models/stories260K/stories260K.gguf");
    auto ref_path = shared_file("models/stories260K/reference/once_upon_a_time_32.kvf32.json");
    if (!model || !ref_path) return;
    const auto ref = read_json(*ref_path);
    const WholeModel m = open_whole_model(*model);
    const Tokenizer tok(load_vocab(m.file.metadata()));

    const auto prompt = tok.encode(ref.at("prompt").get<std::string>());
    CHECK(prompt == ids_of(ref, "prompt_ids"));

    ThreadPool pool(2);
    Stage stage(m.weights, {.max_sequences = 1}, pool);
    Stage* stages[] = {&stage};
    std::vector<int32_t> generated;
    generate(stages, 7, prompt, {.n_predict = 32, .sampling = {.temperature = 0}}, tok.vocab(), [&](int32_t id) {
      generated.push_back(id);
      return true;
    });
    CHECK(generated == ids_of(ref, "generated_ids"));
    CHECK(tok.decode(generated) == ref.at("generated_text").get<std::string>());

    // Logits at all 37 positions: llama.cpp with an f32 KV cache; our KV cache is f32 too.
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), generated.begin(), generated.end());
    const auto expected =
        hearth::test::read_f32(*shared_file("models/stories260K/reference/once_upon_a_time_32.kvf32.logits.f32"));
    const double diff = max_abs_diff(all_logits(m, all), expected);
    MESSAGE("stories260K max |logit - reference| = " << diff);
    CHECK(diff < 1e-3);
  }

  TEST_CASE("stories260K: 251 greedy tokens equal the reference text") {
    auto model = shared_file("models/stories260K/stories260K.gguf");
    auto ref_path = shared_file("models/stories260K/reference/once_upon_a_time_251.kvf32.json");
    if (!model || !ref_path) return;
    const auto ref = read_json(*ref_path);
    const WholeModel m = open_whole_model(*model);
    const Tokenizer tok(load_vocab(m.file.metadata()));
    ThreadPool pool(2);
    Stage stage(m.weights, {.max_sequences = 1}, pool);
    Stage* stages[] = {&stage};
    std::vector<int32_t> generated;
    generate(stages, 1, ids_of(ref, "prompt_ids"), {.n_predict = 251, .sampling = {.temperature = 0}}, tok.vocab(),
             [&](int32_t id) {
               generated.push_back(id);
               return true;
             });
    CHECK(generated == ids_of(ref, "generated_ids"));
  }

  // Tolerances per weight type. llama.cpp converts activations to Q8_0 before Q8_0/Q4_0 dot
  // products with the same rounding as ours, so those agree to float summation order (measured:
  // <= 2e-7); 1e-4 leaves room for another summation order without hiding a real error (one wrong
  // block moves logits by >1e-2 here). f32 differs only by summation order (measured 1e-6). For
  // f16 weights both round the activations to f16 first, which makes f16 like Q8_0 at a finer
  // step: a summation-order difference of 1e-7 flips an element that lies at a rounding boundary
  // by one f16 step, and these logits move by ~1e-4 for each (measured 4.6e-4 at most, 7e-5 on
  // average; a model that rounds exactly where llama.cpp does, in numpy, met the first row to
  // 1.2e-7 and, without the rounding, missed it by 6.2e-4, this code's old figure). 2e-3 bounds
  // the flips. For scale: llama.cpp's own f16-KV vs f32-KV runs differ by up to 1e-3 (f32/f16)
  // and 1.5e-2 (q8_0/q4_0).
  //
  // Those 1e-4 hold for the x86 tables, which sum in llama.cpp's x86 order (Q8_0: its AVX2 dot
  // product's 8 lanes; Q4_0: its repacked kernels' one chain per output, which gives these logits
  // exactly, 0 difference, where the 8 lanes gave 1.5e-7). Tables with another
  // order (scalar, NEON: the same products, summed in another order) may flip the
  // int8 rounding of one activation element at a .5 boundary, which moves these logits by ~1e-2
  // (scalar q8_0: 9.7e-3, q4_0: 1.2e-7): the same discontinuity as llama.cpp's own f16-/f32-KV
  // difference above, so its 1.5e-2 (rounded up to 2e-2) bounds them. Those tables' dot products
  // are checked block by block against the scalar one in kernels_test, and stories260K's 251
  // greedy tokens above must still match exactly.
  TEST_CASE("random-tiny: logits match llama.cpp for every weight type") {
    struct Case {
      const char* type;
      double tolerance;
    };
    const std::string table(hearth::runtime::best_kernels().name);
    const bool x86_order = table == "avx2" || table == "avx512";
    const double q8 = x86_order ? 1e-4 : 2e-2;
    MESSAGE("kernels: " << table << std::string(x86_order ? " (llama.cpp's x86 summation order)" : " (another summation order)"));
    for (const Case c : {Case{"f32", 1e-4}, Case{"f16", 2e-3}, Case{"q8_0", q8}, Case{"q4_0", q8}}) {
      const std::string type = c.type;
      CAPTURE(type);
      const std::string base = std::string("models/random-tiny/");
      auto model = shared_file(base + "tiny-" + c.type + ".gguf");
      auto ref_path = shared_file(base + "reference/tiny-" + c.type + ".once_upon_a_time_32.kvf32.json");
      if (!model || !ref_path) return;
      const auto ref = read_json(*ref_path);
      const WholeModel m = open_whole_model(*model);
      std::vector<int32_t> all = ids_of(ref, "prompt_ids");
      const auto gen = ids_of(ref, "generated_ids");
      all.insert(all.end(), gen.begin(), gen.end());
      const auto expected = hearth::test::read_f32(*shared_file(base + "reference/" + ref.at("logits_file").get<std::string>()));
      const double diff = max_abs_diff(all_logits(m, all), expected);
      MESSAGE("random-tiny " << type << " max |logit - reference| = " << diff);
      CHECK(diff < c.tolerance);
    }
  }

}  // TEST_SUITE
