#version 450
// y[t * n_out + r] = dot(row r of W, x[t * n_in ...]) for one weight type (TYPE_F32, TYPE_F16,
// TYPE_Q8_0 or TYPE_Q4_0, chosen when glslc compiles this file).
//
// One workgroup per row and block of TOK tokens: its 64 invocations take the row's blocks in turn,
// each keeping TOK sums, then add them in shared memory. Weights are read as 32-bit words and
// split into 16-bit halves in the shader, so that a GPU needs no 8- or 16-bit storage feature
// (every row and block of these types starts on an even byte). As on the CPU, quantized weights
// meet activations rounded to Q8_0 (a block's sum is exact in integers), f16 weights activations
// rounded to f16 and f32 weights f32 activations; results differ from the CPU's only in the order
// of f32 sums.
layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer Weights { uint w[]; };
layout(std430, binding = 1) readonly buffer Inputs { float x[]; };
layout(std430, binding = 2) writeonly buffer Outputs { float y[]; };
// Activations as Q8_0 blocks for quantized weights (quantize_q8_0.comp): 9 words per block.
layout(std430, binding = 3) readonly buffer Quantized { uint xq[]; };

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
#else
#error "define one of TYPE_F32, TYPE_F16, TYPE_Q8_0, TYPE_Q4_0"
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
