// Weight rows interleaved at load (runtime/kernels/interleaved_rows.h): the layout round-trips,
// its kernels give the plain kernels' bits, and a stage whose weights were rewritten computes
// what it computed before, without changing the file.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "runtime/kernels/half.h"
#include "runtime/kernels/interleaved_rows.h"
#include "runtime/kernels/kernels.h"
#include "runtime/kernels/thread_pool.h"
#include "runtime/model/matmul.h"
#include "runtime/model/stage.h"
#include "tests/kernel_test_util.h"
#include "tests/test_util.h"

using namespace hearth::runtime;
using hearth::test::random_floats;

namespace {

// The tables that have an interleaved Q4_K kernel (none on a CPU without AVX2, nor on ARM).
std::vector<const KernelTable*> interleaving_tables() {
  std::vector<const KernelTable*> out;
  for (const KernelTable* k : supported_kernels())
    if (gemm_kernel(*k, TensorType::Q4_K, RowLayout::kInterleaved8) != nullptr) out.push_back(k);
  return out;
}

std::vector<uint8_t> q4_k_rows(int n, int n_rows, uint32_t seed) {
  const size_t rb = row_bytes(TensorType::Q4_K, static_cast<uint64_t>(n));
  std::vector<uint8_t> w(rb * static_cast<size_t>(n_rows));
  for (int r = 0; r < n_rows; ++r) {
    const auto x = random_floats(static_cast<size_t>(n), seed + static_cast<uint32_t>(r));
    quantize_row(TensorType::Q4_K, x.data(), &w[rb * static_cast<size_t>(r)], n);
  }
  return w;
}

std::vector<uint8_t> interleaved(std::vector<uint8_t> w, size_t rb) {
  std::vector<uint8_t> scratch(kInterleavedRows * rb);
  for (size_t at = 0; at < w.size(); at += kInterleavedRows * rb) interleave_q4_k(&w[at], rb, scratch.data());
  return w;
}

// Every token's Q8_K blocks side by side, as matmul hands them to a gemm kernel.
std::vector<BlockQ8_K> q8_k_tokens(const KernelTable& k, int n, int n_tok, uint32_t seed) {
  const auto x = random_floats(static_cast<size_t>(n) * static_cast<size_t>(n_tok), seed);
  std::vector<BlockQ8_K> out(static_cast<size_t>(n / kQK) * static_cast<size_t>(n_tok));
  for (int t = 0; t < n_tok; ++t)
    k.quantize_q8_k(&x[static_cast<size_t>(t) * static_cast<size_t>(n)],
                    &out[static_cast<size_t>(t) * static_cast<size_t>(n / kQK)], n);
  return out;
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

}  // namespace

TEST_SUITE("interleaved_rows") {
  TEST_CASE("interleaving Q4_K rows permutes their bytes: the inverse gives them back, and a group holds what the layout says") {
    for (const int n : {256, 768}) {
      const size_t rb = row_bytes(TensorType::Q4_K, static_cast<uint64_t>(n));
      const std::vector<uint8_t> w = q4_k_rows(n, 16, 5);
      const std::vector<uint8_t> x8 = interleaved(w, rb);
      CHECK(x8 != w);
      std::vector<uint8_t> back = x8, scratch(kInterleavedRows * rb);
      for (size_t at = 0; at < back.size(); at += kInterleavedRows * rb) deinterleave_q4_k(&back[at], rb, scratch.data());
      CHECK(back == w);
      // The last super-block of group 1: row 8 + r's d, dmin, scale bytes 4..7 and quant bytes 32c + 4i.
      const size_t last = static_cast<size_t>(n / kQK) - 1;
      const uint8_t* block = &x8[8 * rb + last * kQ4_KInterleavedBlockBytes];
      for (int r = 0; r < 8; ++r) {
        const auto& src = reinterpret_cast<const BlockQ4_K*>(&w[(8 + static_cast<size_t>(r)) * rb])[last];
        CHECK(std::memcmp(block + 2 * r, &src.d, 2) == 0);
        CHECK(std::memcmp(block + 16 + 2 * r, &src.dmin, 2) == 0);
        CHECK(std::memcmp(block + 64 + 4 * r, src.scales + 4, 4) == 0);
        CHECK(std::memcmp(block + 128 + 32 * (8 * 2 + 3) + 4 * r, src.qs + 32 * 2 + 4 * 3, 4) == 0);
      }
    }
  }

  TEST_CASE(
      "the interleaved Q4_K kernel gives the plain kernel's bits for every row and token count, in every table that has it") {
    const auto tables = interleaving_tables();
    if (tables.empty()) {
      MESSAGE("skipped: no kernel table of this CPU has an interleaved Q4_K kernel");
      return;
    }
    for (const KernelTable* k : tables) {
      CAPTURE(std::string(k->name));
      for (const int n : {256, 1024, 2304}) {
        CAPTURE(n);
        const size_t rb = row_bytes(TensorType::Q4_K, static_cast<uint64_t>(n));
        for (const int n_rows : {8, 16, 40}) {
          CAPTURE(n_rows);
          const std::vector<uint8_t> w = q4_k_rows(n, n_rows, 100u + static_cast<uint32_t>(n));
          const std::vector<uint8_t> x8 = interleaved(w, rb);
          // 1: decode; 16 and 17: a whole tile of 16 tokens and one more; 33 several.
          for (const int n_tok : {1, 2, 7, 16, 17, 33}) {
            CAPTURE(n_tok);
            const std::vector<BlockQ8_K> x = q8_k_tokens(*k, n, n_tok, 7u + static_cast<uint32_t>(n_tok));
            const size_t xs = static_cast<size_t>(n / kQK) * sizeof(BlockQ8_K), ldy = static_cast<size_t>(n_rows) + 3;
            std::vector<float> want(ldy * static_cast<size_t>(n_tok), -1.f), got(want.size(), -1.f), scalar(want.size(), -1.f);
            gemm_kernel(*k, TensorType::Q4_K)(w.data(), rb, n_rows, x.data(), xs, n_tok, n, want.data(), ldy);
            gemm_kernel(scalar_kernels(), TensorType::Q4_K)(w.data(), rb, n_rows, x.data(), xs, n_tok, n, scalar.data(), ldy);
            gemm_kernel(*k, TensorType::Q4_K, RowLayout::kInterleaved8)(x8.data(), rb, n_rows, x.data(), xs, n_tok, n, got.data(),
                                                                        ldy);
            for (size_t i = 0; i < want.size(); ++i) {
              if (bits(got[i]) != bits(want[i])) FAIL_CHECK("output " << i << ": " << got[i] << " != " << want[i]);
              // The x86 tables' Q4_K is the scalar table's to within rounding (kernels_test), so
              // a mix-up of rows or sub-blocks would show here whatever the plain kernel does.
              CHECK(std::fabs(got[i] - scalar[i]) <= 1e-4f * (1.f + std::fabs(scalar[i])));
            }
          }
        }
      }
    }
  }

  TEST_CASE("matmul over interleaved rows gives the plain rows' bits for a token alone and in a batch, at 1 and 2 threads") {
    const KernelTable& k = best_kernels();
    if (gemm_kernel(k, TensorType::Q4_K, RowLayout::kInterleaved8) == nullptr) {
      MESSAGE("skipped: the " << k.name << " table has no interleaved Q4_K kernel");
      return;
    }
    const int n = 512, n_out = 72;  // 72 rows: the row split's last task is a group of 8 past its granules
    const size_t rb = row_bytes(TensorType::Q4_K, static_cast<uint64_t>(n));
    const std::vector<uint8_t> w = q4_k_rows(n, n_out, 9);
    const std::vector<uint8_t> x8 = interleaved(w, rb);
    const WeightMatrix plain{.type = TensorType::Q4_K, .data = w.data(), .n_in = n, .n_out = n_out, .row_bytes = rb};
    WeightMatrix inter = plain;
    inter.data = x8.data();
    inter.layout = RowLayout::kInterleaved8;
    const int n_tok = 20;
    const auto x = random_floats(static_cast<size_t>(n) * n_tok, 11);
    for (const int threads : {1, 2}) {
      ThreadPool pool(threads);
      MatmulScratch scratch(n_tok, n);
      std::vector<float> want(static_cast<size_t>(n_out) * n_tok), got(want.size()), alone(static_cast<size_t>(n_out));
      matmul(plain, x.data(), n_tok, want.data(), scratch, pool, k);
      matmul(inter, x.data(), n_tok, got.data(), scratch, pool, k);
      CHECK(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)) == 0);
      for (int t = 0; t < n_tok; t += 7) {
        matmul(inter, &x[static_cast<size_t>(t) * n], 1, alone.data(), scratch, pool, k);
        CHECK(std::memcmp(alone.data(), &want[static_cast<size_t>(t) * n_out], alone.size() * sizeof(float)) == 0);
      }
    }
  }

  TEST_CASE("a stage whose Q4_K weights were interleaved gives the same logits, the file stays as it was, and it cannot page") {
    if (gemm_kernel(best_kernels(), TensorType::Q4_K, RowLayout::kInterleaved8) == nullptr) {
      MESSAGE("skipped: the " << best_kernels().name << " table has no interleaved Q4_K kernel");
      return;
    }
    hearth::test::TempDir dir;
    MakeModelOptions o;
    o.type = TensorType::Q4_K;
    o.shape.n_embd = 256;
    o.shape.n_head = 4;
    o.shape.n_head_kv = 2;
    o.shape.n_ff = 512;
    o.shape.n_layer = 3;
    o.weight_std = 0.05f;
    const std::string path = hearth::test::make_model(dir, "q4k.gguf", o);
    const std::vector<uint8_t> before = hearth::test::read_bytes(path);
    const GgufFile file = GgufFile::open(path);
    const ModelConfig config = read_model_config(file);
    ThreadPool pool(2);
    const StageOptions options{.n_ctx = 64, .max_batch = 16};
    const std::vector<int32_t> prompt = {1, 5, 9, 200, 31, 7, 64, 3, 11, 100};
    const auto logits = [&](const std::shared_ptr<StageWeights>& w) {
      Stage stage(w, options, pool);
      std::vector<float> out;
      const SeqChunk chunk{1, 0, static_cast<int>(prompt.size())};
      const auto p = stage.forward({.chunks = {&chunk, 1}, .tokens = prompt, .all_logits = true});
      out.assign(p.begin(), p.end());
      const std::vector<int32_t> next = {42};
      const SeqChunk step{1, static_cast<int>(prompt.size()), 1};
      const auto d = stage.forward({.chunks = {&step, 1}, .tokens = next});
      out.insert(out.end(), d.begin(), d.end());
      return out;
    };
    const auto plain = std::make_shared<StageWeights>(file, config, StageSpec::whole(config.n_layer));
    const std::vector<float> want = logits(plain);
    const auto inter = std::make_shared<StageWeights>(file, config, StageSpec::whole(config.n_layer));
    const uint64_t bytes = lay_out_for_cpu(*inter, options);
    // Every layer's 7 matrices and the output head (the embedding keeps its rows).
    uint64_t dense = inter->output().bytes();
    for (int l = 0; l < config.n_layer; ++l) {
      const LayerWeights& w = inter->layer(l);
      for (const WeightMatrix* m : {&w.wq, &w.wk, &w.wv, &w.wo, &w.w_gate, &w.w_up, &w.w_down}) {
        CHECK(m->layout == RowLayout::kInterleaved8);
        dense += m->bytes();
      }
    }
    CHECK(bytes == dense);
    CHECK(inter->token_embd().layout == RowLayout::kRows);
    CHECK(inter->output().layout == RowLayout::kInterleaved8);
    const std::vector<float> got = logits(inter);
    REQUIRE(got.size() == want.size());
    CHECK(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)) == 0);
    CHECK(lay_out_for_cpu(*inter, options) == 0);  // once only
    CHECK_THROWS_AS(inter->prepare_for_paging({}), std::logic_error);
    CHECK(hearth::test::read_bytes(path) == before);
    // The plain stage's weights, mapped from the same file, did not change either.
    CHECK(logits(plain) == want);
  }

  TEST_CASE("matrices a GPU computes, a tied output head and a paging stage keep their rows") {
    if (gemm_kernel(best_kernels(), TensorType::Q4_K, RowLayout::kInterleaved8) == nullptr) {
      MESSAGE("skipped: the " << best_kernels().name << " table has no interleaved Q4_K kernel");
      return;
    }
    hearth::test::TempDir dir;
    MakeModelOptions o;
    o.type = TensorType::Q4_K;
    o.shape.n_embd = 256;
    o.shape.n_head = 4;
    o.shape.n_head_kv = 2;
    o.shape.n_ff = 512;
    o.shape.n_layer = 2;
    o.tied_output = true;
    const std::string path = hearth::test::make_model(dir, "tied.gguf", o);
    const GgufFile file = GgufFile::open(path);
    const ModelConfig config = read_model_config(file);
    StageWeights w(file, config, StageSpec::whole(config.n_layer));
    const uint8_t* kept = w.layer(1).w_down.data;
    w.interleave(best_kernels(), [&](const WeightMatrix& m) { return m.data == kept; });
    CHECK(w.layer(1).w_down.layout == RowLayout::kRows);
    CHECK(w.layer(1).w_up.layout == RowLayout::kInterleaved8);
    CHECK(w.output().layout == RowLayout::kRows);  // it is the token embedding
    StageWeights paged(file, config, StageSpec::whole(config.n_layer));
    StageOptions options;
    options.paging.layers = {1};
    CHECK(lay_out_for_cpu(paged, options) == 0);
  }
}
