// A stage's weights moved into its own memory on 2 MiB pages (StageWeights::hold_in_memory):
// the same logits as mapped from the file, every matrix a step reads moved once (a fused tensor's
// two views together), the file and the pager's offsets as they were.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "runtime/format/gguf.h"
#include "runtime/kernels/huge_pages.h"
#include "runtime/kernels/thread_pool.h"
#include "runtime/model/model_maker.h"
#include "runtime/model/stage.h"
#include "tests/test_util.h"

using namespace hearth::runtime;

namespace {

// Prompt logits at every position, then one decode step's.
std::vector<float> logits_of(const std::shared_ptr<StageWeights>& w, ThreadPool& pool) {
  Stage stage(w, StageOptions{.n_ctx = 64, .max_batch = 16}, pool);
  const std::vector<int32_t> prompt = {1, 5, 9, 200, 31, 7, 64, 3, 11, 100};
  const SeqChunk chunk{1, 0, static_cast<int>(prompt.size())};
  const auto p = stage.forward({.chunks = {&chunk, 1}, .tokens = prompt, .all_logits = true});
  std::vector<float> out(p.begin(), p.end());
  const std::vector<int32_t> next = {42};
  const SeqChunk step{1, static_cast<int>(prompt.size()), 1};
  const auto d = stage.forward({.chunks = {&step, 1}, .tokens = next});
  out.insert(out.end(), d.begin(), d.end());
  return out;
}

// The bytes of the file's tensors a step reads whole or by expert, counted by name: every matrix
// but the token embeddings (read a row per token, unless the output head is the embedding) and
// the convolution taps (copied at load).
uint64_t step_tensor_bytes(const GgufFile& file) {
  const bool tied = file.find_tensor("output.weight") == nullptr;  // the output head reads the embedding whole
  uint64_t n = 0;
  for (const GgufTensorInfo& t : file.tensors()) {
    const bool matrix = t.shape.size() >= 2 && t.shape[1] > 1 && t.name.ends_with(".weight");
    const bool skipped = (t.name == "token_embd.weight" && !tied) || t.name == "per_layer_token_embd.weight" ||
                         t.name.ends_with("ssm_conv1d.weight");
    if (matrix && !skipped) n += t.n_bytes;
  }
  return n;
}

struct Case {
  std::string name;
  MakeModelOptions options;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const TensorType t : {TensorType::F16, TensorType::Q8_0, TensorType::Q6_K})
    out.push_back({"llama " + std::string(tensor_type_name(t)), hearth::test::superblock_model(t, 3)});
  MakeModelOptions tied = hearth::test::superblock_model(TensorType::Q8_0, 2);
  tied.tied_output = true;
  out.push_back({"llama, output tied to the embedding", tied});
  MakeModelOptions moe;
  moe.arch = "qwen3moe";
  moe.shape = *random_model_preset("tiny-moe");
  moe.type = TensorType::Q8_0;
  out.push_back({"qwen3moe", moe});
  MakeModelOptions fused = moe;  // Gemma 4 26B-A4B: a fused gate-up tensor per layer's experts
  fused.arch = "gemma4";
  fused.sliding_window = 8;
  out.push_back({"gemma4 MoE, fused gate-up experts", fused});
  return out;
}

}  // namespace

TEST_SUITE("held_weights") {
  TEST_CASE("weights held in memory give the mapped weights' logits, and every matrix a step reads moved once") {
    const bool huge = huge_pages_available();
    if (!huge) MESSAGE("this kernel gives no huge pages: only interleaved matrices move");
    for (const Case& c : cases()) {
      CAPTURE(c.name);
      hearth::test::TempDir dir;
      const std::string path = hearth::test::make_model(dir, "model.gguf", c.options);
      const std::vector<uint8_t> before = hearth::test::read_bytes(path);
      const GgufFile file = GgufFile::open(path);
      const ModelConfig config = read_model_config(file);
      ThreadPool pool(2);
      const auto plain = std::make_shared<StageWeights>(file, config, StageSpec::whole(config.n_layer));
      const auto held = std::make_shared<StageWeights>(file, config, StageSpec::whole(config.n_layer));
      const StageWeights::HeldBytes bytes = lay_out_for_cpu(*held, StageOptions{}, 0, pool);
      if (huge) CHECK(bytes.moved == step_tensor_bytes(file));
      else CHECK(bytes.moved == bytes.interleaved);
      MESSAGE(c.name << ": " << bytes.moved << " bytes moved, " << bytes.huge << " on huge pages");

      const std::vector<float> want = logits_of(plain, pool), got = logits_of(held, pool);
      REQUIRE(got.size() == want.size());
      CHECK(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)) == 0);

      // Where each matrix is now, the pager still finds where the file has it.
      for (int l = 0; l < config.n_layer; ++l) {
        const auto a = step_matrices(plain->layer(l)), b = step_matrices(held->layer(l));
        for (size_t i = 0; i < a.size(); ++i)
          if (a[i]->data != nullptr) CHECK(held->file_offset(b[i]->data) == plain->file_offset(a[i]->data));
        for (auto e : {&LayerWeights::gate_exps, &LayerWeights::up_exps, &LayerWeights::down_exps}) {
          const ExpertMatrix &pe = plain->layer(l).*e, &he = held->layer(l).*e;
          if (pe.n_expert > 0)
            CHECK(held->file_offset(he.expert(pe.n_expert - 1).data) == plain->file_offset(pe.expert(pe.n_expert - 1).data));
        }
      }
      CHECK(held->file_offset(held->output().data) == plain->file_offset(plain->output().data));
      if (c.options.tied_output) CHECK(held->output().data == held->token_embd().data);  // one tensor, moved once

      CHECK(lay_out_for_cpu(*held, StageOptions{}, 0, pool).moved == 0);  // once only
      if (bytes.moved > 0) CHECK_THROWS_AS(held->prepare_for_paging({}), std::logic_error);
      CHECK(hearth::test::read_bytes(path) == before);
      CHECK(logits_of(plain, pool) == want);  // the mapped stage's pages, dropped from the cache, read again
    }
  }

  TEST_CASE("a buffer on huge pages starts on a 2 MiB boundary and keeps its bytes when sealed and moved") {
    HugePageBuffer b(3 * kHugePage + 5);
    CHECK(reinterpret_cast<uintptr_t>(b.data()) % kHugePage == 0);
    std::memset(b.data(), 7, b.size());
    b.seal();
    CHECK(b.data()[b.size() - 1] == 7);
    CHECK(b.huge_bytes() % kHugePage == 0);  // whole huge pages, however many the kernel gave
    HugePageBuffer moved = std::move(b);
    CHECK(b.empty());
    CHECK(moved.size() == 3 * kHugePage + 5);
  }
}
