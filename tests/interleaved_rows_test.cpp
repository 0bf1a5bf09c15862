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

constexpr TensorType kTypes[] = {TensorType::Q4_0, TensorType::Q4_K};

// The tables that have a kernel for interleaved rows of `t` (none on a CPU without AVX2, nor on ARM).
std::vector<const KernelTable*> interleaving_tables(TensorType t) {
  std::vector<const KernelTable*> out;
  for (const KernelTable* k : supported_kernels())
    if (gemm_kernel(*k, t, RowLayout::kInterleaved8) != nullptr) out.push_back(k);
  return out;
}

std::vector<uint8_t> random_rows(TensorType t, int n, int n_rows, uint32_t seed) {
  const size_t rb = row_bytes(t, static_cast<uint64_t>(n));
  std::vector<uint8_t> w(rb * static_cast<size_t>(n_rows));
  for (int r = 0; r < n_rows; ++r) {
    const auto x = random_floats(static_cast<size_t>(n), seed + static_cast<uint32_t>(r));
    quantize_row(t, x.data(), &w[rb * static_cast<size_t>(r)], n);
  }
  return w;
}

std::vector<uint8_t> interleaved(TensorType t, std::vector<uint8_t> w, size_t rb) {
  std::vector<uint8_t> scratch(kInterleavedRows * rb);
  for (size_t at = 0; at < w.size(); at += kInterleavedRows * rb) interleave_rows(t, &w[at], rb, scratch.data());
  return w;
}

// Every token's activations for weights of type t, side by side as matmul hands them to k's gemm
// kernels (quantized to the dot type, then packed where k packs), each `stride` bytes.
std::vector<uint8_t> gemm_activations(const KernelTable& k, TensorType t, int n, int n_tok, uint32_t seed, size_t& stride) {
  const auto x = random_floats(static_cast<size_t>(n) * static_cast<size_t>(n_tok), seed);
  const size_t blocks = row_bytes(dot_type(t), static_cast<uint64_t>(n)), packed = k.packed_bytes(t, n);
  stride = packed > 0 ? packed : blocks;
  std::vector<uint8_t> out(stride * static_cast<size_t>(n_tok)), q(blocks);
  for (int i = 0; i < n_tok; ++i) {
    const float* xi = &x[static_cast<size_t>(i) * static_cast<size_t>(n)];
    uint8_t* dst = &out[static_cast<size_t>(i) * stride];
    uint8_t* to = packed > 0 ? q.data() : dst;
    if (dot_type(t) == TensorType::Q8_0) k.quantize_q8_0(xi, reinterpret_cast<BlockQ8_0*>(to), n);
    else k.quantize_q8_k(xi, reinterpret_cast<BlockQ8_K*>(to), n);
    if (packed > 0) k.pack(t, q.data(), dst, n);
  }
  return out;
}

// The table stages use, or null (said) where HEARTH_KERNELS names one this CPU lacks (the
// suite's AVX2 run on a CPU without AVX2).
const KernelTable* stage_kernels() {
  try {
    return &best_kernels();
  } catch (const std::runtime_error& e) {
    MESSAGE("skipped: " << e.what());
    return nullptr;
  }
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

}  // namespace

