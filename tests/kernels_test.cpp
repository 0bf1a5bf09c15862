// Kernels against naive loops, for every table this CPU can run.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "runtime/kernels/aligned_vector.h"
#include "runtime/kernels/half.h"
#include "runtime/kernels/kernels.h"
#include "runtime/kernels/lut_quants.h"
#include "runtime/model/matmul.h"
#include "runtime/kernels/row_split.h"
#include "runtime/model/ops.h"
#include "tests/kernel_test_util.h"

using namespace hearth::runtime;
using hearth::test::dequantized;
using hearth::test::GuardedPages;
using hearth::test::naive_dot;
using hearth::test::quantized;
using hearth::test::random_floats;

namespace {

#if defined(__x86_64__)
__attribute__((target("f16c"))) uint16_t hw_to_half(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }
__attribute__((target("f16c"))) float hw_from_half(uint16_t h) { return _cvtsh_ss(h); }
#endif

std::vector<const KernelTable*> tables() { return supported_kernels(); }

bool is_float(TensorType t) { return t == TensorType::F32 || t == TensorType::F16 || t == TensorType::BF16; }

constexpr TensorType kAllTypes[] = {TensorType::F32,  TensorType::F16,  TensorType::BF16,  TensorType::Q8_0,
                                    TensorType::Q4_0, TensorType::Q5_0, TensorType::Q4_K,  TensorType::Q5_K,
                                    TensorType::Q6_K, TensorType::MXFP4, TensorType::IQ4_NL, TensorType::IQ4_XS};

// The dot kernel of k for a weight type whose activations are Q8_0.
float q8_0_dot(const KernelTable& k, TensorType t, const void* w, const BlockQ8_0* x, int nb) {
  switch (t) {
    case TensorType::Q8_0: return k.dot_q8_0(static_cast<const BlockQ8_0*>(w), x, nb);
    case TensorType::Q4_0: return k.dot_q4_0(static_cast<const BlockQ4_0*>(w), x, nb);
    case TensorType::Q5_0: return k.dot_q5_0(static_cast<const BlockQ5_0*>(w), x, nb);
    case TensorType::MXFP4: return k.dot_mxfp4(static_cast<const BlockMXFP4*>(w), x, nb);
    default: return k.dot_iq4_nl(static_cast<const BlockIQ4_NL*>(w), x, nb);
  }
}

}  // namespace

