// K-quants (Q4_K, Q5_K, Q6_K with Q8_K activations): block layouts from hand-built bytes, the
// quantizers, every kernel table against naive loops, and whole models through stages.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "runtime/model/generator.h"
#include "runtime/kernels/half.h"
#include "runtime/kernels/kernels.h"
#include "runtime/kernels/kquants.h"
#include "runtime/model/model_config.h"
#include "runtime/model/stage.h"
#include "tests/kernel_test_util.h"
#include "tests/test_util.h"

using namespace hearth::runtime;
using hearth::test::dequantized;
using hearth::test::naive_dot;
using hearth::test::quantized;
using hearth::test::random_floats;
using hearth::test::TempDir;

namespace {

constexpr TensorType kKTypes[] = {TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K};

// The scalar reference table and the one this CPU computes with.
std::vector<const KernelTable*> reference_and_best_tables() {
  std::vector<const KernelTable*> t{&scalar_kernels()};
  if (&best_kernels() != &scalar_kernels()) t.push_back(&best_kernels());
  return t;
}

float kernel_dot(const KernelTable& k, TensorType t, const void* w, const BlockQ8_K* x, int n_blocks) {
  switch (t) {
    case TensorType::Q4_K: return k.dot_q4_k(static_cast<const BlockQ4_K*>(w), x, n_blocks);
    case TensorType::Q5_K: return k.dot_q5_k(static_cast<const BlockQ5_K*>(w), x, n_blocks);
    default: return k.dot_q6_k(static_cast<const BlockQ6_K*>(w), x, n_blocks);
  }
}

// Blocks of random bytes, with scales d/dmin kept to sane magnitudes: every bit pattern of the
// packed values and sub-block scales occurs, including the extremes.
std::vector<uint8_t> random_blocks(TensorType t, int n_blocks, uint32_t seed) {
  std::mt19937 rng(seed);
  const uint64_t bytes = row_bytes(t, static_cast<uint64_t>(n_blocks) * kQK);
  std::vector<uint8_t> out(bytes);
  for (auto& b : out) b = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> scale(0.001f, 0.01f);
  for (int i = 0; i < n_blocks; ++i) {
    if (t == TensorType::Q6_K) {
      reinterpret_cast<BlockQ6_K*>(out.data())[i].d = fp32_to_fp16(scale(rng));
    } else {
      // Q4_K and Q5_K start with {d, dmin}.
      auto* h = reinterpret_cast<uint16_t*>(out.data() + static_cast<size_t>(i) * (bytes / static_cast<size_t>(n_blocks)));
      h[0] = fp32_to_fp16(scale(rng));
      h[1] = fp32_to_fp16(scale(rng));
    }
  }
  return out;
}

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
                                 StageOptions{.n_ctx = 64, .max_batch = 16}, pool);
}

std::vector<float> run(std::span<Stage* const> stages, uint64_t seq, int pos, const std::vector<int32_t>& tokens) {
  const SeqChunk chunk{seq, pos, static_cast<int>(tokens.size())};
  auto out = forward_chain(stages, {.chunks = {&chunk, 1}, .tokens = tokens, .all_logits = true});
  return {out.begin(), out.end()};
}

// The same model with every quantized tensor replaced by its dequantized f32 values.
std::string dequantized_copy(const std::string& src, const std::string& dst) {
  hearth::test::rewrite_gguf(src, dst, [](GgufMetadata&, std::vector<GgufTensorInfo>& tensors) {
    for (auto& t : tensors) t.type = TensorType::F32;
  });
  const GgufFile in = GgufFile::open(src), out = GgufFile::open(dst);
  const auto src_bytes = hearth::test::read_bytes(src);
  auto bytes = hearth::test::read_bytes(dst);
  for (const auto& t : in.tensors()) {
    if (t.type == TensorType::F32) continue;
    const auto& o = out.require_tensor(t.name);
    const uint64_t n_in = t.shape[0], rb = row_bytes(t.type, n_in);
    for (uint64_t r = 0; r < t.rows(); ++r)
      dequantize_row(t.type, &src_bytes[t.offset + r * rb], reinterpret_cast<float*>(&bytes[o.offset + r * n_in * 4]),
                     static_cast<int64_t>(n_in));
  }
  hearth::test::write_bytes(dst, bytes);
  return dst;
}

}  // namespace

