// Activations on the wire as f32, f16 or q8_0 (cluster/activation_codec.h): the codec's rounding
// and its refusals, and what a compressed hop does to a model split in two, on the random-weight
// fixtures of ../shared/models/random-arch.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>

#include "cluster/activation_codec.h"
#include "runtime/model/generator.h"
#include "runtime/model/model_config.h"
#include "runtime/model/stage.h"
#include "tests/test_util.h"

using hearth::cluster::decode_activations;
using hearth::cluster::encode_activations;
using hearth::cluster::encoded_bytes;
using hearth::cluster::wire_type_unfit;
using namespace hearth::runtime;

namespace {

std::vector<uint8_t> encode(TensorType t, const std::vector<float>& rows, size_t width) {
  std::vector<uint8_t> out(encoded_bytes(t, rows.size() / width, width));
  REQUIRE(encode_activations(t, rows, width, out));
  return out;
}

std::vector<float> round_trip(TensorType t, const std::vector<float>& rows, size_t width) {
  const auto bytes = encode(t, rows, width);
  std::vector<float> back(rows.size());
  decode_activations(t, bytes, width, back);
  return back;
}

}  // namespace

TEST_SUITE("wire_types") {
  TEST_CASE("f32 is exact; f16 and q8_0 round each value by at most half a step of their grid") {
    const size_t width = 128, rows = 6;
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0, 1);
    std::vector<float> x(width * rows);
    // Rows of very different scales, as hidden states have, and one outlier per row.
    for (size_t r = 0; r < rows; ++r)
      for (size_t i = 0; i < width; ++i) x[r * width + i] = normal(rng) * std::pow(10.0f, static_cast<float>(r) - 2);
    for (size_t r = 0; r < rows; ++r) x[r * width + 5] *= 40;

    CHECK(round_trip(TensorType::F32, x, width) == x);
    CHECK(encoded_bytes(TensorType::F32, rows, width) == rows * width * 4);
    CHECK(encoded_bytes(TensorType::F16, rows, width) == rows * width * 2);
    CHECK(encoded_bytes(TensorType::Q8_0, rows, width) == rows * (width / 32) * 34);

    const auto h = round_trip(TensorType::F16, x, width);
    for (size_t i = 0; i < x.size(); ++i) {
      CAPTURE(x[i]);
      // binary16: 11 significant bits; below 2^-14 a fixed step of 2^-24.
      CHECK(std::fabs(h[i] - x[i]) <= std::max(std::fabs(x[i]) * 0x1p-11f, 0x1p-25f));
    }
    const auto q = round_trip(TensorType::Q8_0, x, width);
    for (size_t b = 0; b < x.size() / 32; ++b) {
      float amax = 0;
      for (size_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
      // Step d = amax / 127 (stored as f16): each value within half a step, plus the scale's own
      // rounding carried by up to 127 steps.
      const float d = amax / 127;
      for (size_t i = 0; i < 32; ++i) CHECK(std::fabs(q[b * 32 + i] - x[b * 32 + i]) <= d * (0.5f + 127 * 0x1p-11f) * 1.0001f);
    }
  }

  TEST_CASE("what a type cannot carry: f16's range, values that are not finite, q8_0 rows not of 32") {
    const size_t width = 64;
    std::vector<float> x(width, 1.0f);
    std::vector<uint8_t> out(encoded_bytes(TensorType::F16, 1, width));
    x[3] = 70000;  // beyond binary16's 65504: the sender falls back to f32
    CHECK_FALSE(encode_activations(TensorType::F16, x, width, out));
    std::vector<uint8_t> f32(width * 4);
    CHECK(encode_activations(TensorType::F32, x, width, f32));
    x[3] = NAN;
    CHECK_FALSE(encode_activations(TensorType::F16, x, width, out));
    std::vector<uint8_t> q(encoded_bytes(TensorType::Q8_0, 1, width));
    CHECK_FALSE(encode_activations(TensorType::Q8_0, x, width, q));

    CHECK(wire_type_unfit(TensorType::Q8_0, 64).empty());
    CHECK(wire_type_unfit(TensorType::Q8_0, 48).find("multiple of 32") != std::string::npos);
    CHECK(wire_type_unfit(TensorType::F16, 48).empty());
    CHECK_FALSE(wire_type_unfit(TensorType::Q4_0, 64).empty());
  }

  TEST_CASE("a payload of the wrong size or with a value that is not finite is refused; misaligned frames are read") {
    const size_t width = 64;
    std::vector<float> x(2 * width);
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i) * 0.25f - 3;
    std::vector<float> back(x.size());
    for (TensorType t : {TensorType::F32, TensorType::F16, TensorType::Q8_0}) {
      CAPTURE(tensor_type_name(t));
      const auto bytes = encode(t, x, width);
      // One byte short, one too many, a row short.
      CHECK_THROWS_AS(decode_activations(t, std::span(bytes).first(bytes.size() - 1), width, back), std::invalid_argument);
      auto longer = bytes;
      longer.push_back(0);
      CHECK_THROWS_AS(decode_activations(t, longer, width, back), std::invalid_argument);
      CHECK_THROWS_AS(decode_activations(t, bytes, width, std::span(back).first(width)), std::invalid_argument);
      // At an odd address, as a ZeroMQ frame may be.
      std::vector<uint8_t> odd(bytes.size() + 1);
      std::copy(bytes.begin(), bytes.end(), odd.begin() + 1);
      decode_activations(t, std::span(odd).subspan(1), width, back);
      CHECK(back == round_trip(t, x, width));
    }
    // A NaN in an f16 payload, and a q8_0 block whose scale is infinite.
    auto h = encode(TensorType::F16, x, width);
    h[10] = 0x00, h[11] = 0x7e;
    CHECK_THROWS_AS(decode_activations(TensorType::F16, h, width, back), std::invalid_argument);
    auto q = encode(TensorType::Q8_0, x, width);
    q[34] = 0x00, q[35] = 0x7c;  // the second block's f16 scale: +inf
    CHECK_THROWS_AS(decode_activations(TensorType::Q8_0, q, width, back), std::invalid_argument);
  }

  TEST_CASE("a model split in two over an f16 or q8_0 hop, against the same split over f32") {
    // F32 files (within 1e-4 of llama.cpp: random_arch_test), whose dots take activations as they
    // are, so what is measured is the hop alone. (Over Q8_0 weights the stage after the hop rounds
    // activations to q8_0 before each dot, and an f16 hop moves some across a rounding boundary:
    // 0.14-0.25 there, as much as a q8_0 hop.)
    const char* names[] = {"llama32-f32", "qwen3-f32",  "mixtral-f32", "qwen3moe-f32", "olmoe-f32",
                           "phi3-f32",    "gemma3-f32", "gpt-oss-f32"};
    int ran = 0;
    for (const char* name : names) {
      const std::string base = std::string("models/random-arch/") + name;
      const auto model = hearth::test::shared_file(base + ".gguf"), ref_path = hearth::test::shared_file(base + ".json");
      if (!model || !ref_path) continue;
      ++ran;
      std::ifstream in(*ref_path);
      const auto ref = nlohmann::json::parse(in);
      const auto prompt = ref.at("prompt_ids").get<std::vector<int32_t>>();
      const auto greedy = ref.at("greedy_ids").get<std::vector<int32_t>>();
      std::vector<int32_t> all = prompt;
      all.insert(all.end(), greedy.begin(), greedy.end());

      const GgufFile file = GgufFile::open(*model);
      const ModelConfig config = read_model_config(file);
      const int L = config.n_layer, V = config.n_vocab;
      const auto width = static_cast<size_t>(config.n_embd);
      ThreadPool pool(2);
      const auto stage = [&](int first, int last) {
        return std::make_unique<Stage>(std::make_shared<StageWeights>(file, config, StageSpec{first, last, first == 0, last == L}),
                                       StageOptions{.n_ctx = 128, .max_batch = 64, .max_sequences = 1}, pool);
      };
      // Every position's logits, and the greedy continuation token by token, over the hop.
      const auto run = [&](TensorType t, std::vector<float>& logits, std::vector<int32_t>& path) {
        auto a = stage(0, L / 2), b = stage(L / 2, L);
        const auto through = [&](int pos, std::span<const int32_t> ids, bool every) {
          const SeqChunk chunk{1, pos, static_cast<int>(ids.size())};
          const auto hidden = a->forward({.chunks = {&chunk, 1}, .tokens = ids, .all_logits = every});
          std::vector<float> sent(hidden.size());
          decode_activations(t, encode(t, {hidden.begin(), hidden.end()}, width), width, sent);
          const auto out = b->forward({.chunks = {&chunk, 1}, .hidden = sent, .all_logits = every});
          return std::vector<float>(out.begin(), out.end());
        };
        logits = through(0, all, true);
        a->release(1), b->release(1);
        auto last = through(0, prompt, false);
        for (size_t i = 0; i < greedy.size(); ++i) {
          path.push_back(static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin()));
          last = through(static_cast<int>(prompt.size() + i), std::span(path).last(1), false);
        }
      };
      std::vector<float> exact;
      std::vector<int32_t> exact_path;
      run(TensorType::F32, exact, exact_path);
      for (TensorType t : {TensorType::F16, TensorType::Q8_0}) {
        std::vector<float> logits;
        std::vector<int32_t> path;
        run(t, logits, path);
        double diff = 0;
        for (size_t i = 0; i < logits.size(); ++i) diff = std::max(diff, std::fabs(double{logits[i]} - double{exact[i]}));
        int rows_agree = 0;
        for (size_t r = 0; r < all.size(); ++r) {
          const auto row = [&](const std::vector<float>& l) { return std::max_element(&l[r * V], &l[(r + 1) * V]) - &l[r * V]; };
          rows_agree += row(logits) == row(exact);
        }
        size_t same = 0;
        while (same < path.size() && path[same] == exact_path[same]) ++same;
        MESSAGE(std::string(name) << " over a " << tensor_type_name(t) << " hop: max |logit - f32 hop| = " << diff << ", argmax equal on "
                     << rows_agree << "/" << all.size() << " positions, greedy path equal for " << same << "/" << path.size()
                     << " tokens");
        CAPTURE(name);
        CAPTURE(tensor_type_name(t));
        // Measured on avx512 (the note on issue 16): f16 0.0027-0.0056, q8_0 0.057-0.143, and every
        // f16 greedy path equal. The limits leave room for other tables' summation orders and are
        // far below what a wrong scale or row order gives (units).
        CHECK(diff < (t == TensorType::F16 ? 0.02 : 0.4));
        if (t == TensorType::F16) CHECK(path == exact_path);
      }
    }
    if (ran == 0) MESSAGE("skipped: ../shared/models/random-arch is not here");
  }
}