TEST_SUITE("kernels") {
  TEST_CASE("fp16 and bf16 conversions round to nearest even, like the hardware") {
    // Every half value converts to float and back unchanged (NaNs stay NaN).
    for (uint32_t h = 0; h < 65536; ++h) {
      const float f = fp16_to_fp32(static_cast<uint16_t>(h));
      if (std::isnan(f)) CHECK(std::isnan(fp16_to_fp32(fp32_to_fp16(f))));
      else REQUIRE(fp32_to_fp16(f) == h);
    }
#if defined(__x86_64__)
    if (__builtin_cpu_supports("f16c")) {
      std::mt19937 rng(3);
      for (int i = 0; i < 200000; ++i) {
        const uint32_t bits = rng();
        const float f = bits_to_float(bits);
        if (std::isnan(f)) continue;
        REQUIRE(fp32_to_fp16(f) == hw_to_half(f));
        REQUIRE(float_to_bits(fp16_to_fp32(static_cast<uint16_t>(bits))) ==
                float_to_bits(hw_from_half(static_cast<uint16_t>(bits))));
      }
    }
#endif
    CHECK(bf16_to_fp32(fp32_to_bf16(1.0f)) == 1.0f);
    CHECK(fp32_to_bf16(bits_to_float(0x3f808000)) == 0x3f80);  // tie goes to even
    CHECK(fp32_to_bf16(bits_to_float(0x3f818000)) == 0x3f82);
  }

  TEST_CASE("every table rounds f16 activations as the scalar conversion does, bit for bit") {
    // Random bit patterns (every exponent: subnormal results, overflow to infinity) and the ties
    // halfway between two halves, 8-wide and 4-wide vectors plus a scalar tail (n = 4099).
    std::mt19937 rng(11);
    std::vector<float> x(4099);
    for (size_t i = 0; i < x.size(); ++i) {
      float f = bits_to_float(rng());
      if (i % 3 == 0) f = bits_to_float((rng() & 0x80000000u) | ((rng() % 40 + 100) << 23) | (rng() & 0x7fe000u) | 0x1000u);
      x[i] = std::isnan(f) ? 1.f : f;
    }
    std::vector<uint16_t> want(x.size());
    for (size_t i = 0; i < x.size(); ++i) want[i] = fp32_to_fp16(x[i]);
    for (const KernelTable* k : tables()) {
      CAPTURE(std::string(k->name));
      std::vector<uint16_t> got(x.size());
      k->f32_to_f16(x.data(), got.data(), static_cast<int>(x.size()));
      CHECK(got == want);
    }
  }

  TEST_CASE("hand-built Q8_0 and Q4_0 blocks dequantize to known values") {
    BlockQ8_0 q8{};
    q8.d = fp32_to_fp16(0.5f);
    for (int i = 0; i < 32; ++i) q8.qs[i] = static_cast<int8_t>(i - 16);
    std::vector<float> out(32);
    dequantize_row(TensorType::Q8_0, &q8, out.data(), 32);
    for (int i = 0; i < 32; ++i) CHECK(out[static_cast<size_t>(i)] == 0.5f * static_cast<float>(i - 16));

    BlockQ4_0 q4{};
    q4.d = fp32_to_fp16(2.0f);
    for (int i = 0; i < 16; ++i) q4.qs[i] = static_cast<uint8_t>(i | ((15 - i) << 4));
    dequantize_row(TensorType::Q4_0, &q4, out.data(), 32);
    for (int i = 0; i < 16; ++i) {
      CHECK(out[static_cast<size_t>(i)] == 2.0f * static_cast<float>(i - 8));
      CHECK(out[static_cast<size_t>(i + 16)] == 2.0f * static_cast<float>(7 - i));
    }
  }

  TEST_CASE("a hand-built Q5_0 block dequantizes to known values; llama.cpp's quantizer maps the extreme to -16") {
    // x = d * (q - 16): low nibbles are elements 0..15, high nibbles 16..31, bit j of qh (little
    // endian) is element j's fifth bit.
    BlockQ5_0 b{};
    b.d = fp32_to_fp16(0.5f);
    const auto v = [](int j) { return (j * 9 + 4) % 32; };
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      b.qs[j] = static_cast<uint8_t>((v(j) & 15) | ((v(j + 16) & 15) << 4));
      qh |= static_cast<uint32_t>(v(j) >> 4) << j | static_cast<uint32_t>(v(j + 16) >> 4) << (j + 16);
    }
    b.qh[0] = static_cast<uint8_t>(qh), b.qh[1] = static_cast<uint8_t>(qh >> 8);
    b.qh[2] = static_cast<uint8_t>(qh >> 16), b.qh[3] = static_cast<uint8_t>(qh >> 24);
    std::vector<float> out(32);
    dequantize_row(TensorType::Q5_0, &b, out.data(), 32);
    for (int j = 0; j < 32; ++j) CHECK(out[static_cast<size_t>(j)] == 0.5f * static_cast<float>(v(j) - 16));

    std::vector<float> x(32, 0.25f);
    x[3] = 4.f;  // d = 4 / -16; 0.25 -> round(-1) + 16 = 15; 4 -> 0
    BlockQ5_0 q{};
    quantize_row(TensorType::Q5_0, x.data(), &q, 32);
    CHECK(fp16_to_fp32(q.d) == -0.25f);
    dequantize_row(TensorType::Q5_0, &q, out.data(), 32);
    CHECK(out[3] == 4.f);
    CHECK(out[0] == 0.25f);
  }

  TEST_CASE("hand-built MXFP4, IQ4_NL and IQ4_XS blocks dequantize to known values") {
    // MXFP4: 2^(e - 128) times the doubled E2M1 value of each nibble; e = 130 scales by 4.
    BlockMXFP4 m{};
    m.e = 130;
    for (int j = 0; j < 16; ++j) m.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
    std::vector<float> out(256);
    dequantize_row(TensorType::MXFP4, &m, out.data(), 32);
    const float e2m1[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
    for (int j = 0; j < 16; ++j) {
      CHECK(out[static_cast<size_t>(j)] == 8.f * e2m1[j]);
      CHECK(out[static_cast<size_t>(j + 16)] == 8.f * e2m1[15 - j]);
    }
    CHECK(mxfp4_scale(0) == std::ldexp(1.f, -128));  // the subnormal ends of E8M0, exact
    CHECK(mxfp4_scale(1) == std::ldexp(1.f, -127));
    CHECK(mxfp4_scale(255) == std::ldexp(1.f, 127));

    BlockIQ4_NL nl{};
    nl.d = fp32_to_fp16(0.5f);
    for (int j = 0; j < 16; ++j) nl.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
    dequantize_row(TensorType::IQ4_NL, &nl, out.data(), 32);
    for (int j = 0; j < 16; ++j) {
      CHECK(out[static_cast<size_t>(j)] == 0.5f * kIq4Values[j]);
      CHECK(out[static_cast<size_t>(j + 16)] == 0.5f * kIq4Values[15 - j]);
    }

    // IQ4_XS: sub-block j's 6-bit scale is a nibble of scales_l plus two bits of scales_h, less 32.
    BlockIQ4_XS xs{};
    xs.d = fp32_to_fp16(0.25f);
    const int ls[8] = {-32, -1, 0, 1, 5, 17, 30, 31};
    for (int j = 0; j < 8; ++j) {
      const int biased = ls[j] + 32;
      xs.scales_l[j / 2] = static_cast<uint8_t>(xs.scales_l[j / 2] | ((biased & 15) << (4 * (j % 2))));
      xs.scales_h = static_cast<uint16_t>(xs.scales_h | ((biased >> 4) << (2 * j)));
      for (int l = 0; l < 16; ++l) xs.qs[16 * j + l] = static_cast<uint8_t>(((l + j) % 16) | ((15 - l) << 4));
    }
    dequantize_row(TensorType::IQ4_XS, &xs, out.data(), 256);
    for (int j = 0; j < 8; ++j) {
      CHECK(iq4_xs_scale(xs, j) == ls[j]);
      for (int l = 0; l < 16; ++l) {
        CHECK(out[static_cast<size_t>(32 * j + l)] == 0.25f * static_cast<float>(ls[j]) * kIq4Values[(l + j) % 16]);
        CHECK(out[static_cast<size_t>(32 * j + 16 + l)] == 0.25f * static_cast<float>(ls[j]) * kIq4Values[15 - l]);
      }
    }
  }

  TEST_CASE("quantize then dequantize stays within each type's step") {
    const auto x = random_floats(4096, 1);
    struct Case {
      TensorType type;
      double max_rel_err;  // of max |x| per block
    };
    // MXFP4: the largest magnitude lies in [4, 8) scale steps and the grid's widest gap (8 to 12)
    // is 4 steps, so an element is off by at most half of that, a quarter of the largest.
    // IQ4_NL: the grid's widest gap is 23 of 127 (104 to 127), about 0.09 of the largest, plus
    // the scale search moving the grid by up to 7 of 127. IQ4_XS: the same grid, its group's scale
    // rounded to a 6-bit multiple of the super-block's (a relative error of 1/2 in 12 or more).
    for (const Case c :
         {Case{TensorType::F32, 0}, Case{TensorType::F16, 1e-3}, Case{TensorType::BF16, 8e-3}, Case{TensorType::Q8_0, 1.0 / 127},
          Case{TensorType::Q4_0, 1.0 / 8 + 1e-3}, Case{TensorType::Q5_0, 1.0 / 16 + 1e-3}, Case{TensorType::MXFP4, 0.25},
          Case{TensorType::IQ4_NL, 0.15}, Case{TensorType::IQ4_XS, 0.2}}) {
      CAPTURE(std::string(tensor_type_name(c.type)));
      const auto y = dequantized(c.type, quantized(c.type, x).data(), x.size());
      for (size_t b = 0; b < x.size(); b += 32) {
        float amax = 0;
        for (size_t i = b; i < b + 32; ++i) amax = std::max(amax, std::fabs(x[i]));
        for (size_t i = b; i < b + 32; ++i) REQUIRE(std::fabs(x[i] - y[i]) <= c.max_rel_err * amax + 1e-7);
      }
    }
  }

  TEST_CASE("float dot kernels agree with naive loops on rows with scalar tails, in every table") {
    for (const KernelTable* k : tables()) {
      CAPTURE(std::string(k->name));
      for (int n : {5, 13, 1052}) {  // no full vector; a lone last vector and a tail
        CAPTURE(n);
        const auto w = random_floats(static_cast<size_t>(n), 30u + static_cast<uint32_t>(n));
        const auto x = random_floats(static_cast<size_t>(n), 40u + static_cast<uint32_t>(n));
        const double bound = 1e-5 * std::sqrt(double(n));
        CHECK(std::fabs(k->dot_f32(w.data(), x.data(), n) - naive_dot(w, x)) < bound);
        std::vector<uint16_t> x16(x.size());
        k->f32_to_f16(x.data(), x16.data(), n);
        const auto w16 = quantized(TensorType::F16, w), wb16 = quantized(TensorType::BF16, w);
        const float f16 = k->dot_f16(reinterpret_cast<const uint16_t*>(w16.data()), x16.data(), n);
        CHECK(std::fabs(f16 - naive_dot(dequantized(TensorType::F16, w16.data(), w.size()),
                                        dequantized(TensorType::F16, x16.data(), x.size()))) < bound);
        const float bf16 = k->dot_bf16(reinterpret_cast<const uint16_t*>(wb16.data()), x.data(), n);
        CHECK(std::fabs(bf16 - naive_dot(dequantized(TensorType::BF16, wb16.data(), w.size()), x)) < bound);
      }
    }
  }

  TEST_CASE("dot kernels agree with naive loops, in every table") {
    for (const KernelTable* k : tables()) {
      CAPTURE(std::string(k->name));
      for (int n : {32, 64, 96, 4096, 5632}) {
        CAPTURE(n);
        const auto w = random_floats(static_cast<size_t>(n), 10u + static_cast<uint32_t>(n));
        const auto x = random_floats(static_cast<size_t>(n), 20u + static_cast<uint32_t>(n));
        const double scale = std::sqrt(double(n));  // typical magnitude of the dot product

        CHECK(std::fabs(k->dot_f32(w.data(), x.data(), n) - naive_dot(w, x)) < 1e-5 * scale);

        // f16 weights meet activations rounded to f16 (their dot type), bf16 weights f32 ones.
        std::vector<uint16_t> x16(x.size());
        k->f32_to_f16(x.data(), x16.data(), n);
        const auto x16d = dequantized(TensorType::F16, x16.data(), x.size());
        for (TensorType t : {TensorType::F16, TensorType::BF16}) {
          const auto q = quantized(t, w);
          const auto wd = dequantized(t, q.data(), w.size());
          const auto* h = reinterpret_cast<const uint16_t*>(q.data());
          const float got = t == TensorType::F16 ? k->dot_f16(h, x16.data(), n) : k->dot_bf16(h, x.data(), n);
          CHECK(std::fabs(got - naive_dot(wd, t == TensorType::F16 ? x16d : x)) < 1e-5 * scale);
        }

        // Quantized weights against Q8_0 activations: compare with the exact integer-domain sum
        // over the dequantized operands.
        std::vector<BlockQ8_0> xq(static_cast<size_t>(n / 32));
        k->quantize_q8_0(x.data(), xq.data(), n);
        std::vector<BlockQ8_0> xq_ref(xq.size());
        scalar_kernels().quantize_q8_0(x.data(), xq_ref.data(), n);
        REQUIRE(std::memcmp(xq.data(), xq_ref.data(), xq.size() * sizeof(BlockQ8_0)) == 0);
        const auto xd = dequantized(TensorType::Q8_0, xq.data(), x.size());
        for (TensorType t : {TensorType::Q8_0, TensorType::Q4_0, TensorType::Q5_0, TensorType::MXFP4, TensorType::IQ4_NL}) {
          CAPTURE(std::string(tensor_type_name(t)));
          const auto q = quantized(t, w);
          const auto wd = dequantized(t, q.data(), w.size());
          const float got = q8_0_dot(*k, t, q.data(), xq.data(), n / 32);
          CHECK(std::fabs(got - naive_dot(wd, xd)) < 1e-5 * scale);
        }
      }
    }
  }

  TEST_CASE("matmul equals row-by-row dot products for 1 and many tokens, any thread count") {
    // 512: f16 activations of a multiple of 512 elements are laid out a line apart (f16_stride).
    for (const int n_in : {256, 512})
      for (TensorType t : kAllTypes) {
        const int n_out = 100;
        const auto wf = random_floats(static_cast<size_t>(n_in * n_out), 5);
        CAPTURE(n_in);
        CAPTURE(std::string(tensor_type_name(t)));
        std::vector<uint8_t> data(row_bytes(t, n_in) * n_out);
        for (int r = 0; r < n_out; ++r)
          quantize_row(t, &wf[static_cast<size_t>(r * n_in)], data.data() + r * row_bytes(t, n_in), n_in);
        const WeightMatrix w{t, data.data(), n_in, n_out, row_bytes(t, n_in)};
        for (int n_tok : {1, 3, 17}) {
          const auto x = random_floats(static_cast<size_t>(n_tok * n_in), 7u + static_cast<uint32_t>(n_tok));
          std::vector<float> y1(static_cast<size_t>(n_tok * n_out)), y2(y1.size());
          MatmulScratch scratch(n_tok, n_in);
          ThreadPool one(1), two(2);
          matmul(w, x.data(), n_tok, y1.data(), scratch, one, best_kernels());
          matmul(w, x.data(), n_tok, y2.data(), scratch, two, best_kernels());
          CHECK(y1 == y2);  // rows are split across threads, never a row's sum
          for (int tk = 0; tk < n_tok; ++tk) {
            std::vector<float> xt(x.begin() + tk * n_in, x.begin() + (tk + 1) * n_in);
            if (dot_type(t) == TensorType::Q8_0 || dot_type(t) == TensorType::F16)
              xt = dequantized(dot_type(t), quantized(dot_type(t), xt).data(), xt.size());
            if (dot_type(t) == TensorType::Q8_K) {
              std::vector<uint8_t> q(row_bytes(TensorType::Q8_K, xt.size()));
              best_kernels().quantize_q8_k(xt.data(), reinterpret_cast<BlockQ8_K*>(q.data()), n_in);
              xt = dequantized(TensorType::Q8_K, q.data(), xt.size());
            }
            // Float weights against their dot type differ only in summation order (~1e-6 here; f16
            // activations left unrounded would be ~1e-3 off); the quantized ones within 2e-2.
            const bool float_weights = is_float(t);
            for (int r = 0; r < n_out; ++r) {
              std::vector<float> wr(static_cast<size_t>(n_in));
              dequantize_row(t, w.row(r), wr.data(), n_in);
              REQUIRE(std::fabs(y1[static_cast<size_t>(tk * n_out + r)] - naive_dot(wr, xt)) < (float_weights ? 1e-4 : 2e-2));
            }
          }
        }
      }
  }

  // Weights of every computable type with random values; K-quant rows need multiples of 256.
  std::vector<uint8_t> random_matrix(TensorType t, int n_in, int n_out, uint32_t seed) {
    const auto wf = random_floats(static_cast<size_t>(n_in) * static_cast<size_t>(n_out), seed);
    std::vector<uint8_t> data(row_bytes(t, static_cast<uint64_t>(n_in)) * static_cast<size_t>(n_out));
    for (int r = 0; r < n_out; ++r)
      quantize_row(t, &wf[static_cast<size_t>(r) * static_cast<size_t>(n_in)],
                   data.data() + r * row_bytes(t, static_cast<uint64_t>(n_in)), n_in);
    return data;
  }


  // One token's activations for `t` in table k's packed form, and the dot kernel of k on row w.
  struct TokenActivations {
    std::vector<float> f32;
    std::vector<uint8_t> blocks;  // Q8_0, Q8_K or f16
    std::vector<uint8_t> packed;  // k.pack() of the blocks, if k packs for t
  };

  TokenActivations activations_for(const KernelTable& k, TensorType t, const float* x, int n) {
    TokenActivations a;
    a.f32.assign(x, x + n);
    if (dot_type(t) == TensorType::Q8_0) {
      a.blocks.resize(static_cast<size_t>(n / 32) * sizeof(BlockQ8_0));
      k.quantize_q8_0(x, reinterpret_cast<BlockQ8_0*>(a.blocks.data()), n);
    } else if (dot_type(t) == TensorType::Q8_K) {
      a.blocks.resize(static_cast<size_t>(n / 256) * sizeof(BlockQ8_K));
      k.quantize_q8_k(x, reinterpret_cast<BlockQ8_K*>(a.blocks.data()), n);
    } else if (dot_type(t) == TensorType::F16) {
      a.blocks.resize(static_cast<size_t>(n) * sizeof(uint16_t));
      k.f32_to_f16(x, reinterpret_cast<uint16_t*>(a.blocks.data()), n);
    }
    if (const size_t bytes = k.packed_bytes(t, n); bytes > 0) {
      a.packed.resize(bytes);
      k.pack(t, a.blocks.data(), a.packed.data(), n);
    }
    return a;
  }

  // The dot kernel of k for `t` on row w, with a token's activations as floats (f32, bf16 weights)
  // or as blocks of its dot type (the others).
  float dot_at(const KernelTable& k, TensorType t, const uint8_t* w, const float* x_f32, const void* x, int n) {
    switch (t) {
      case TensorType::F32: return k.dot_f32(reinterpret_cast<const float*>(w), x_f32, n);
      case TensorType::F16: return k.dot_f16(reinterpret_cast<const uint16_t*>(w), static_cast<const uint16_t*>(x), n);
      case TensorType::BF16: return k.dot_bf16(reinterpret_cast<const uint16_t*>(w), x_f32, n);
      case TensorType::Q8_0:
      case TensorType::Q4_0:
      case TensorType::Q5_0:
      case TensorType::MXFP4:
      case TensorType::IQ4_NL: return q8_0_dot(k, t, w, static_cast<const BlockQ8_0*>(x), n / 32);
      case TensorType::IQ4_XS: return k.dot_iq4_xs(reinterpret_cast<const BlockIQ4_XS*>(w), static_cast<const BlockQ8_K*>(x), n / 256);
      case TensorType::Q4_K: return k.dot_q4_k(reinterpret_cast<const BlockQ4_K*>(w), static_cast<const BlockQ8_K*>(x), n / 256);
      case TensorType::Q5_K: return k.dot_q5_k(reinterpret_cast<const BlockQ5_K*>(w), static_cast<const BlockQ8_K*>(x), n / 256);
      default: return k.dot_q6_k(reinterpret_cast<const BlockQ6_K*>(w), static_cast<const BlockQ8_K*>(x), n / 256);
    }
  }

  float table_dot(const KernelTable& k, TensorType t, const uint8_t* w, const TokenActivations& a, int n) {
    return dot_at(k, t, w, a.f32.data(), a.blocks.data(), n);
  }

  // The activations of each token of x (n floats each).
  std::vector<TokenActivations> tokens_for(const KernelTable& k, TensorType t, const std::vector<float>& x, int n) {
    std::vector<TokenActivations> acts;
    for (size_t at = 0; at + static_cast<size_t>(n) <= x.size(); at += static_cast<size_t>(n))
      acts.push_back(activations_for(k, t, &x[at], n));
    return acts;
  }

  // A gemm kernel's input: every token's activations side by side, as matmul lays them out, each
  // `stride` bytes.
  std::vector<uint8_t> gemm_input(TensorType t, const std::vector<TokenActivations>& acts, size_t& stride) {
    const auto bytes_of = [&](const TokenActivations& a) -> std::pair<const uint8_t*, size_t> {
      if (dot_type(t) == TensorType::F32) return {reinterpret_cast<const uint8_t*>(a.f32.data()), a.f32.size() * 4};
      const auto& v = a.packed.empty() ? a.blocks : a.packed;
      return {v.data(), v.size()};
    };
    stride = bytes_of(acts[0]).second;
    std::vector<uint8_t> in(stride * acts.size());
    for (size_t tk = 0; tk < acts.size(); ++tk) std::memcpy(&in[tk * stride], bytes_of(acts[tk]).first, stride);
    return in;
  }

  TEST_CASE("gemm kernels equal their table's dot kernel bit for bit, whatever the tile (batch invariance)") {
    // Row and token counts around every tile shape (tiles of 1, 2, 4, 8 or 16 rows, a last one that
    // overlaps the one before, single rows when fewer than a tile; 1..8 tokens and remainders),
    // rows with a partial last group of blocks (n = 96, 160: 3 and 5 blocks of 32), a strided
    // output, and an output row stride larger than the rows computed. 17 or more rows of 2048 f32
    // are more than a float gemm's block of rows (kernel_tiles.h): a block boundary falls inside.
    for (const KernelTable* k : tables()) {
      CAPTURE(std::string(k->name));
      for (TensorType t : kAllTypes) {
        CAPTURE(std::string(tensor_type_name(t)));
        const bool kquant = dot_type(t) == TensorType::Q8_K;
        const bool float_weights = is_float(t);
        for (int n : kquant ? std::vector<int>{256, 768}
                     // float rows: fewer than 8 elements, 1-7 vectors of 8 (a partial group of the 4 FMA
                     // chains, 2 for f16), scalar tails, and past a 64-vector block (1000: 125
                     // vectors; 1052: 131 and a tail, past f16's 128-vector block too), so a partial
                     // block and a lone last vector follow full ones
                     : float_weights ? std::vector<int>{5, 8, 20, 32, 40, 48, 56, 108, 160, 1000, 1052, 2048}
                                     : std::vector<int>{32, 96, 160, 2048}) {
          CAPTURE(n);
          // With the sub-range below (5 rows fewer), every remainder of a tile of 4 rows (float
          // tiles) or 8 (AVX-512 quantized tiles) appears, and groups of 16 rows (Q4_0, Q4_K) full and
          // cut short.
          for (const int n_rows : {17, 18, 19, 23}) {
            CAPTURE(n_rows);
            const auto w = random_matrix(t, n, n_rows, 100u + static_cast<uint32_t>(n));
            const size_t ws = row_bytes(t, static_cast<uint64_t>(n));
            // 9 and 13: a full tile of 8 tokens (AVX2 Q4_0) and 1 or 5 more, 13 also one of 12
            // (AVX-512 Q4_0) and 1 more, 17 one of 16 (Q4_K) and 1 more; 7 and 11 likewise around
            // tiles of 4.
            for (int n_tok : {1, 2, 3, 4, 5, 7, 9, 11, 13, 17}) {
              CAPTURE(n_tok);
              const auto x =
                  random_floats(static_cast<size_t>(n_tok) * static_cast<size_t>(n), 7u + static_cast<uint32_t>(n_tok));
              const std::vector<TokenActivations> acts = tokens_for(*k, t, x, n);
              size_t xs = 0;
              const std::vector<uint8_t> xin = gemm_input(t, acts, xs);
              const size_t ldy = n_rows + 3;
              std::vector<float> y(ldy * static_cast<size_t>(n_tok), -1.f);
              gemm_kernel(*k, t)(w.data(), ws, n_rows, xin.data(), xs, n_tok, n, y.data(), ldy);
              for (int tk = 0; tk < n_tok; ++tk)
                for (int r = 0; r < n_rows; ++r) {
                  const float want = table_dot(*k, t, w.data() + static_cast<size_t>(r) * ws, acts[static_cast<size_t>(tk)], n);
                  const float got = y[static_cast<size_t>(tk) * ldy + static_cast<size_t>(r)];
                  if (float_to_bits(got) != float_to_bits(want))
                    FAIL_CHECK("row " << r << " token " << tk << ": " << got << " != " << want);
                }
              // Nothing is written past the last row (a last tile ends at it, see kernel_tiles.h).
              for (int tk = 0; tk < n_tok; ++tk)
                for (size_t r = static_cast<size_t>(n_rows); r < ldy; ++r) REQUIRE(y[static_cast<size_t>(tk) * ldy + r] == -1.f);
              // Also a sub-range of rows starting inside: the tiles shift, the results may not.
              std::vector<float> y2(ldy * static_cast<size_t>(n_tok), -1.f);
              gemm_kernel(*k, t)(w.data() + 5 * ws, ws, n_rows - 5, xin.data(), xs, n_tok, n, y2.data(), ldy);
              for (int tk = 0; tk < n_tok; ++tk)
                for (int r = 5; r < n_rows; ++r)
                  REQUIRE(float_to_bits(y2[static_cast<size_t>(tk) * ldy + static_cast<size_t>(r - 5)]) ==
                          float_to_bits(y[static_cast<size_t>(tk) * ldy + static_cast<size_t>(r)]));
            }
          }
        }
      }
    }
  }

  TEST_CASE("no kernel reads a byte before or after the rows, tokens, keys and values it is given (guard pages)") {
    for (const KernelTable* k : tables()) {
      CAPTURE(std::string(k->name));
      for (TensorType t : kAllTypes) {
        CAPTURE(std::string(tensor_type_name(t)));
        const bool kquant = dot_type(t) == TensorType::Q8_K;
        const bool float_weights = is_float(t);
        for (int n : kquant          ? std::vector<int>{256, 768}
                     : float_weights ? std::vector<int>{5, 20, 40, 108, 1052}
                                     : std::vector<int>{32, 96, 160}) {
          CAPTURE(n);
          for (const int n_rows : {1, 2, 5, 9, 17}) {
            CAPTURE(n_rows);
            const auto w = random_matrix(t, n, n_rows, 300u + static_cast<uint32_t>(n));
            const size_t ws = row_bytes(t, static_cast<uint64_t>(n));
            for (int n_tok : {1, 3, 5, 13}) {
              CAPTURE(n_tok);
              const auto x = random_floats(static_cast<size_t>(n_tok) * static_cast<size_t>(n), 9u);
              const std::vector<TokenActivations> acts = tokens_for(*k, t, x, n);
              size_t xs = 0;
              const std::vector<uint8_t> xin = gemm_input(t, acts, xs);
              const size_t outs = static_cast<size_t>(n_rows) * static_cast<size_t>(n_tok);
              std::vector<float> want(outs), got(outs);
              gemm_kernel(*k, t)(w.data(), ws, n_rows, xin.data(), xs, n_tok, n, want.data(), n_rows);
              for (const bool at_end : {true, false}) {
                CAPTURE(at_end);
                GuardedPages gw(w.size()), gx(xin.size());
                gemm_kernel(*k, t)(gw.copy(w.data(), w.size(), at_end), ws, n_rows, gx.copy(xin.data(), xin.size(), at_end), xs,
                                   n_tok, n, got.data(), n_rows);
                CHECK(std::memcmp(got.data(), want.data(), outs * 4) == 0);
              }
            }
          }
          // The dot kernel, its one row and one token against each guard; and how the token got
          // there: converted (f16, Q8_0, Q8_K) and packed.
          const auto w = random_matrix(t, n, 1, 17u);
          const auto x = random_floats(static_cast<size_t>(n), 18u);
          const TokenActivations a = activations_for(*k, t, x.data(), n);
          for (const bool at_end : {true, false}) {
            CAPTURE(at_end);
            GuardedPages gw(w.size()), gf(a.f32.size() * 4), gb(a.blocks.size());
            const float got = dot_at(*k, t, gw.copy(w.data(), w.size(), at_end), gf.copy(a.f32.data(), a.f32.size() * 4, at_end),
                                     gb.copy(a.blocks.data(), a.blocks.size(), at_end), n);
            CHECK(float_to_bits(got) == float_to_bits(table_dot(*k, t, w.data(), a, n)));
            const TokenActivations again = activations_for(*k, t, gf.copy(x.data(), x.size() * 4, at_end), n);
            CHECK(again.blocks == a.blocks);
            if (!a.packed.empty()) {
              std::vector<uint8_t> packed(a.packed.size());
              k->pack(t, gb.copy(a.blocks.data(), a.blocks.size(), at_end), packed.data(), n);
              CHECK(packed == a.packed);
            }
          }
        }
      }
      // Attention: keys, queries, scores, probabilities and values against each guard.
      for (const int n : {5, 16, 64, 72, 128}) {
        for (const int n_keys : {1, 3, 17}) {
          for (const int n_q : {1, 4}) {
            CAPTURE(n);
            CAPTURE(n_keys);
            CAPTURE(n_q);
            const size_t stride = static_cast<size_t>(n) + 3, kv_bytes = ((n_keys - 1) * stride + n) * 4,
                         q_bytes = ((n_q - 1) * stride + n) * 4;
            const auto keys = random_floats(kv_bytes / 4, 1u), q = random_floats(q_bytes / 4, 2u);
            const auto p = random_floats(static_cast<size_t>(n_q) * static_cast<size_t>(n_keys), 3u);
            const auto inv = random_floats(static_cast<size_t>(n_q), 4u);
            std::vector<float> s_want(p.size()), s_got(p.size()), out_want(static_cast<size_t>(n_q * n)),
                out_got(out_want.size());
            k->attention_scores(keys.data(), stride, n_keys, q.data(), stride, n_q, n, s_want.data(), n_keys);
            k->weighted_sum(p.data(), n_keys, inv.data(), n_q, keys.data(), stride, n_keys, n, out_want.data());
            std::vector<float> e_want = p;
            const double sum_want = k->exp_sum(e_want.data(), static_cast<int>(e_want.size()), 1.f);
            std::vector<uint16_t> halves(static_cast<size_t>(n));
            for (int i = 0; i < n; ++i) halves[static_cast<size_t>(i)] = fp32_to_fp16(keys[static_cast<size_t>(i)]);
            std::vector<float> h_want(static_cast<size_t>(n)), h_got(h_want.size());
            k->f16_to_f32(halves.data(), h_want.data(), n);
            // The same keys as an f16 cache, read where they lie.
            std::vector<uint16_t> keys16(kv_bytes / 4);
            for (size_t i = 0; i < keys16.size(); ++i) keys16[i] = fp32_to_fp16(keys[i]);
            std::vector<float> s16_want(p.size()), s16_got(p.size()), o16_want(out_want.size()), o16_got(out_want.size());
            if (k->attention_scores_f16) {
              k->attention_scores_f16(keys16.data(), stride, n_keys, q.data(), stride, n_q, n, s16_want.data(), n_keys);
              k->weighted_sum_f16(p.data(), n_keys, inv.data(), n_q, keys16.data(), stride, n_keys, n, o16_want.data());
            }
            for (const bool at_end : {true, false}) {
              CAPTURE(at_end);
              GuardedPages gk(kv_bytes), gq(q_bytes), gp(p.size() * 4), gi(inv.size() * 4), gh(halves.size() * 2),
                  gk16(keys16.size() * 2);
              if (k->attention_scores_f16) {
                const uint16_t* k16 = gk16.copy(keys16.data(), keys16.size() * 2, at_end);
                k->attention_scores_f16(k16, stride, n_keys, gq.copy(q.data(), q_bytes, at_end), stride, n_q, n, s16_got.data(),
                                        n_keys);
                CHECK(s16_got == s16_want);
                std::fill(o16_got.begin(), o16_got.end(), 0.f);
                k->weighted_sum_f16(gp.copy(p.data(), p.size() * 4, at_end), n_keys, gi.copy(inv.data(), inv.size() * 4, at_end),
                                    n_q, k16, stride, n_keys, n, o16_got.data());
                CHECK(o16_got == o16_want);
              }
              const float* kg = gk.copy(keys.data(), kv_bytes, at_end);
              k->attention_scores(kg, stride, n_keys, gq.copy(q.data(), q_bytes, at_end), stride, n_q, n, s_got.data(), n_keys);
              CHECK(s_got == s_want);
              std::fill(out_got.begin(), out_got.end(), 0.f);
              k->weighted_sum(gp.copy(p.data(), p.size() * 4, at_end), n_keys, gi.copy(inv.data(), inv.size() * 4, at_end), n_q,
                              kg, stride, n_keys, n, out_got.data());
              CHECK(out_got == out_want);
              float* e = gp.copy(p.data(), p.size() * 4, at_end);
              CHECK(k->exp_sum(e, static_cast<int>(p.size()), 1.f) == sum_want);
              k->axpy(0.5f, kg + (n_keys - 1) * stride, out_got.data(), n);
              k->f16_to_f32(gh.copy(halves.data(), halves.size() * 2, at_end), h_got.data(), n);
              CHECK(h_got == h_want);
            }
          }
        }
      }
    }
  }

  // The sanitized build's kernels leave their loads unchecked; the table's read checks
  // (runtime/kernels/read_checks.h) must still stop a caller that hands one a short buffer.
  TEST_CASE("a kernel given a buffer shorter than it reads is stopped in the sanitized build") {
#if defined(__SANITIZE_ADDRESS__)
    for (const KernelTable* k : tables()) {
      CAPTURE(std::string(k->name));
      for (const bool gemm : {false, true}) {
        CAPTURE(gemm);
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
          std::signal(SIGABRT, SIG_DFL);                        // not doctest's crash report: the parent judges
          const std::vector<float> w(2 * 64, 1.f), x(63, 1.f);  // x one float short of a row
          std::vector<float> y(2);
          const float s = gemm ? (k->gemm_f32(w.data(), 64 * 4, 2, x.data(), 64 * 4, 1, 64, y.data(), 2), y[1])
                               : k->dot_f32(w.data(), x.data(), 64);
          std::_Exit(s > 0 ? 0 : 1);  // not stopped
        }
        int status = 0;
        REQUIRE(::waitpid(pid, &status, 0) == pid);
        CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT));  // read_checks.h's abort, not a fault
      }
    }
