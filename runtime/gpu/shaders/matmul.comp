#version 450
// y[t * n_out + r] = dot(row r of W, x[t * n_in ...]) for one weight type (TYPE_F32, TYPE_F16,
// TYPE_Q8_0, TYPE_Q4_0, TYPE_Q4_K, TYPE_Q5_K or TYPE_Q6_K, chosen when glslc compiles this file).
//
// One workgroup per row and block of TOK tokens: its 64 invocations take the row's blocks (the
// K-quants: their sub-blocks of 32, so that a row of 4096 keeps every invocation busy) in turn,
// each keeping TOK sums, then add them in shared memory. Weights are read as 32-bit words and
// split into 16-bit halves in the shader, so that a GPU needs no 8- or 16-bit storage feature
// (every row and block of these types starts on an even byte). As on the CPU, quantized weights
// meet activations rounded to Q8_0 (a block's sum is exact in integers), f16 weights activations
// rounded to f16 and f32 weights f32 activations, K-quants activations rounded to Q8_K
// (quantize_q8_k.comp); results differ from the CPU's only in the order of f32 sums.
layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer Weights { uint w[]; };
layout(std430, binding = 1) readonly buffer Inputs { float x[]; };
layout(std430, binding = 2) writeonly buffer Outputs { float y[]; };
// Activations as Q8_0 blocks for quantized weights (quantize_q8_0.comp): 9 words per block.
layout(std430, binding = 3) readonly buffer Quantized { uint xq[]; };
// Activations as Q8_K blocks for K-quant weights (quantize_q8_k.comp): 73 words per 256 values:
// d, the 256 signed bytes, then the sum of each 32 of them.
layout(std430, binding = 4) readonly buffer QuantizedK { uint xk[]; };

layout(push_constant) uniform Shape {
  uint n_in;       // elements per row
  uint n_out;      // rows
  uint n_tokens;
  uint row_words;  // 16-bit words per row
  uint rows_per_y; // rows per workgroup row of the dispatch (its x count)
  uint y_offset;   // where this matrix's outputs start in y (floats)
} p;

const uint TOK = 8;
shared float partial[64 * TOK];

uint half_word(uint i) {  // the i-th 16-bit word of the weights
  uint v = w[i >> 1];
  return (i & 1u) != 0u ? v >> 16 : v & 0xffffu;
}

float half_value(uint i) { return unpackHalf2x16(half_word(i)).x; }

// The 32-bit word at byte b of the weights, wherever b falls (a Q6_K block is 210 bytes long).
uint word_at_byte(uint b) {
  const uint i = b >> 2, s = 8 * (b & 3u);
  return s == 0u ? w[i] : (w[i] >> s) | (w[i + 1] << (32u - s));
}

uint byte_at(uint b) { return (w[b >> 2] >> (8 * (b & 3u))) & 0xffu; }

// Sum over i < 4 of weight value q[i] times the activations' signed byte i of word x.
int dot4(ivec4 q, uint x) {
  return q.x * bitfieldExtract(int(x), 0, 8) + q.y * bitfieldExtract(int(x), 8, 8) + q.z * bitfieldExtract(int(x), 16, 8) +
         q.w * bitfieldExtract(int(x), 24, 8);
}

uvec4 bytes_of(uint v) { return uvec4(v & 0xffu, (v >> 8) & 0xffu, (v >> 16) & 0xffu, v >> 24); }

// Q4_K and Q5_K: sub-block j's 6-bit scale and min from the 12 packed bytes at byte s of the
// block (llama.cpp's get_scale_min_k4).
uvec2 scale_min(uint s, uint j) {
  if (j < 4u) return uvec2(byte_at(s + j) & 63u, byte_at(s + j + 4u) & 63u);
  const uint hi = byte_at(s + j + 4u);
  return uvec2((hi & 0xfu) | ((byte_at(s + j - 4u) >> 6) << 4), (hi >> 4) | ((byte_at(s + j) >> 6) << 4));
}

// Sub-block u's (32 values) contribution of Q4_K or Q5_K weights at byte `at` (a block's start),
// for one token's Q8_K block at xb: x.d * (d * scale * dot - dmin * min * sum(x)), the terms
// the CPU adds per block in integers first (only the f32 order differs).
#if defined(TYPE_Q4_K) || defined(TYPE_Q5_K)
float scale_min_sub_block(uint at, uint j, const ivec4 q[8], uint xb) {
  const uvec2 sm = scale_min(at + 4u, j);
  int dot = 0;
  for (uint k = 0; k < 8; ++k) dot += dot4(q[k], xk[xb + 1 + 8 * j + k]);
  const vec2 dm = unpackHalf2x16(w[at >> 2]);  // d, dmin
  const float xd = uintBitsToFloat(xk[xb]);
  return xd * (dm.x * float(int(sm.x) * dot) - dm.y * float(int(sm.y) * int(xk[xb + 65 + j])));
}
#endif