TEST_SUITE("kquants") {
  TEST_CASE("Q4_K/Q5_K 6-bit scales and mins: hand-packed bytes unpack, and every value round-trips") {
    const uint8_t sc[8] = {1, 2, 3, 63, 17, 33, 48, 5}, mn[8] = {0, 7, 63, 1, 20, 40, 2, 60};
    // Bytes 0-3: scales 0-3 | top bits of scales 4-7 << 6; bytes 4-7: mins 0-3 | top bits of mins
    // 4-7 << 6; bytes 8-11: low nibbles of scale j | low nibble of min j << 4, j = 4..7.
    const uint8_t packed[12] = {0x41, 0x82, 0xC3, 0x3F, 0x40, 0x87, 0x3F, 0xC1, 0x41, 0x81, 0x20, 0xC5};
    for (int j = 0; j < 8; ++j) {
      uint8_t s, m;
      unpack_scale_min(packed, j, s, m);
      CHECK(s == sc[j]);
      CHECK(m == mn[j]);
    }
    uint8_t mine[12];
    pack_scale_min(sc, mn, mine);
    CHECK(std::memcmp(mine, packed, 12) == 0);
    for (int v = 0; v < 64; ++v)
      for (int j = 0; j < 8; ++j) {
        uint8_t s8[8] = {}, m8[8] = {}, p[12];
        s8[j] = static_cast<uint8_t>(v);
        m8[7 - j] = static_cast<uint8_t>(63 - v);
        pack_scale_min(s8, m8, p);
        for (int i = 0; i < 8; ++i) {
          uint8_t s, m;
          unpack_scale_min(p, i, s, m);
          REQUIRE(s == s8[i]);
          REQUIRE(m == m8[i]);
        }
      }
  }

  TEST_CASE("hand-built Q4_K and Q5_K blocks dequantize to known values") {
    const uint8_t sc[8] = {1, 2, 3, 63, 17, 33, 48, 5}, mn[8] = {0, 7, 63, 1, 20, 40, 2, 60};
    const uint8_t packed[12] = {0x41, 0x82, 0xC3, 0x3F, 0x40, 0x87, 0x3F, 0xC1, 0x41, 0x81, 0x20, 0xC5};
    std::vector<float> out(kQK);

    // Q4_K: x = d * sc[j] * q - dmin * m[j] for element e in sub-block j = e / 32. Element 64c + l
    // is the low nibble of qs[32c + l], element 64c + 32 + l its high nibble.
    BlockQ4_K q4{};
    q4.d = 0x3800;     // 0.5 in f16
    q4.dmin = 0x3400;  // 0.25
    std::memcpy(q4.scales, packed, 12);
    const auto v4 = [](int e) { return (e * 7 + e / 32) % 16; };
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) q4.qs[32 * c + l] = static_cast<uint8_t>(v4(64 * c + l) | (v4(64 * c + 32 + l) << 4));
    dequantize_row(TensorType::Q4_K, &q4, out.data(), kQK);
    for (int e = 0; e < kQK; ++e) {
      CAPTURE(e);
      REQUIRE(out[static_cast<size_t>(e)] == 0.5f * sc[e / 32] * static_cast<float>(v4(e)) - 0.25f * mn[e / 32]);
    }

    // Q5_K: the same plus a fifth bit: bit 2c of qh[l] for element 64c + l, bit 2c + 1 for
    // element 64c + 32 + l.
    BlockQ5_K q5{};
    q5.d = 0x3800;
    q5.dmin = 0x3400;
    std::memcpy(q5.scales, packed, 12);
    const auto v5 = [](int e) { return (e * 11 + 3) % 32; };
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) {
        const int a = v5(64 * c + l), b = v5(64 * c + 32 + l);
        q5.qs[32 * c + l] = static_cast<uint8_t>((a & 15) | ((b & 15) << 4));
        q5.qh[l] = static_cast<uint8_t>(q5.qh[l] | ((a >> 4) << (2 * c)) | ((b >> 4) << (2 * c + 1)));
      }
    dequantize_row(TensorType::Q5_K, &q5, out.data(), kQK);
    for (int e = 0; e < kQK; ++e) {
      CAPTURE(e);
      REQUIRE(out[static_cast<size_t>(e)] == 0.5f * sc[e / 32] * static_cast<float>(v5(e)) - 0.25f * mn[e / 32]);
    }
  }

  TEST_CASE("a hand-built Q6_K block dequantizes to known values") {
    // x = d * scales[e / 16] * (q - 32); per half h, for l < 32: element 128h + l is the low nibble
    // of ql[64h + l] and bits 0-1 of qh[32h + l]; 128h + 32 + l: low nibble of ql[64h + 32 + l],
    // bits 2-3; 128h + 64 + l: high nibble of ql[64h + l], bits 4-5; 128h + 96 + l: high nibble of
    // ql[64h + 32 + l], bits 6-7.
    BlockQ6_K b{};
    b.d = 0x3000;  // 0.125
    for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<int8_t>(j % 2 ? -(8 * j + 1) : 8 * j + 1);
    const auto v = [](int e) { return (e * 13 + 5) % 64; };
    for (int h = 0; h < 2; ++h)
      for (int l = 0; l < 32; ++l) {
        const int e = 128 * h + l;
        b.ql[64 * h + l] = static_cast<uint8_t>((v(e) & 15) | ((v(e + 64) & 15) << 4));
        b.ql[64 * h + 32 + l] = static_cast<uint8_t>((v(e + 32) & 15) | ((v(e + 96) & 15) << 4));
        b.qh[32 * h + l] =
            static_cast<uint8_t>((v(e) >> 4) | ((v(e + 32) >> 4) << 2) | ((v(e + 64) >> 4) << 4) | ((v(e + 96) >> 4) << 6));
      }
    std::vector<float> out(kQK);
    dequantize_row(TensorType::Q6_K, &b, out.data(), kQK);
    for (int e = 0; e < kQK; ++e) {
      CAPTURE(e);
      REQUIRE(out[static_cast<size_t>(e)] == 0.125f * b.scales[e / 16] * static_cast<float>(v(e) - 32));
    }
    CHECK(out[0] == 0.125f * 1 * (5 - 32));  // one element written out: q = 5, scale 1
  }

  TEST_CASE("Q8_K activations: every table bit-identical, within half a step, bsums are the sums") {
    for (int n : {256, 4096}) {
      auto x = random_floats(static_cast<size_t>(n), 30u + static_cast<uint32_t>(n));
      x[7] = 5.f;  // a positive extreme, then a tie of opposite sign later: the first one decides
      x[100] = -5.f;
      if (n > 256) std::fill(x.begin() + 512, x.begin() + 768, 0.f);  // an all-zero block
      std::vector<BlockQ8_K> ref(static_cast<size_t>(n / kQK));
      scalar_kernels().quantize_q8_k(x.data(), ref.data(), n);
      for (const KernelTable* k : reference_and_best_tables()) {
        CAPTURE(std::string(k->name));
        std::vector<BlockQ8_K> q(ref.size());
        k->quantize_q8_k(x.data(), q.data(), n);
        REQUIRE(std::memcmp(q.data(), ref.data(), q.size() * sizeof(BlockQ8_K)) == 0);
      }
      CHECK(ref[0].d == doctest::Approx(-5.f / 127));
      CHECK(ref[0].qs[7] == -127);
      CHECK(ref[0].qs[100] == 127);
      const auto y = dequantized(TensorType::Q8_K, ref.data(), x.size());
      for (size_t b = 0; b < ref.size(); ++b) {
        for (int g = 0; g < 16; ++g) {
          int sum = 0;
          for (int l = 0; l < 16; ++l) sum += ref[b].qs[16 * g + l];
          REQUIRE(ref[b].bsums[g] == sum);
        }
        for (size_t i = b * kQK; i < (b + 1) * kQK; ++i) REQUIRE(std::fabs(x[i] - y[i]) <= std::fabs(ref[b].d) * 0.5001f);
      }
    }
  }

  TEST_CASE("K-quant quantizers: every element within one step of its sub-block") {
    auto x = random_floats(256 * 16, 3);
    for (size_t i = 0; i < 256; ++i) x[i] = std::fabs(x[i]);              // a block with no negative value
    for (size_t i = 256; i < 512; ++i) x[i] = -std::fabs(x[i]) - 1;       // and one with no positive value
    for (size_t i = 512; i < 768; ++i) x[i] *= (i < 640 ? 1e-3f : 10.f);  // sub-blocks of very different ranges
    for (size_t i = 768; i < 1024; ++i) x[i] = 0.f;
    for (TensorType t : kKTypes) {
      CAPTURE(std::string(tensor_type_name(t)));
      const auto y = dequantized(t, quantized(t, x).data(), x.size());
      const int sub = t == TensorType::Q6_K ? 16 : 32;
      const double levels = t == TensorType::Q4_K ? 15 : t == TensorType::Q5_K ? 31 : 63;
      double worst = 0;
      for (size_t b = 0; b < x.size(); b += kQK) {
        float sb_amax = 0;
        for (size_t i = b; i < b + kQK; ++i) sb_amax = std::max(sb_amax, std::fabs(x[i]));
        for (size_t s = b; s < b + kQK; s += static_cast<size_t>(sub)) {
          float lo = 0, hi = 0;  // the range always includes 0
          for (size_t i = s; i < s + static_cast<size_t>(sub); ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
          // One step of the sub-block's own range, plus what the 6/8-bit quantized scales and the
          // f16 super-block scales may cost (a small fraction of the super-block's largest value).
          const double step = (hi - lo) / levels;
          for (size_t i = s; i < s + static_cast<size_t>(sub); ++i) {
            const double err = std::fabs(double{x[i]} - y[i]);
            worst = std::max(worst, err / (step + sb_amax / 60.0 + 1e-30));
            REQUIRE(err <= step + sb_amax / 60.0);
          }
        }
      }
      MESSAGE(tensor_type_name(t) << ": worst error / bound = " << worst);
    }
  }

  TEST_CASE("K-quant dot kernels agree with naive loops over the dequantized operands, in every table") {
    for (const KernelTable* k : reference_and_best_tables()) {
      CAPTURE(std::string(k->name));
      for (int n : {256, 512, 4096, 5632}) {
        CAPTURE(n);
        const auto w = random_floats(static_cast<size_t>(n), 10u + static_cast<uint32_t>(n));
        const auto x = random_floats(static_cast<size_t>(n), 20u + static_cast<uint32_t>(n));
        std::vector<BlockQ8_K> xq(static_cast<size_t>(n / kQK));
        k->quantize_q8_k(x.data(), xq.data(), n);
        const auto xd = dequantized(TensorType::Q8_K, xq.data(), x.size());
        for (TensorType t : kKTypes) {
          CAPTURE(std::string(tensor_type_name(t)));
          // Weights from the quantizer, and blocks of random bytes (every packed pattern).
          for (const auto& q : {quantized(t, w), random_blocks(t, n / kQK, static_cast<uint32_t>(n) + 7u)}) {
            const auto wd = dequantized(t, q.data(), w.size());
            const double expect = naive_dot(wd, xd);
            double mag = 0;  // sum of |terms|: the scale of float rounding in the kernel
            for (size_t i = 0; i < wd.size(); ++i) mag += std::fabs(double{wd[i]} * xd[i]);
            const float got = kernel_dot(*k, t, q.data(), xq.data(), n / kQK);
            REQUIRE(std::fabs(got - expect) <= 1e-5 * mag + 1e-6);
          }
        }
      }
    }
  }

  TEST_CASE("K-quant gemm kernels equal their table's dot kernel bit for bit on random blocks, whatever the tile") {
    // Random bytes: every value, scale and min pattern, including the extremes.
    for (const KernelTable* k : supported_kernels()) {
      CAPTURE(std::string(k->name));
      for (TensorType t : kKTypes) {
        CAPTURE(std::string(tensor_type_name(t)));
        // 19 rows: a full group of 16 (the x86 Q4_K prefill tiles) and a partial one.
        const int n_blocks = 3, n = n_blocks * kQK, n_rows = 19;
        std::vector<uint8_t> w;
        for (int r = 0; r < n_rows; ++r) {
          const auto row = random_blocks(t, n_blocks, 50u + static_cast<uint32_t>(r));
          w.insert(w.end(), row.begin(), row.end());
        }
        const size_t ws = row_bytes(t, static_cast<uint64_t>(n));
        // 17: a full group of 16 tokens (the x86 Q4_K prefill tiles) and one more.
        for (int n_tok : {1, 2, 3, 7, 13, 17}) {
          CAPTURE(n_tok);
          const auto x = random_floats(static_cast<size_t>(n_tok * n), 60u + static_cast<uint32_t>(n_tok));
          std::vector<BlockQ8_K> xq(static_cast<size_t>(n_tok * n_blocks));
          for (int tk = 0; tk < n_tok; ++tk)
            k->quantize_q8_k(&x[static_cast<size_t>(tk * n)], &xq[static_cast<size_t>(tk * n_blocks)], n);
          // These tables read the Q8_K blocks as they are (no packed layout for the K-quants).
          REQUIRE(k->packed_bytes(t, n) == 0);
          std::vector<float> y(static_cast<size_t>(n_tok * n_rows));
          gemm_kernel(*k, t)(w.data(), ws, n_rows, xq.data(), n_blocks * sizeof(BlockQ8_K), n_tok, n, y.data(), n_rows);
          for (int tk = 0; tk < n_tok; ++tk)
            for (int r = 0; r < n_rows; ++r) {
              const float want =
                  kernel_dot(*k, t, w.data() + static_cast<size_t>(r) * ws, &xq[static_cast<size_t>(tk * n_blocks)], n_blocks);
              REQUIRE(float_to_bits(y[static_cast<size_t>(tk * n_rows + r)]) == float_to_bits(want));
            }
        }
      }
    }
  }

  TEST_CASE("K-quant models: pipeline splits are bit-identical and logits match the same weights in f32") {
    TempDir dir;
    ThreadPool pool(2);
    const std::vector<int32_t> prompt{1, 50, 300, 7, 99, 410, 3, 12};
    for (TensorType t : kKTypes) {
      CAPTURE(std::string(tensor_type_name(t)));
      const std::string name = std::string(tensor_type_name(t));
      const std::string path = hearth::test::make_model(dir, name + ".gguf", hearth::test::superblock_model(t));
      const Model m = open_model(path);
      for (const auto& info : m.file.tensors())
        if (info.shape.size() == 2) REQUIRE(info.type == t);
      auto whole = make_stage(m, 0, 4, pool);
      auto a = make_stage(m, 0, 1, pool), b = make_stage(m, 1, 4, pool);
      Stage* one[] = {whole.get()};
      Stage* two[] = {a.get(), b.get()};
      const auto ref = run(one, 1, 0, prompt);
      CHECK(run(two, 1, 0, prompt) == ref);
      const std::vector<int32_t> next{42};
      CHECK(run(two, 1, 8, next) == run(one, 1, 8, next));

      // The f32 copy differs only by the activations' rounding to Q8_K (1/254 of each block's
      // largest value). Measured: 0.07-0.08 of logits up to ~3.4; Q8_0 activations (blocks of 32)
      // move the same models by 0.054. A wrong block or scale moves them by O(1).
      const Model f = open_model(dequantized_copy(path, dir.file(name + "-f32.gguf")));
      auto fs = make_stage(f, 0, 4, pool);
      Stage* fchain[] = {fs.get()};
      const auto fl = run(fchain, 1, 0, prompt);
      REQUIRE(fl.size() == ref.size());
      double diff = 0, mag = 0;
      for (size_t i = 0; i < fl.size(); ++i)
        diff = std::max(diff, double(std::fabs(fl[i] - ref[i]))), mag = std::max(mag, double(std::fabs(fl[i])));
      MESSAGE(name << ": max |logit - f32 copy| = " << diff << " (max |logit| " << mag << ")");
      CHECK(diff < 0.05 * mag);
    }
  }

  TEST_CASE("a model whose tensors mix types (K-quants where rows allow, fallbacks elsewhere) loads and runs") {
    TempDir dir;
    ThreadPool pool(2);
    for (TensorType t : kKTypes) {
      CAPTURE(std::string(tensor_type_name(t)));
      MakeModelOptions o = hearth::test::superblock_model(t);
      o.shape.n_ff = 384;  // ffn_down rows of 384 elements: not a multiple of 256
      const Model m = open_model(hearth::test::make_model(dir, "mixed.gguf", o));
      CHECK(m.file.require_tensor("blk.0.ffn_down.weight").type == k_quant_fallback(t));
      CHECK(m.file.require_tensor("blk.0.ffn_up.weight").type == t);
      auto s = make_stage(m, 0, 4, pool);
      Stage* chain[] = {s.get()};
      const auto logits = run(chain, 1, 0, {1, 2, 3});
      for (float v : logits) REQUIRE(std::isfinite(v));
    }
  }

  TEST_CASE("a tensor type without kernels is refused at load, naming the supported types") {
    TempDir dir;
    const std::string src = hearth::test::make_model(dir, "m.gguf", hearth::test::superblock_model(TensorType::Q4_K));
    const std::string dst = dir.file("q2k.gguf");
    hearth::test::rewrite_gguf(src, dst, [](GgufMetadata&, std::vector<GgufTensorInfo>& tensors) {
      for (auto& t : tensors)
        if (t.name == "blk.1.attn_v.weight") t.type = TensorType::Q2_K;
    });
    const Model m = open_model(dst);
    CHECK_THROWS_WITH_AS(StageWeights(m.file, m.config, StageSpec::whole(m.config.n_layer)),
                         doctest::Contains("'blk.1.attn_v.weight' has type q2_k, which this runtime cannot compute with "
                                           "(supported: f32, f16, q4_0, q5_0, q8_0, q4_k, q5_k, q6_k, bf16, iq4_nl, iq4_xs, mxfp4)"),
                         GgufError);
    // A stage without that layer does not need it.
    CHECK_NOTHROW(StageWeights(m.file, m.config, StageSpec{2, 4, false, true}));
  }

}  // TEST_SUITE
