// A stage's matrix products on a GPU (runtime/gpu): the same tokens and nearly the same logits as
// the CPU. In CI the GPU is lavapipe (Mesa's Vulkan on the CPU), which runs the same shaders a
// graphics card runs; without any Vulkan device (or a build without Vulkan) the cases say so and
// check only what needs none.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <optional>
#include <random>

#include "runtime/gpu/gpu.h"
#include "runtime/model/generator.h"
#include "runtime/model/stage.h"
#include "tests/test_util.h"

using namespace hearth::runtime;
using hearth::test::open_whole_model;
using hearth::test::shared_file;
using hearth::test::WholeModel;

namespace {

// The device the tests use: a CPU one (lavapipe) when there is one, as in CI, so that the
// results do not depend on which graphics card a developer has; else the first.
std::optional<std::string> test_gpu() {
  if (!gpu_support_built()) {
    MESSAGE("skipped: this build has no Vulkan (install libvulkan-dev and glslc, as scripts/setup.sh does)");
    return std::nullopt;
  }
  const auto gpus = list_gpus();
  if (gpus.empty()) {
    MESSAGE("skipped: no Vulkan device (mesa-vulkan-drivers provides lavapipe)");
    return std::nullopt;
  }
  for (const GpuInfo& g : gpus)
    if (g.kind == "cpu") return std::to_string(g.index);
  return std::to_string(gpus.front().index);
}

// Options that put a stage's work on `gpu` (none: the CPU): its products, and the layers it
// runs whole.
StageOptions on(StageGpu* gpu, StageOptions o) {
  if (gpu) {
    o.offload = &gpu->offload();
    o.layers = gpu->layers();
  }
  return o;
}

// Logits of every position of `ids` in one batch, on `gpu` (or the CPU).
std::vector<float> all_logits(const WholeModel& m, const std::vector<int32_t>& ids, StageGpu* gpu,
                              TensorType kv_type = TensorType::F32) {
  ThreadPool pool(2);
  Stage stage(m.weights, on(gpu, {.n_ctx = 256, .max_batch = 64, .max_sequences = 1, .kv_type = kv_type}), pool);
  const SeqChunk chunk{1, 0, static_cast<int>(ids.size())};
  const auto out = stage.forward({.chunks = {&chunk, 1}, .tokens = ids, .all_logits = true});
  return {out.begin(), out.end()};
}

std::vector<int32_t> greedy(const WholeModel& m, const std::vector<int32_t>& prompt, int n, StageGpu* gpu) {
  ThreadPool pool(2);
  Stage stage(m.weights, on(gpu, {.n_ctx = 512, .max_batch = 64, .max_sequences = 1}), pool);
  std::vector<int32_t> out;
  std::vector<int32_t> next = prompt;
  int pos = 0;
  for (int i = 0; i < n; ++i) {
    const SeqChunk chunk{1, pos, static_cast<int>(next.size())};
    const auto logits = stage.forward({.chunks = {&chunk, 1}, .tokens = next});
    pos += static_cast<int>(next.size());
    const auto id = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(id);
    next = {id};
  }
  return out;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(double{a[i]} - double{b[i]}));
  return d;
}

double max_abs(const std::vector<float>& a) {
  double m = 0;
  for (float v : a) m = std::max(m, std::fabs(double{v}));
  return m;
}

bool k_quant(TensorType type) { return type == TensorType::Q4_K || type == TensorType::Q5_K || type == TensorType::Q6_K; }

