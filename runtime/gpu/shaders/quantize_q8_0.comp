#version 450
// Activations to Q8_0 blocks as the CPU tables round them before a quantized dot product
// (kernels.cpp, quantize_q8_0_scalar): d = amax / 127 kept as fp16, q = x * 127 / amax rounded
// half to even. Each invocation takes one block of 32 values; a block is 9 words: d as f32 (the
// fp16 value), then the 32 signed bytes.
layout(local_size_x = 64) in;

layout(std430, binding = 1) readonly buffer Inputs { float x[]; };
layout(std430, binding = 3) writeonly buffer Quantized { uint xq[]; };

layout(push_constant) uniform Shape {
  uint n_in;
  uint n_out;
  uint n_tokens;
  uint row_words;
  uint rows_per_y;
  uint y_offset;
} p;

// f32 -> fp16 -> f32 with rounding to nearest even, in integers: packHalf2x16's rounding is
// the driver's choice, and the CPU's fp32_to_fp16 rounds to nearest even. (A scale is never
// near fp16's largest value; below its normal range, the subnormals are multiples of 2^-24.)
float fp16_round(float v) {
  const uint u = floatBitsToUint(v);
  const uint sign = u & 0x80000000u;
  const int e = int((u >> 23) & 0xffu) - 127;
  if (e < -14) return roundEven(v * 16777216.0) * (1.0 / 16777216.0);
  uint m = u & 0x7fffffu;
  const uint dropped = m & 0x1fffu;
  m >>= 13;
  uint bits = (uint(e + 127) << 10) | m;  // exponent and 10-bit mantissa, f32 bias
  if (dropped > 0x1000u || (dropped == 0x1000u && (m & 1u) != 0u)) bits += 1u;  // may carry into the exponent
  return uintBitsToFloat(sign | (bits << 13));
}

void main() {
  const uint block = gl_GlobalInvocationID.x;
  const uint per_token = p.n_in / 32;
  if (block >= per_token * p.n_tokens) return;
  const uint at = (block / per_token) * p.n_in + (block % per_token) * 32;
  float amax = 0.0;
  for (uint j = 0; j < 32; ++j) amax = max(amax, abs(x[at + j]));
  const float id = amax != 0.0 ? 127.0 / amax : 0.0;
  xq[block * 9] = floatBitsToUint(fp16_round(amax / 127.0));
  for (uint w = 0; w < 8; ++w) {
    uint word = 0;
    for (uint k = 0; k < 4; ++k) word |= (uint(int(roundEven(x[at + 4 * w + k] * id))) & 0xffu) << (8 * k);
    xq[block * 9 + 1 + w] = word;
  }
}
