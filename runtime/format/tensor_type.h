// Weight encodings as numbered by the GGUF format (ggml_type), with their block layouts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace hearth::runtime {

enum class TensorType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ4_NL = 20,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  BF16 = 30,
  MXFP4 = 39,
};

struct TensorTypeInfo {
  std::string_view name;  // as llama.cpp prints it, e.g. "q4_0"
  uint32_t block_elems;   // elements per block (1 for plain floats)
  uint32_t block_bytes;   // bytes per block
  bool computable;        // this runtime has kernels for it
};

// Layout of a known GGUF type, or nullopt for a number GGUF does not define.
std::optional<TensorTypeInfo> tensor_type_info(uint32_t type);
std::string_view tensor_type_name(TensorType type);
// Parses "f32", "q8_0", ... (case-insensitive); nullopt if unknown.
std::optional<TensorType> tensor_type_from_name(std::string_view name);
// Names of the types this runtime computes with, e.g. "f32, f16, bf16, q8_0, q4_0".
std::string computable_type_names();
// Bytes of one row of `n_elems` elements; REQUIRES n_elems % block_elems == 0.
uint64_t row_bytes(TensorType type, uint64_t n_elems);

// Block layouts (GGUF spec / ggml-common.h).
constexpr int kQ8_0Block = 32;  // {f16 d; int8 qs[32]}          x = d * q
constexpr int kQ4_0Block = 32;  // {f16 d; uint8 qs[16]}         x = d * (nibble - 8); low nibbles are
                                //                               elements 0..15, high nibbles 16..31
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQ8_0Block];
};
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQ4_0Block / 2];
};
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18);
// Q5_0: {f16 d; uint8 qh[4]; uint8 qs[16]}  x = d * (q - 16), q 5 bits: the nibbles as in Q4_0,
// and bit j of qh (a little-endian uint32) is the fifth bit of element j. llama-quantize writes
// it for the tensors of a Q4_K_M file whose rows do not divide into 256-element super-blocks.
constexpr int kQ5_0Block = 32;
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQ5_0Block / 2];
};
static_assert(sizeof(BlockQ5_0) == 22);

// K-quants: super-blocks of 256 elements with their own quantized sub-block scales.
constexpr int kQK = 256;
// Q4_K: 8 sub-blocks of 32; x = d * sc[j] * q - dmin * m[j], q in 0..15. sc and m are 6-bit,
// packed into scales[12] (see kquants.h, unpack_scale_min). qs[32c + l] holds element 64c + l
// in its low nibble and element 64c + 32 + l in its high nibble.
struct BlockQ4_K {
  uint16_t d;     // f16 scale of the sub-block scales
  uint16_t dmin;  // f16 scale of the sub-block mins
  uint8_t scales[12];
  uint8_t qs[kQK / 2];
};
// Q5_K: Q4_K plus a fifth bit per element, q in 0..31: bit (2c) of qh[l] belongs to element
// 64c + l, bit (2c + 1) to element 64c + 32 + l.
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[kQK / 8];
  uint8_t qs[kQK / 2];
};
// Q6_K: 16 sub-blocks of 16; x = d * scales[j] * (q - 32), q in 0..63. Per half h (128
// elements), for l < 32: element 128h + l      = ql[64h + l] low  | qh[32h + l] bits 0-1,
//                        element 128h + 32 + l = ql[64h + 32 + l] low  | qh bits 2-3,
//                        element 128h + 64 + l = ql[64h + l] high | qh bits 4-5,
//                        element 128h + 96 + l = ql[64h + 32 + l] high | qh bits 6-7.
struct BlockQ6_K {
  uint8_t ql[kQK / 2];
  uint8_t qh[kQK / 4];
  int8_t scales[kQK / 16];
  uint16_t d;
};
// Q8_K: activations only (the dot type of every K-quant). x = d * q; bsums are the sums of each
// 16 consecutive q, which the kernels use to apply the weights' mins and offsets cheaply.
struct BlockQ8_K {
  float d;
  int8_t qs[kQK];
  int16_t bsums[kQK / 16];
};
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210 && sizeof(BlockQ8_K) == 292);

// 4-bit types whose values come from a fixed table of 16 signed integers (lut_quants.h). Nibbles
// are laid out as in Q4_0: in each group of 32 elements, 16 bytes hold elements 0..15 in their
// low nibbles and 16..31 in their high ones.
// MXFP4 (OCP microscaling, gpt-oss's experts): x = 2^(e - 128) * kMxfp4Values[nibble], the
// values being FP4 E2M1 numbers doubled (so the table holds integers) and the scale halved.
constexpr int kMxfp4Block = 32;
struct BlockMXFP4 {
  uint8_t e;  // E8M0 exponent
  uint8_t qs[kMxfp4Block / 2];
};
// IQ4_NL: x = d * kIq4Values[nibble], a non-uniform grid denser near 0.
constexpr int kIq4NlBlock = 32;
struct BlockIQ4_NL {
  uint16_t d;
  uint8_t qs[kIq4NlBlock / 2];
};
// IQ4_XS: IQ4_NL's grid in 256-element super-blocks with a 6-bit signed scale per 32:
// x = d * (ls_j - 32) * kIq4Values[nibble], ls_j = low nibble of scales_l[j / 2] (high for odd j)
// | bits 2j, 2j + 1 of scales_h as its bits 4 and 5. qs[16j..16j+15] holds sub-block j.
struct BlockIQ4_XS {
  uint16_t d;
  uint16_t scales_h;
  uint8_t scales_l[kQK / 64];
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockMXFP4) == 17 && sizeof(BlockIQ4_NL) == 18 && sizeof(BlockIQ4_XS) == 136);

}  // namespace hearth::runtime