MakeModelOptions random_model(TensorType type) {
  MakeModelOptions o;
  o.type = type;
  o.shape.n_layer = 4;
  if (k_quant(type)) {  // rows of whole K-quant blocks (256), as real models have
    o.shape.n_embd = 256;
    o.shape.n_ff = 512;
  }
  o.weight_std = 0.05f;  // enough signal that every layer matters to the logits
  return o;
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("a --gpu choice that names no GPU is refused with the reason") {
    hearth::test::TempDir dir;
    const WholeModel m = open_whole_model(hearth::test::make_model(dir, "m.gguf", random_model(TensorType::Q8_0)));
    CHECK_THROWS_AS(open_stage_gpu("fast", *m.weights, {}), GpuError);
    CHECK_THROWS_AS(open_stage_gpu("-1", *m.weights, {}), GpuError);
    CHECK_THROWS_AS(open_stage_gpu("99", *m.weights, {}), GpuError);
  }

  TEST_CASE("stories260K: the greedy continuation on the GPU is the CPU's, token for token") {
    const auto gpu_choice = test_gpu();
    const auto path = shared_file("models/stories260K/stories260K.gguf");
    const auto ref_path = shared_file("models/stories260K/reference/once_upon_a_time_32.kvf32.json");
    if (!gpu_choice || !path || !ref_path) return;
    std::ifstream rf(*ref_path);
    const std::vector<int32_t> prompt = nlohmann::json::parse(rf).at("prompt_ids").get<std::vector<int32_t>>();
    const WholeModel m = open_whole_model(*path);
    auto gpu = open_stage_gpu(*gpu_choice, *m.weights, {});
    MESSAGE("GPU: " << gpu->info().name << " (" << gpu->info().kind << ")");
    CHECK(gpu->placement().layers == m.config.n_layer);
    CHECK(gpu->placement().whole_layers == m.config.n_layer);
    CHECK(gpu->placement().output);
    const auto cpu_ids = greedy(m, prompt, 64, nullptr);
    const auto gpu_ids = greedy(m, prompt, 64, gpu.get());
    CHECK(gpu_ids == cpu_ids);
  }

  // Each product as the scalar CPU table computes it: quantized weights meet activations rounded
  // to Q8_0 or Q8_K the same way (quantize_q8_0.comp, quantize_q8_k.comp), so a block's sum is
  // the same integer, and only the order of f32 additions differs (about 1e-7 of the largest
  // output; 1e-5 leaves room for rows 100x longer).
  TEST_CASE("products of every weight type equal the CPU's up to the order of f32 sums") {
    const auto gpu_choice = test_gpu();
    if (!gpu_choice) return;
    for (const TensorType type : {TensorType::F32, TensorType::F16, TensorType::Q8_0, TensorType::Q4_0, TensorType::Q4_K,
                                  TensorType::Q5_K, TensorType::Q6_K}) {
      CAPTURE(tensor_type_name(type));
      hearth::test::TempDir dir;
      const WholeModel m = open_whole_model(hearth::test::make_model(dir, "m.gguf", random_model(type)));
      auto gpu = open_stage_gpu(*gpu_choice, *m.weights, {});
      ThreadPool pool(2);
      for (const WeightMatrix* w : {&m.weights->layer(0).w_gate, &m.weights->layer(1).w_down, &m.weights->output()}) {
        REQUIRE(gpu->offload().holds(*w));
        for (const int n_tokens : {1, 3, 9}) {  // 9: two of the shader's groups of 8 tokens
          CAPTURE(n_tokens);
          std::mt19937 rng(static_cast<uint32_t>(n_tokens));
          std::normal_distribution<float> normal(0.f, 1.f);
          std::vector<float> x(static_cast<size_t>(w->n_in * n_tokens)), cpu(static_cast<size_t>(w->n_out * n_tokens)), on_gpu(cpu.size());
          for (float& v : x) v = normal(rng);
          MatmulScratch scratch(n_tokens, w->n_in);
          matmul(*w, x.data(), n_tokens, cpu.data(), scratch, pool, scalar_kernels());
          const MatmulTarget target{w, on_gpu.data()};
          gpu->offload().matmul(std::span(&target, 1), x.data(), n_tokens);
          CHECK(max_abs_diff(on_gpu, cpu) / max_abs(cpu) < 1e-5);
        }
      }
    }
  }

  // Whole models: the products' small differences pass through every later layer. These random
  // models are chaotic at Q8_0 rounding boundaries (reference_test: llama.cpp's own f16- and
  // f32-KV logits differ by 1.5e-2 on them), and at f16 ones for f16 weights, whose activations
  // are rounded to f16 on the GPU as on the CPU and in llama.cpp (measured: 3.6e-4 from the CPU,
  // 3.4e-4 from llama.cpp), so those bounds are the reference test's.
  TEST_CASE("random-tiny: logits of every weight type near the CPU's and llama.cpp's") {
    const auto gpu_choice = test_gpu();
    if (!gpu_choice) return;
    struct Case {
      const char* type;
      double vs_cpu, vs_llama;  // bounds relative to the largest logit
    };
    for (const Case c : {Case{"f32", 1e-5, 1e-5}, Case{"f16", 2e-3, 2e-3}, Case{"q8_0", 2e-2, 2e-2}, Case{"q4_0", 2e-2, 2e-2}}) {
      const std::string type = c.type;
      CAPTURE(type);
      const std::string base = "models/random-tiny/";
      const auto model = shared_file(base + "tiny-" + c.type + ".gguf");
      const auto ref_path = shared_file(base + "reference/tiny-" + c.type + ".once_upon_a_time_32.kvf32.json");
      if (!model || !ref_path) return;
      std::ifstream rf(*ref_path);
      const auto ref = nlohmann::json::parse(rf);
      std::vector<int32_t> ids = ref.at("prompt_ids").get<std::vector<int32_t>>();
      const auto gen = ref.at("generated_ids").get<std::vector<int32_t>>();
      ids.insert(ids.end(), gen.begin(), gen.end());
      const auto expected = hearth::test::read_f32(*shared_file(base + "reference/" + ref.at("logits_file").get<std::string>()));
      const WholeModel m = open_whole_model(*model);
      auto gpu = open_stage_gpu(*gpu_choice, *m.weights, {});
      const auto on_gpu = all_logits(m, ids, gpu.get());
      const auto on_cpu = all_logits(m, ids, nullptr);
      const double scale = max_abs(on_cpu);
      const double vs_cpu = max_abs_diff(on_gpu, on_cpu) / scale, vs_ref = max_abs_diff(on_gpu, expected) / scale;
      MESSAGE(type << ": max |GPU - CPU| / max |logit| = " << vs_cpu << ", against llama.cpp " << vs_ref);
      CHECK(vs_cpu < c.vs_cpu);
      CHECK(vs_ref < c.vs_llama);
    }
  }

  // No shared reference has K-quant weights: these random models (rows of 256) are compared with
  // the CPU only. Measured, position by position: 1-3e-7 of the largest logit up to position 5;
  // at position 6, Q5_K (whether the GPU runs whole layers or products only) and Q6_K (whole
  // layers) jump to 1.8e-2 and 2.1e-2 and stay there (3.1e-2 at most over 11 positions): one
  // activation's Q8_K rounding flips on a 1e-7 difference and moves the later layers and
  // positions, as Q8_0's do in the random-tiny case above. Hence 5e-2; an f32 model (below, and
  // random-tiny f32 above) shows the layers themselves at 1e-7.
  TEST_CASE("K-quant models: logits of every position near the CPU's") {
    const auto gpu_choice = test_gpu();
    if (!gpu_choice) return;
    for (const TensorType type : {TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K}) {
      CAPTURE(tensor_type_name(type));
      hearth::test::TempDir dir;
      const WholeModel m = open_whole_model(hearth::test::make_model(dir, "m.gguf", random_model(type)));
      auto gpu = open_stage_gpu(*gpu_choice, *m.weights, {});
      CHECK(gpu->placement().layers == m.config.n_layer);
      const std::vector<int32_t> ids = {1, 17, 33, 2, 90, 41, 7, 250, 3, 64, 128};
      const auto on_gpu = all_logits(m, ids, gpu.get());
      const auto on_cpu = all_logits(m, ids, nullptr);
      const double vs_cpu = max_abs_diff(on_gpu, on_cpu) / max_abs(on_cpu);
      MESSAGE(tensor_type_name(type) << ": max |GPU - CPU| / max |logit| = " << vs_cpu);
      CHECK(vs_cpu < 5e-2);
    }
  }

  // The whole-layer path (layer_ops.comp: norms, RoPE, attention over the GPU's own cache,
  // SwiGLU, residuals) against the CPU and against the GPU's per-product path, on f32 weights
  // where no rounding of activations can flip: an f32 cache, and an f16 one (whose rounding both
  // sides do the same way, on values that may differ in the last bits).
  TEST_CASE("whole layers on the GPU: the CPU's logits, with an f32 or an f16 KV cache") {
    const auto gpu_choice = test_gpu();
    if (!gpu_choice) return;
    hearth::test::TempDir dir;
    const WholeModel m = open_whole_model(hearth::test::make_model(dir, "m.gguf", random_model(TensorType::F32)));
    auto whole = open_stage_gpu(*gpu_choice, *m.weights, {});
    auto products = open_stage_gpu(*gpu_choice, *m.weights, {.whole_layers = false});
    REQUIRE(whole->layers() != nullptr);
    CHECK(whole->layers()->end() == m.config.n_layer);
    CHECK(products->layers() == nullptr);
    const std::vector<int32_t> ids = {1, 17, 33, 2, 90, 41, 7, 250, 3, 64, 128, 5, 9};
    for (const TensorType kv : {TensorType::F32, TensorType::F16}) {
      CAPTURE(tensor_type_name(kv));
      const auto cpu = all_logits(m, ids, nullptr, kv);
      const uint64_t before = whole->counters().submissions;
      const auto on_whole = all_logits(m, ids, whole.get(), kv);
      CHECK(whole->counters().submissions - before == 2);  // the layers, then the output head: not 4 per layer
      const auto on_products = all_logits(m, ids, products.get(), kv);
      const double scale = max_abs(cpu);
      MESSAGE(tensor_type_name(kv) << " cache: whole layers " << max_abs_diff(on_whole, cpu) / scale << " from the CPU, "
                                   << max_abs_diff(on_whole, on_products) / scale << " from the products-only GPU path");
      // Measured: f32 5e-7 and 5e-7; f16 8e-6 and 2.5e-5, where a key or value 1e-7 away on either
      // side rounds to the neighbouring f16 (2^-11 of it) on one path and not the other.
      const double bound = kv == TensorType::F32 ? 1e-5 : 1e-4;
      CHECK(max_abs_diff(on_whole, cpu) / scale < bound);
      CHECK(max_abs_diff(on_whole, on_products) / scale < bound);
    }
    // A cache type the GPU's does not keep sends the layers back to the CPU's loop (their
    // products still on the GPU), saying why.
    ThreadPool pool(2);
    const Stage q8(m.weights, on(whole.get(), {.n_ctx = 64, .max_batch = 8, .max_sequences = 1, .kv_type = TensorType::Q8_0}),
                   pool);
    CHECK(q8.layers_refused().find("q8_0") != std::string::npos);
    // So do caches of which none fits what the weights left of the GPU's budget; where some
    // fit, that many layers run whole, from the first, and the rest product by product.
    auto tight = open_stage_gpu(*gpu_choice, *m.weights, {.budget_bytes = whole->placement().bytes});
    REQUIRE(tight->layers() != nullptr);
    const Stage big(m.weights, on(tight.get(), {.n_ctx = 256, .max_batch = 8, .max_sequences = 4}), pool);
    CHECK(big.layers_refused().find("budget") != std::string::npos);
    const uint64_t layer_cache =
        uint64_t{1} * 256 * 2 * static_cast<uint64_t>(m.config.kv_dim()) * sizeof(float);  // 1 x 256 tokens
    auto part =
        open_stage_gpu(*gpu_choice, *m.weights, {.budget_bytes = whole->placement().bytes + 2 * layer_cache + layer_cache / 2});
    const uint64_t before = part->counters().submissions;
    const auto on_part = all_logits(m, ids, part.get());  // n_ctx 256, one sequence
    CHECK(part->layers()->end() == 2);
    CHECK(part->counters().submissions - before == 1 + 2 * 4 + 1);  // layers 0-1, 4 products each of 2-3, the head
    CHECK(max_abs_diff(on_part, all_logits(m, ids, nullptr)) / max_abs(on_part) < 1e-5);
    // A stage made on the same GPU after another takes its caches: the first one's batches are refused.
    Stage first(m.weights, on(whole.get(), {.n_ctx = 64, .max_batch = 8, .max_sequences = 1}), pool);
    const Stage second(m.weights, on(whole.get(), {.n_ctx = 64, .max_batch = 8, .max_sequences = 1}), pool);
    const SeqChunk chunk{1, 0, 2};
    const std::vector<int32_t> two = {1, 2};
    CHECK_THROWS_AS(first.forward({.chunks = {&chunk, 1}, .tokens = two}), GpuError);
  }

  // A layer with a matrix of a type without a shader (Q5_0 here) runs on the per-product path,
  // those products on the CPU; before, the whole-layer path asked the GPU for a matrix it lacked.
  TEST_CASE("whole layers on the GPU: not for a layer with a matrix the GPU does not hold") {
    const auto gpu_choice = test_gpu();
    if (!gpu_choice) return;
    hearth::test::TempDir dir;
    const WholeModel m = open_whole_model(hearth::test::make_model(dir, "m.gguf", random_model(TensorType::Q5_0)));
    auto gpu = open_stage_gpu(*gpu_choice, *m.weights, {});
    CHECK(gpu->layers() == nullptr);
    CHECK(gpu->placement().whole_layers == 0);
    const std::vector<int32_t> ids = {1, 17, 33, 2, 90, 41};
    const auto on_gpu = all_logits(m, ids, gpu.get());
    const auto cpu = all_logits(m, ids, nullptr);
    CHECK(max_abs_diff(on_gpu, cpu) / max_abs(cpu) < 2e-2);
  }

  // Decoding token by token and rewinding (a regenerated answer) read and overwrite the GPU's
  // cache by position, as the CPU's.
  TEST_CASE("whole layers on the GPU: decode token by token, rewind, and reuse a released sequence's slot") {
    const auto gpu_choice = test_gpu();
    if (!gpu_choice) return;
    hearth::test::TempDir dir;
    const WholeModel m = open_whole_model(hearth::test::make_model(dir, "m.gguf", random_model(TensorType::F32)));
    auto gpu = open_stage_gpu(*gpu_choice, *m.weights, {});
    REQUIRE(gpu->layers() != nullptr);
    ThreadPool pool(2);
    Stage cpu(m.weights, {.n_ctx = 64, .max_batch = 16, .max_sequences = 2}, pool);
    Stage on_gpu(m.weights, on(gpu.get(), {.n_ctx = 64, .max_batch = 16, .max_sequences = 2}), pool);
    REQUIRE(on_gpu.layers_refused().empty());
    const auto step = [&](Stage& s, uint64_t seq, int pos, std::vector<int32_t> tokens) {
      const SeqChunk chunk{seq, pos, static_cast<int>(tokens.size())};
      const auto out = s.forward({.chunks = {&chunk, 1}, .tokens = tokens});
      return std::vector<float>(out.begin(), out.end());
    };
    const auto close = [&](const std::vector<float>& a, const std::vector<float>& b) {
      return max_abs_diff(a, b) / max_abs(b) < 1e-5;
    };
    CHECK(close(step(on_gpu, 1, 0, {1, 17, 33, 2}), step(cpu, 1, 0, {1, 17, 33, 2})));
    for (int pos = 4; pos < 9; ++pos) CHECK(close(step(on_gpu, 1, pos, {pos * 3}), step(cpu, 1, pos, {pos * 3})));
    // Back to position 2 with other tokens: the rows after it are overwritten before they are read.
    CHECK(close(step(on_gpu, 1, 2, {90, 41}), step(cpu, 1, 2, {90, 41})));
    CHECK(close(step(on_gpu, 1, 4, {5}), step(cpu, 1, 4, {5})));
    // A second sequence, then the first released and a third taking its slot.
    CHECK(close(step(on_gpu, 2, 0, {1, 5, 9}), step(cpu, 2, 0, {1, 5, 9})));
    on_gpu.release(1);
    cpu.release(1);
    CHECK(close(step(on_gpu, 3, 0, {1, 7}), step(cpu, 3, 0, {1, 7})));
    CHECK(close(step(on_gpu, 2, 3, {4}), step(cpu, 2, 3, {4})));
  }

  // The planner's figures of the GPU (hearth profile --gpu, hearthd): every type a stage puts there
  // timed, the budget the stage uses. lavapipe's figures are a functional check, not a speed.
  TEST_CASE("measuring a GPU times each weight type's product and a submission") {
    const auto gpu_choice = test_gpu();
    if (!gpu_choice) return;
    const GpuSpeeds s = measure_gpu(*gpu_choice, 1u << 20);
    CHECK(s.budget_bytes == default_gpu_budget(s.info.memory_bytes));
    for (const char* type : {"f32", "f16", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k"}) {
      CAPTURE(type);
      REQUIRE(s.decode_bytes_per_s.count(type) == 1);
      CHECK(s.decode_bytes_per_s.at(type) > 0);
    }
    CHECK(s.prefill_flop_s > 0);
    CHECK(s.submission_s > 0);
    MESSAGE(s.info.name << ": q8_0 " << s.decode_bytes_per_s.at("q8_0") / 1e9 << " GB/s, prefill " << s.prefill_flop_s / 1e9
                        << " GFLOP/s, a submission " << s.submission_s * 1e3 << " ms");
    CHECK_THROWS_AS(measure_gpu("99", 1u << 20), GpuError);
  }

  TEST_CASE("sequences batched on the GPU get what each gets alone") {
    const auto gpu_choice = test_gpu();
    if (!gpu_choice) return;
    hearth::test::TempDir dir;
    const WholeModel m = open_whole_model(hearth::test::make_model(dir, "m.gguf", random_model(TensorType::Q4_0)));
    auto gpu = open_stage_gpu(*gpu_choice, *m.weights, {});
    ThreadPool pool(2);
    REQUIRE(gpu->layers() != nullptr);  // whole layers, each sequence's cache in its own slot
    Stage stage(m.weights, on(gpu.get(), {.n_ctx = 64, .max_batch = 64, .max_sequences = 8}), pool);
    REQUIRE(stage.layers_refused().empty());
    const std::vector<std::vector<int32_t>> prompts = {{1, 5, 9}, {1, 7, 3, 8, 2}, {1, 4}};
    // Alone: each prompt, then its last logits row.
    std::vector<std::vector<float>> alone;
    for (size_t s = 0; s < prompts.size(); ++s) {
      const SeqChunk chunk{100 + s, 0, static_cast<int>(prompts[s].size())};
      const auto out = stage.forward({.chunks = {&chunk, 1}, .tokens = prompts[s]});
      alone.emplace_back(out.begin(), out.end());
    }
    // Together: the three prompts in one batch (one product over 10 tokens: 8 and 2 in the
    // shader's token groups, so a prompt's tokens land in different groups than alone).
    std::vector<SeqChunk> chunks;
    std::vector<int32_t> tokens;
    for (size_t s = 0; s < prompts.size(); ++s) {
      chunks.push_back({s + 1, 0, static_cast<int>(prompts[s].size())});
      tokens.insert(tokens.end(), prompts[s].begin(), prompts[s].end());
    }
    const auto together = stage.forward({.chunks = chunks, .tokens = tokens});
    const auto n_vocab = static_cast<size_t>(m.config.n_vocab);
    for (size_t s = 0; s < prompts.size(); ++s) {
      CAPTURE(s);
      CHECK(std::equal(alone[s].begin(), alone[s].end(), together.begin() + static_cast<std::ptrdiff_t>(s * n_vocab)));
    }
  }

  TEST_CASE("a GPU budget smaller than the stage keeps the first layers there and the rest on the CPU") {
    const auto gpu_choice = test_gpu();
    if (!gpu_choice) return;
    hearth::test::TempDir dir;
    // f32 weights: no rounding of activations, whose flips at a boundary would hide the small
    // differences this compares (f16 and Q8_0 logits move by 1e-4 to 1e-2 for one flip).
    const WholeModel m = open_whole_model(hearth::test::make_model(dir, "m.gguf", random_model(TensorType::F32)));
    // Room for two of the four layers' matrices, not the output head.
    uint64_t layer_bytes = 0;
    for (const WeightMatrix* w : {&m.weights->layer(0).wq, &m.weights->layer(0).wk, &m.weights->layer(0).wv, &m.weights->layer(0).wo,
                                  &m.weights->layer(0).w_gate, &m.weights->layer(0).w_up, &m.weights->layer(0).w_down})
      layer_bytes += w->bytes();
    auto gpu = open_stage_gpu(*gpu_choice, *m.weights, {.budget_bytes = 2 * layer_bytes + layer_bytes / 2});
    const GpuPlacement& p = gpu->placement();
    CHECK(p.layers == 2);
    CHECK(p.matrices == 14);
    CHECK_FALSE(p.output);
    CHECK(p.bytes == 2 * layer_bytes);
    REQUIRE_FALSE(p.left.empty());
    CHECK(p.left.back().find("layers 2-3") != std::string::npos);
    CHECK(gpu->offload().holds(m.weights->layer(1).w_down));
    CHECK_FALSE(gpu->offload().holds(m.weights->layer(2).wq));
    const std::vector<int32_t> ids = {1, 17, 33, 2, 90, 41};
    const auto split = all_logits(m, ids, gpu.get());
    const auto cpu = all_logits(m, ids, nullptr);
    CHECK(max_abs_diff(split, cpu) / max_abs(cpu) < 1e-4);
    CHECK(split != cpu);  // the first layers did run elsewhere
  }
}