TEST_SUITE("interleaved_rows") {
  TEST_CASE("interleaving rows permutes their bytes: the inverse gives them back, and a group holds what the layout says") {
    for (const TensorType t : kTypes)
      for (const int n : {256, 768}) {
        CAPTURE(std::string(tensor_type_name(t)));
        const size_t rb = row_bytes(t, static_cast<uint64_t>(n));
        const std::vector<uint8_t> w = random_rows(t, n, 16, 5);
        const std::vector<uint8_t> x8 = interleaved(t, w, rb);
        CHECK(x8 != w);
        std::vector<uint8_t> back = x8, scratch(kInterleavedRows * rb);
        for (size_t at = 0; at < back.size(); at += kInterleavedRows * rb) deinterleave_rows(t, &back[at], rb, scratch.data());
        CHECK(back == w);
      }
    // Q4_K, the last super-block of group 1: row 8 + r's d, dmin, scale bytes 4..7 and quant bytes 32c + 4i.
    for (const int n : {256, 768}) {
      const size_t rb = row_bytes(TensorType::Q4_K, static_cast<uint64_t>(n));
      const std::vector<uint8_t> w = random_rows(TensorType::Q4_K, n, 16, 5);
      const std::vector<uint8_t> x8 = interleaved(TensorType::Q4_K, w, rb);
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
    // Q4_0, block 2 of group 1: row 8 + r's d and quant bytes 12..15.
    const size_t rb = row_bytes(TensorType::Q4_0, 256);
    const std::vector<uint8_t> w = random_rows(TensorType::Q4_0, 256, 16, 6);
    const std::vector<uint8_t> x8 = interleaved(TensorType::Q4_0, w, rb);
    const uint8_t* block = &x8[8 * rb + 2 * kQ4_0InterleavedBlockBytes];
    for (int r = 0; r < 8; ++r) {
      const auto& src = reinterpret_cast<const BlockQ4_0*>(&w[(8 + static_cast<size_t>(r)) * rb])[2];
      CHECK(std::memcmp(block + 2 * r, &src.d, 2) == 0);
      CHECK(std::memcmp(block + 16 + 32 * 3 + 4 * r, src.qs + 12, 4) == 0);
    }
  }

  TEST_CASE("the interleaved kernels give the plain kernels' bits for every row and token count, in every table that has them") {
    for (const TensorType t : kTypes) {
      CAPTURE(std::string(tensor_type_name(t)));
      const auto tables = interleaving_tables(t);
      if (tables.empty())
        MESSAGE("skipped: no kernel table of this CPU has a kernel for interleaved " << tensor_type_name(t) << " rows");
      for (const KernelTable* k : tables) {
        CAPTURE(std::string(k->name));
        for (const int n : {256, 1024, 2304}) {
          CAPTURE(n);
          const size_t rb = row_bytes(t, static_cast<uint64_t>(n));
          for (const int n_rows : {8, 16, 40}) {
            CAPTURE(n_rows);
            const std::vector<uint8_t> w = random_rows(t, n, n_rows, 100u + static_cast<uint32_t>(n));
            const std::vector<uint8_t> x8 = interleaved(t, w, rb);
            // 1: decode; 8, 9, 12, 13, 16 and 17: whole tiles (AVX2: 8 tokens for Q4_0, 16 for
            // Q4_K; AVX-512: 12 and 16) and one more; 33: several.
            for (const int n_tok : {1, 2, 7, 8, 9, 12, 13, 16, 17, 33}) {
              CAPTURE(n_tok);
              const auto seed = 7u + static_cast<uint32_t>(n_tok);
              size_t xs = 0, scalar_xs = 0;
              const std::vector<uint8_t> x = gemm_activations(*k, t, n, n_tok, seed, xs);
              const std::vector<uint8_t> scalar_x = gemm_activations(scalar_kernels(), t, n, n_tok, seed, scalar_xs);
              const size_t ldy = static_cast<size_t>(n_rows) + 3;
              std::vector<float> want(ldy * static_cast<size_t>(n_tok), -1.f), got(want.size(), -1.f), scalar(want.size(), -1.f);
              gemm_kernel(*k, t)(w.data(), rb, n_rows, x.data(), xs, n_tok, n, want.data(), ldy);
              gemm_kernel(scalar_kernels(), t)(w.data(), rb, n_rows, scalar_x.data(), scalar_xs, n_tok, n, scalar.data(), ldy);
              gemm_kernel(*k, t, RowLayout::kInterleaved8)(x8.data(), rb, n_rows, x.data(), xs, n_tok, n, got.data(), ldy);
              // It reads nothing before or after the rows and tokens it is given (faults if it does).
              for (const bool at_end : {true, false}) {
                hearth::test::GuardedPages gw(x8.size()), gx(x.size());
                std::vector<float> guarded(want.size(), -1.f);
                gemm_kernel(*k, t, RowLayout::kInterleaved8)(gw.copy(x8.data(), x8.size(), at_end), rb, n_rows,
                                                             gx.copy(x.data(), x.size(), at_end), xs, n_tok, n, guarded.data(),
                                                             ldy);
                CHECK(std::memcmp(guarded.data(), got.data(), got.size() * sizeof(float)) == 0);
              }
              for (size_t i = 0; i < want.size(); ++i) {
                if (bits(got[i]) != bits(want[i])) FAIL_CHECK("output " << i << ": " << got[i] << " != " << want[i]);
                // The x86 tables are the scalar table's to within rounding (kernels_test), so a
                // mix-up of rows or sub-blocks would show here whatever the plain kernel does.
                CHECK(std::fabs(got[i] - scalar[i]) <= 1e-4f * (1.f + std::fabs(scalar[i])));
              }
            }
          }
        }
      }
    }
  }

  TEST_CASE("matmul over interleaved rows gives the plain rows' bits for a token alone and in a batch, at 1 and 2 threads") {
    const KernelTable* table = stage_kernels();
    if (table == nullptr) return;
    const KernelTable& k = *table;
    for (const TensorType t : kTypes) {
      CAPTURE(std::string(tensor_type_name(t)));
      if (gemm_kernel(k, t, RowLayout::kInterleaved8) == nullptr) {
        MESSAGE("skipped: the " << k.name << " table has no kernel for interleaved " << tensor_type_name(t) << " rows");
        continue;
      }
      const int n = 512, n_out = 72;  // 72 rows: the row split's last task is a group of 8 past its granules
      const size_t rb = row_bytes(t, static_cast<uint64_t>(n));
      const std::vector<uint8_t> w = random_rows(t, n, n_out, 9);
      const std::vector<uint8_t> x8 = interleaved(t, w, rb);
      const WeightMatrix plain{.type = t, .data = w.data(), .n_in = n, .n_out = n_out, .row_bytes = rb};
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
        for (int tok = 0; tok < n_tok; tok += 7) {
          matmul(inter, &x[static_cast<size_t>(tok) * n], 1, alone.data(), scratch, pool, k);
          CHECK(std::memcmp(alone.data(), &want[static_cast<size_t>(tok) * n_out], alone.size() * sizeof(float)) == 0);
        }
      }
    }
  }

  TEST_CASE("a stage whose weights were interleaved gives the same logits, the file stays as it was, and it cannot page") {
    if (stage_kernels() == nullptr) return;
    for (const TensorType t : kTypes) {
      CAPTURE(std::string(tensor_type_name(t)));
      if (gemm_kernel(best_kernels(), t, RowLayout::kInterleaved8) == nullptr) {
        MESSAGE("skipped: the " << best_kernels().name << " table has no kernel for interleaved " << tensor_type_name(t)
                                << " rows");
        continue;
      }
      hearth::test::TempDir dir;
      const MakeModelOptions o = hearth::test::superblock_model(t, 3);
      const std::string path = hearth::test::make_model(dir, "model.gguf", o);
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
      const uint64_t bytes = lay_out_for_cpu(*inter, options, 0, pool).interleaved;
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
      CHECK(lay_out_for_cpu(*inter, options, 0, pool).moved == 0);  // once only
      CHECK_THROWS_AS(inter->prepare_for_paging({}), std::logic_error);
      CHECK(hearth::test::read_bytes(path) == before);
      // The plain stage's weights, mapped from the same file, did not change either.
      CHECK(logits(plain) == want);
    }
  }

  TEST_CASE("matrices a GPU computes, a tied output head, a paging stage and weights beyond memory keep their rows") {
    if (stage_kernels() == nullptr) return;
    if (gemm_kernel(best_kernels(), TensorType::Q4_K, RowLayout::kInterleaved8) == nullptr) {
      MESSAGE("skipped: the " << best_kernels().name << " table has no interleaved Q4_K kernel");
      return;
    }
    hearth::test::TempDir dir;
    MakeModelOptions o = hearth::test::superblock_model(TensorType::Q4_K, 2);
    o.tied_output = true;
    const std::string path = hearth::test::make_model(dir, "tied.gguf", o);
    const GgufFile file = GgufFile::open(path);
    const ModelConfig config = read_model_config(file);
    StageWeights w(file, config, StageSpec::whole(config.n_layer));
    const uint8_t* kept = w.layer(1).w_down.data;
    ThreadPool pool(2);
    w.hold_in_memory(
        best_kernels(), [&](const WeightMatrix& m) { return m.data == kept; }, pool);
    CHECK(w.layer(1).w_down.layout == RowLayout::kRows);
    CHECK(w.layer(1).w_down.data == kept);  // the GPU's copy came from there: it stays mapped
    CHECK(w.layer(1).w_up.layout == RowLayout::kInterleaved8);
    CHECK(w.output().layout == RowLayout::kRows);  // it is the token embedding
    StageWeights paged(file, config, StageSpec::whole(config.n_layer));
    StageOptions options;
    options.paging.layers = {1};
    CHECK(lay_out_for_cpu(paged, options, 0, pool).moved == 0);
    // Weights beyond the stage's memory stay the file's pages, which the kernel can drop.
    StageWeights big(file, config, StageSpec::whole(config.n_layer));
    CHECK(lay_out_for_cpu(big, StageOptions{}, big.mapped_bytes() - 1, pool).moved == 0);
    CHECK(big.layer(0).wq.layout == RowLayout::kRows);
    CHECK(lay_out_for_cpu(big, StageOptions{}, big.mapped_bytes(), pool).interleaved > 0);
  }
}