#else
    MESSAGE("skipped: not a sanitized build (HEARTH_SANITIZE)");
#endif
  }

  TEST_CASE("every table's dot kernels stay within rounding of the scalar reference on the same activations") {
    // The tables sum in different orders, so they agree to rounding, not bit for bit.
    for (TensorType t : kAllTypes)
      for (int n : dot_type(t) == TensorType::Q8_K ? std::vector<int>{256, 2048} : std::vector<int>{32, 96, 160, 2048}) {
        CAPTURE(std::string(tensor_type_name(t)));
        CAPTURE(n);
        const auto w = random_matrix(t, n, 4, 3);
        const auto x = random_floats(static_cast<size_t>(n), 4);
        const TokenActivations ref_act = activations_for(scalar_kernels(), t, x.data(), n);
        for (const KernelTable* k : tables()) {
          CAPTURE(std::string(k->name));
          const TokenActivations act = activations_for(*k, t, x.data(), n);
          REQUIRE(act.blocks == ref_act.blocks);  // activation quantization is bit-identical everywhere
          for (int r = 0; r < 4; ++r) {
            const uint8_t* row = w.data() + static_cast<size_t>(r) * row_bytes(t, n);
            const float want = table_dot(scalar_kernels(), t, row, ref_act, n), got = table_dot(*k, t, row, act, n);
            CHECK(std::fabs(got - want) <= 1e-5f * (1.f + std::fabs(want)) + 1e-4f);
          }
        }
      }
  }

  TEST_CASE("Q4_0 and Q4_K at their extremes: no table's integer sums overflow") {
    // The x86 kernels add a block's products in int16 pairs (at most 16 products of 15 x 127 =
    // 30480 per pair) before widening: every stored value 15 (and 0) against activations of
    // +127 and -127 everywhere, with the largest Q4_K scales, must still equal the scalar sums.
    const int n = 512;
    for (TensorType t : {TensorType::Q4_0, TensorType::Q4_K})
      for (const uint8_t nibbles : {uint8_t{0xff}, uint8_t{0x00}})
        for (const float sign : {1.f, -1.f}) {
          CAPTURE(std::string(tensor_type_name(t)));
          CAPTURE(int{nibbles});
          CAPTURE(sign);
          std::vector<uint8_t> w(row_bytes(t, n));
          if (t == TensorType::Q4_0) {
            for (int b = 0; b < n / kQ4_0Block; ++b) {
              BlockQ4_0 blk{};
              blk.d = fp32_to_fp16(1.f);
              std::memset(blk.qs, nibbles, sizeof(blk.qs));
              std::memcpy(&w[static_cast<size_t>(b) * sizeof(blk)], &blk, sizeof(blk));
            }
          } else {
            for (int b = 0; b < n / kQK; ++b) {
              BlockQ4_K blk{};
              blk.d = fp32_to_fp16(1.f);
              blk.dmin = fp32_to_fp16(0.5f);
              std::memset(blk.scales, 0xff, sizeof(blk.scales));  // every scale and min 63
              std::memset(blk.qs, nibbles, sizeof(blk.qs));
              std::memcpy(&w[static_cast<size_t>(b) * sizeof(blk)], &blk, sizeof(blk));
            }
          }
          const std::vector<float> x(static_cast<size_t>(n), sign);  // quantizes to +-127
          const TokenActivations ref = activations_for(scalar_kernels(), t, x.data(), n);
          const float want = table_dot(scalar_kernels(), t, w.data(), ref, n);
          for (const KernelTable* k : tables()) {
            CAPTURE(std::string(k->name));
            const float got = table_dot(*k, t, w.data(), activations_for(*k, t, x.data(), n), n);
            CHECK(std::fabs(got - want) <= 1e-5f * std::fabs(want) + 1e-3f);
          }
        }
  }

  TEST_CASE("the x86 SIMD tables (avx2, avx512) give the same bits, so devices with and without AVX-512 agree") {
    std::vector<const KernelTable*> simd;
    for (const KernelTable* k : tables())
      if (k->name != "scalar") simd.push_back(k);
    if (simd.size() < 2) return;
    // 1 token (decode kernels), 5, 13 (a full tile of 12 and of 8 tokens, and remainders) and 17
    // (one of 16 and 1 more); float rows also of 65 vectors and a tail (an odd last vector: f16's
    // chain 0 alone, a masked half register on AVX-512).
    const int n_out = 21;
    for (const int n_tok : {1, 5, 13, 17})
      for (TensorType t : kAllTypes)
        for (const int n_in : is_float(t) ? std::vector<int>{512, 525} : std::vector<int>{512}) {
          CAPTURE(n_tok);
          CAPTURE(n_in);
          CAPTURE(std::string(tensor_type_name(t)));
          const auto data = random_matrix(t, n_in, n_out, 21);
          const WeightMatrix w{t, data.data(), n_in, n_out, row_bytes(t, n_in)};
          const auto x = random_floats(static_cast<size_t>(n_tok * n_in), 22);
          MatmulScratch scratch(n_tok, n_in);
          ThreadPool pool(2);
          std::vector<float> first(static_cast<size_t>(n_tok * n_out)), other(first.size());
          matmul(w, x.data(), n_tok, first.data(), scratch, pool, *simd[0]);
          for (size_t i = 1; i < simd.size(); ++i) {
            CAPTURE(std::string(simd[i]->name));
            matmul(w, x.data(), n_tok, other.data(), scratch, pool, *simd[i]);
            CHECK(std::memcmp(first.data(), other.data(), first.size() * 4) == 0);
          }
        }
  }

  TEST_CASE("matmul gives the same bits for a token alone and in a batch, at 1 and 2 threads") {
    const int n_in = 512, n_out = 70;
    for (const KernelTable* k : tables()) {
      CAPTURE(std::string(k->name));
      for (TensorType t : kAllTypes) {
        CAPTURE(std::string(tensor_type_name(t)));
        const auto data = random_matrix(t, n_in, n_out, 11);
        const WeightMatrix w{t, data.data(), n_in, n_out, row_bytes(t, n_in)};
        const int n_tok = 13;
        const auto x = random_floats(static_cast<size_t>(n_tok * n_in), 12);
        std::vector<float> batch(static_cast<size_t>(n_tok * n_out));
        MatmulScratch scratch(n_tok, n_in);
        ThreadPool two(2), one(1);
        matmul(w, x.data(), n_tok, batch.data(), scratch, two, *k);
        for (int tk = 0; tk < n_tok; ++tk) {
          std::vector<float> alone(static_cast<size_t>(n_out));
          matmul(w, &x[static_cast<size_t>(tk * n_in)], 1, alone.data(), scratch, tk % 2 ? one : two, *k);
          REQUIRE(std::memcmp(alone.data(), &batch[static_cast<size_t>(tk * n_out)], alone.size() * 4) == 0);
        }
        // Several weights in one pass (Q, K, V) and the fused SwiGLU equal their separate matmuls.
        std::vector<float> a(batch.size()), b(batch.size()), g(batch.size()), u(batch.size());
        const MatmulTarget both[] = {{&w, a.data()}, {&w, b.data()}};
        matmul_many(both, x.data(), n_tok, scratch, two, *k);
        CHECK(a == batch);
        CHECK(b == batch);
        matmul_swiglu(w, w, x.data(), n_tok, g.data(), u.data(), scratch, two, *k);
        std::vector<float> expect = batch;
        swiglu(expect.data(), batch.data(), expect.size());
        CHECK(g == expect);
      }
    }
  }

  TEST_CASE("attention's weighted sum of values gives the bits of its axpy calls, in every table") {
    for (const KernelTable* k : tables()) {
      CAPTURE(std::string(k->name));
      for (int n : {64, 80, 13, 128, 4}) {
        for (int n_q : {1, 2, 5, 8}) {
          CAPTURE(n);
          CAPTURE(n_q);
          const int n_keys = 37;
          const size_t p_stride = 50, v_stride = static_cast<size_t>(n) * 3;
          const auto p = random_floats(p_stride * static_cast<size_t>(n_q), 21);
          const auto v = random_floats(v_stride * n_keys, 22);
          const auto inv = random_floats(static_cast<size_t>(n_q), 23);
          auto start = random_floats(static_cast<size_t>(n_q * n), 24);
          std::vector<float> by_axpy = start, fused = start;
          for (int j = 0; j < n_keys; ++j)
            for (int h = 0; h < n_q; ++h)
              k->axpy(p[static_cast<size_t>(h) * p_stride + static_cast<size_t>(j)] * inv[static_cast<size_t>(h)], &v[j * v_stride],
                      &by_axpy[static_cast<size_t>(h * n)], n);
          k->weighted_sum(p.data(), p_stride, inv.data(), n_q, v.data(), v_stride, n_keys, n, fused.data());
          CHECK(std::memcmp(by_axpy.data(), fused.data(), fused.size() * 4) == 0);
        }
      }
    }
  }

  TEST_CASE("attention's scores: within rounding of the dot products, each the same bits whatever comes with it") {
    for (const KernelTable* k : tables()) {
      CAPTURE(std::string(k->name));
      for (int n : {64, 128, 80, 13, 8, 256}) {
        CAPTURE(n);
        const int n_keys = 71, n_q = 11;
        const size_t k_stride = static_cast<size_t>(n) * 3 + 5, q_stride = static_cast<size_t>(n) + 3, s_stride = 80;
        const auto keys = random_floats(k_stride * n_keys, 31);
        const auto q = random_floats(q_stride * n_q, 32);
        std::vector<float> all(s_stride * n_q, -1.f);
        k->attention_scores(keys.data(), k_stride, n_keys, q.data(), q_stride, n_q, n, all.data(), s_stride);
        for (int r = 0; r < n_q; ++r)
          for (int j = 0; j < n_keys; ++j) {
            const float* kj = &keys[static_cast<size_t>(j) * k_stride];
            const float* qr = &q[static_cast<size_t>(r) * q_stride];
            double exact = 0, magnitude = 0;
            for (int i = 0; i < n; ++i) exact += static_cast<double>(kj[i]) * qr[i], magnitude += std::fabs(static_cast<double>(kj[i]) * qr[i]);
            const float got = all[static_cast<size_t>(r) * s_stride + static_cast<size_t>(j)];
            REQUIRE(std::fabs(got - exact) <= 1e-6 * magnitude + 1e-30);
            // Alone, and in a 3 x 5 block starting at it (rows and keys cut short at the ends).
            float alone = 0;
            k->attention_scores(kj, k_stride, 1, qr, q_stride, 1, n, &alone, 1);
            REQUIRE(std::memcmp(&alone, &got, 4) == 0);
            const int rows = std::min(3, n_q - r), cols = std::min(5, n_keys - j);
            std::vector<float> block(static_cast<size_t>(rows) * cols);
            k->attention_scores(kj, k_stride, cols, qr, q_stride, rows, n, block.data(), static_cast<size_t>(cols));
            for (int a = 0; a < rows; ++a)
              for (int b = 0; b < cols; ++b)
                REQUIRE(std::memcmp(&block[static_cast<size_t>(a * cols + b)],
                                    &all[static_cast<size_t>(r + a) * s_stride + static_cast<size_t>(j + b)], 4) == 0);
          }
        // Nothing written past the keys of a row.
        for (int r = 0; r < n_q; ++r)
          for (size_t j = n_keys; j < s_stride; ++j) REQUIRE(all[static_cast<size_t>(r) * s_stride + j] == -1.f);
      }
    }
  }

  TEST_CASE("attention over an f16 cache's rows where they lie: the bits of the f32 kernels on the rows read back") {
    for (const KernelTable* k : tables()) {
      if (!k->attention_scores_f16) continue;
      CAPTURE(std::string(k->name));
      for (int n : {64, 128, 80, 13, 8, 256}) {
        for (int n_q : {1, 2, 3, 8, 11}) {
          CAPTURE(n);
          CAPTURE(n_q);
          const int n_keys = 71;
          const size_t stride = static_cast<size_t>(n) * 3 + 5, q_stride = static_cast<size_t>(n) + 3, s_stride = 80;
          std::vector<uint16_t> halves(stride * n_keys);
          k->f32_to_f16(random_floats(halves.size(), 41).data(), halves.data(), static_cast<int>(halves.size()));
          std::vector<float> rows(halves.size());
          k->f16_to_f32(halves.data(), rows.data(), static_cast<int>(rows.size()));
          const auto q = random_floats(q_stride * static_cast<size_t>(n_q), 42);
          std::vector<float> want(s_stride * static_cast<size_t>(n_q), -1.f), got = want;
          k->attention_scores(rows.data(), stride, n_keys, q.data(), q_stride, n_q, n, want.data(), s_stride);
          k->attention_scores_f16(halves.data(), stride, n_keys, q.data(), q_stride, n_q, n, got.data(), s_stride);
          CHECK(std::memcmp(want.data(), got.data(), want.size() * 4) == 0);
          const size_t p_stride = 75;
          const auto p = random_floats(p_stride * static_cast<size_t>(n_q), 43);
          const auto inv = random_floats(static_cast<size_t>(n_q), 44);
          std::vector<float> out_want = random_floats(static_cast<size_t>(n_q * n), 45), out_got = out_want;
          k->weighted_sum(p.data(), p_stride, inv.data(), n_q, rows.data(), stride, n_keys, n, out_want.data());
          k->weighted_sum_f16(p.data(), p_stride, inv.data(), n_q, halves.data(), stride, n_keys, n, out_got.data());
          CHECK(std::memcmp(out_want.data(), out_got.data(), out_want.size() * 4) == 0);
        }
      }
    }
  }

  // A pipeline whose stages run on an AVX2 laptop and an AVX-512 desktop must give the tokens of
  // either alone: the two tables' scores are the same bits (the matmuls are, by their dot kernels).
  TEST_CASE("attention's scores are the same bits in the avx2 and avx512 tables") {
    const KernelTable* avx2 = nullptr;
    const KernelTable* avx512 = nullptr;
    for (const KernelTable* k : tables()) {
      if (k->name == "avx2") avx2 = k;
      if (k->name == "avx512") avx512 = k;
    }
    if (!avx2 || !avx512) {
      MESSAGE("skipped: this CPU has no AVX-512 table to compare with AVX2");
      return;
    }
    for (int n : {64, 128, 80, 13, 8, 256, 96}) {
      for (int n_q : {1, 2, 3, 4, 5, 9}) {
        CAPTURE(n);
        CAPTURE(n_q);
        const int n_keys = 37;
        const size_t stride = static_cast<size_t>(n) + 7, s_stride = 40;
        const auto keys = random_floats(stride * n_keys, 51);
        const auto q = random_floats(stride * static_cast<size_t>(n_q), 52);
        std::vector<uint16_t> halves(keys.size());
        avx2->f32_to_f16(keys.data(), halves.data(), static_cast<int>(keys.size()));
        std::vector<float> a(s_stride * static_cast<size_t>(n_q), -1.f), b = a, a16 = a, b16 = a;
        avx2->attention_scores(keys.data(), stride, n_keys, q.data(), stride, n_q, n, a.data(), s_stride);
        avx512->attention_scores(keys.data(), stride, n_keys, q.data(), stride, n_q, n, b.data(), s_stride);
        CHECK(std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
        avx2->attention_scores_f16(halves.data(), stride, n_keys, q.data(), stride, n_q, n, a16.data(), s_stride);
        avx512->attention_scores_f16(halves.data(), stride, n_keys, q.data(), stride, n_q, n, b16.data(), s_stride);
        CHECK(std::memcmp(a16.data(), b16.data(), a16.size() * 4) == 0);
      }
    }
  }

  TEST_CASE("f16_to_f32 reads every f16 value as the reference conversion does, in a vector or alone") {
    std::vector<uint16_t> all(65536);
    for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
    for (const KernelTable* k : tables()) {
      CAPTURE(std::string(k->name));
      std::vector<float> y(all.size() + 3);
      k->f16_to_f32(all.data(), y.data(), static_cast<int>(all.size()));
      k->f16_to_f32(all.data() + 1, y.data() + all.size(), 3);  // a tail shorter than a vector
      int differs = 0;
      for (size_t i = 0; i < all.size(); ++i) {
        const float ref = fp16_to_fp32(all[i]);
        if (std::isnan(ref) ? !std::isnan(y[i]) : std::memcmp(&ref, &y[i], 4) != 0) ++differs;
      }
      CHECK(differs == 0);
      for (size_t i = 0; i < 3; ++i) CHECK(std::memcmp(&y[all.size() + i], &y[i + 1], 4) == 0);
    }
  }

  TEST_CASE("attention's softmax exp is within 2 ulp of std::exp, the same for an element in a vector or alone") {
    for (const KernelTable* k : tables()) {
      CAPTURE(std::string(k->name));
      std::vector<float> x(1000);
      for (size_t i = 0; i < x.size(); ++i) x[i] = -static_cast<float>(i) * 0.0901f + 3.f;  // max 3: down to -87
      x[5] = -200.f;  // underflows to (nearly) nothing
      std::vector<float> all = x;
      const double sum = k->exp_sum(all.data(), static_cast<int>(all.size()), 3.f);
      double expect = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        float alone = x[i];
        k->exp_sum(&alone, 1, 3.f);
        REQUIRE(std::memcmp(&alone, &all[i], 4) == 0);
        const float ref = std::exp(x[i] - 3.f);
        if (i != 5) CHECK(std::abs(all[i] - ref) <= 2 * std::abs(std::nextafter(ref, 0.f) - ref) + 1e-37f);
        CHECK(all[i] < 2e-38f + ref * 1.000001f);
        expect += all[i];
      }
      CHECK(std::abs(sum - expect) < 1e-12 * expect);
    }
  }

  TEST_CASE("thread pool runs every task once and rethrows a task's exception") {
    ThreadPool pool(3);
    for (int round = 0; round < 200; ++round) {
      std::vector<std::atomic<int>> hits(57);
      pool.run(57, [&](int i) { hits[static_cast<size_t>(i)]++; });
      for (auto& h : hits) REQUIRE(h == 1);
    }
    CHECK_THROWS_AS(pool.run(10,
                             [](int i) {
                               if (i == 7) throw std::runtime_error("boom");
                             }),
                    std::runtime_error);
    int n = 0;
    pool.run(1, [&](int) { ++n; });
    CHECK(n == 1);
  }

}  // TEST_SUITE