// f rounded to the nearest f16 value, ties to even, as an f32: the CPU's f32_to_f16. Not
// packHalf2x16, whose rounding Vulkan leaves to the implementation (some round toward zero).
// The f16 step at f's binade (2^-24 below the normal range) scales f to an integer below 2^11
// and back, exactly, since it is a power of two.
float to_half(float f) {
  if (isnan(f)) return f;
  int e;
  frexp(f, e);                     // |f| = m * 2^e, m in [0.5, 1)
  const int step = max(e - 11, -24);  // 10 fraction bits after the leading one
  const float r = ldexp(roundEven(ldexp(abs(f), -step)), step);
  const float h = r > 65504.0 ? uintBitsToFloat(0x7f800000u) : r;  // past the largest half: inf
  return f < 0.0 ? -h : h;
}

void main() {
  const uint row = gl_WorkGroupID.y * p.rows_per_y + gl_WorkGroupID.x;
  if (row >= p.n_out) return;  // the same for the whole workgroup
  const uint t0 = gl_WorkGroupID.z * TOK;
  const uint nt = min(TOK, p.n_tokens - t0);
  const uint lane = gl_LocalInvocationID.x;
  const uint base = row * p.row_words;
  float acc[TOK];
  for (uint t = 0; t < TOK; ++t) acc[t] = 0.0;

#if defined(TYPE_F32)
  for (uint e = lane; e < p.n_in; e += 64) {
    const float v = uintBitsToFloat(w[(base >> 1) + e]);
    for (uint t = 0; t < nt; ++t) acc[t] += v * x[(t0 + t) * p.n_in + e];
  }
#elif defined(TYPE_F16)
  for (uint e2 = lane; e2 < p.n_in / 2; e2 += 64) {  // two elements per 32-bit word
    const vec2 v = unpackHalf2x16(w[(base >> 1) + e2]);
    for (uint t = 0; t < nt; ++t) {
      const uint xi = (t0 + t) * p.n_in + 2 * e2;
      acc[t] += v.x * to_half(x[xi]) + v.y * to_half(x[xi + 1]);  // the CPU's f16 activations
    }
  }
#elif defined(TYPE_Q8_0)
  for (uint b = lane; b < p.n_in / 32; b += 64) {  // 17 words: the scale, then 32 signed bytes
    const uint at = base + b * 17;
    const float d = half_value(at);
    int q[32];
    for (uint j = 0; j < 16; ++j) {
      const int v = int(half_word(at + 1 + j));
      q[2 * j] = bitfieldExtract(v, 0, 8);
      q[2 * j + 1] = bitfieldExtract(v, 8, 8);
    }
    for (uint t = 0; t < nt; ++t) {
      const uint xb = ((t0 + t) * (p.n_in / 32) + b) * 9;
      int s = 0;
      for (uint k = 0; k < 8; ++k) {
        const int v = int(xq[xb + 1 + k]);
        for (uint i = 0; i < 4; ++i) s += q[4 * k + i] * bitfieldExtract(v, int(8 * i), 8);
      }
      acc[t] += float(s) * (d * uintBitsToFloat(xq[xb]));
    }
  }
#elif defined(TYPE_Q4_0)
  for (uint b = lane; b < p.n_in / 32; b += 64) {  // 9 words: the scale, then 16 bytes of two nibbles
    const uint at = base + b * 9;
    const float d = half_value(at);
    int q[32];  // byte j holds element j (low nibble) and j + 16 (high), each stored + 8
    for (uint j = 0; j < 8; ++j) {
      const int v = int(half_word(at + 1 + j));
      q[2 * j] = bitfieldExtract(v, 0, 4) & 0xf;
      q[2 * j + 16] = bitfieldExtract(v, 4, 4) & 0xf;
      q[2 * j + 1] = bitfieldExtract(v, 8, 4) & 0xf;
      q[2 * j + 17] = bitfieldExtract(v, 12, 4) & 0xf;
    }
    for (uint j = 0; j < 32; ++j) q[j] -= 8;
    for (uint t = 0; t < nt; ++t) {
      const uint xb = ((t0 + t) * (p.n_in / 32) + b) * 9;
      int s = 0;
      for (uint k = 0; k < 8; ++k) {
        const int v = int(xq[xb + 1 + k]);
        for (uint i = 0; i < 4; ++i) s += q[4 * k + i] * bitfieldExtract(v, int(8 * i), 8);
      }
      acc[t] += float(s) * (d * uintBitsToFloat(xq[xb]));
    }
  }
#elif defined(TYPE_Q4_K) || defined(TYPE_Q5_K)
  // A block is 144 (Q4_K) or 176 (Q5_K) bytes: d and dmin, 12 bytes of scales and mins, (Q5_K:
  // 32 bytes of fifth bits,) 128 bytes of nibbles; element 64c + l is byte 32c + l's low nibble,
  // 64c + 32 + l its high one. Both sizes are whole words, so a row's blocks start on a word.
#if defined(TYPE_Q4_K)
  const uint block_bytes = 144, qs_at = 16;
#else
  const uint block_bytes = 176, qs_at = 48;
#endif
  const uint row_byte = base * 2;
  for (uint u = lane; u < p.n_in / 32; u += 64) {
    const uint b = u / 8, j = u % 8, c = j / 2, hi = j % 2;
    const uint at = row_byte + b * block_bytes;
    ivec4 q[8];
    for (uint k = 0; k < 8; ++k) {
      uvec4 v = (bytes_of(w[(at + qs_at + 32 * c + 4 * k) >> 2]) >> (4 * hi)) & 0xfu;
#if defined(TYPE_Q5_K)
      v |= ((bytes_of(w[(at + 16 + 4 * k) >> 2]) >> (2 * c + hi)) & 1u) << 4;
#endif
      q[k] = ivec4(v);
    }
    for (uint t = 0; t < nt; ++t) acc[t] += scale_min_sub_block(at, j, q, ((t0 + t) * (p.n_in / 256) + b) * 73);
  }
#elif defined(TYPE_Q6_K)
  // A block is 210 bytes: 128 of low nibbles (ql), 64 of high bit pairs (qh), 16 signed scales,
  // then d. Sub-block j of 32 values (half h = j / 4, part c = j % 4): element l is ql[64h +
  // 32(c % 2) + l]'s nibble c / 2 with qh[32h + l]'s bit pair c, less 32; its 16s take scales
  // 2j and 2j + 1.
  const uint row_byte = base * 2;
  for (uint u = lane; u < p.n_in / 32; u += 64) {
    const uint b = u / 8, j = u % 8, h = j / 4, c = j % 4;
    const uint at = row_byte + b * 210;
    ivec4 q[8];
    for (uint k = 0; k < 8; ++k) {
      const uvec4 lo = (bytes_of(word_at_byte(at + 64 * h + 32 * (c % 2) + 4 * k)) >> (4 * (c / 2))) & 0xfu;
      const uvec4 hb = (bytes_of(word_at_byte(at + 128 + 32 * h + 4 * k)) >> (2 * c)) & 3u;
      q[k] = ivec4(lo | (hb << 4)) - 32;
    }
    const int sc0 = bitfieldExtract(int(byte_at(at + 192 + 2 * j)), 0, 8), sc1 = bitfieldExtract(int(byte_at(at + 193 + 2 * j)), 0, 8);
    const float d = half_value((at + 208) / 2);
    for (uint t = 0; t < nt; ++t) {
      const uint xb = ((t0 + t) * (p.n_in / 256) + b) * 73;
      int s0 = 0, s1 = 0;
      for (uint k = 0; k < 4; ++k) s0 += dot4(q[k], xk[xb + 1 + 8 * j + k]);
      for (uint k = 4; k < 8; ++k) s1 += dot4(q[k], xk[xb + 1 + 8 * j + k]);
      acc[t] += d * uintBitsToFloat(xk[xb]) * float(sc0 * s0 + sc1 * s1);
    }
  }
#else
#error "define one of TYPE_F32, TYPE_F16, TYPE_Q8_0, TYPE_Q4_0, TYPE_Q4_K, TYPE_Q5_K, TYPE_Q6_K"
#endif

  // The sums of the group's tokens only (nt is the same for the whole workgroup): a decoded
  // token reduces one slot, not TOK.
  for (uint t = 0; t < nt; ++t) partial[t * 64 + lane] = acc[t];
  barrier();
  for (uint stride = 32; stride > 0; stride >>= 1) {
    if (lane < stride)
      for (uint t = 0; t < nt; ++t) partial[t * 64 + lane] += partial[t * 64 + lane + stride];
    barrier();
  }
  if (lane < nt) y[p.y_offset + (t0 + lane) * p.n_out + row] = partial[lane * 64];
}