TEST_CASE("matmul's row split: every row in exactly one task, tasks on granules and shrinking, the first a thread's share") {
  for (int threads : {1, 2, 3, 8}) {
    for (int64_t rows : {0, 1, 15, 16, 17, 256, 2048, 5632, 32000, 151936}) {
      CAPTURE(threads);
      CAPTURE(rows);
      const RowSplit split(rows, threads);
      REQUIRE(split.tasks() <= RowSplit::kMaxTasks);
      int64_t next = 0, last_size = rows + 1;
      for (int t = 0; t < split.tasks(); ++t) {
        const auto [r0, r1] = split.rows(t);
        REQUIRE(r0 == next);
        REQUIRE(r1 > r0);
        REQUIRE(r0 % 16 == 0);
        CHECK(r1 - r0 < last_size + 16);  // never larger than the task before, but for the last granule's rest
        last_size = r1 - r0;
        next = r1;
      }
      REQUIRE(next == rows);
      if (rows >= 16 * threads) CHECK(split.rows(0).second >= rows / threads - 15);
      if (threads > 1 && rows >= 64 * threads) CHECK(split.tasks() > threads);  // something left to balance with
      if (threads == 1) CHECK(split.tasks() == (rows > 0 ? 1 : 0));             // nothing to balance: one stream
    }
  }
  CHECK_THROWS_AS(RowSplit(10, 0), std::invalid_argument);
  // More rows than kMaxTasks granules of a shrinking split: the last task takes what is left.
  const RowSplit huge(int64_t{1} << 40, 64);
  CHECK(huge.tasks() == RowSplit::kMaxTasks);
  CHECK(huge.rows(RowSplit::kMaxTasks - 1).second == int64_t{1} << 40);
}

TEST_CASE("activation buffers start a cache line, whatever their size and however they grow") {
  // glibc's malloc gives 16-byte alignment, and a block large enough to be mapped sits 16 bytes
  // past a page: the case the allocator exists for.
  for (size_t n : {size_t{1}, size_t{5}, size_t{1000}, size_t{1} << 16, size_t{3} << 16}) {
    CAPTURE(n);
    AlignedVector<float> v(n);
    CHECK(reinterpret_cast<uintptr_t>(v.data()) % kCacheLine == 0);
    v.resize(2 * n + 3);
    CHECK(reinterpret_cast<uintptr_t>(v.data()) % kCacheLine == 0);
  }
}
