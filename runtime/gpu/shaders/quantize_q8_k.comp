#version 450
// Activations to Q8_K blocks as the CPU tables round them before a K-quant dot product
// (kquants.cpp, quantize_q8_k_scalar): per 256 values, the value of largest magnitude (the
// first of equals) maps to -127, q = x * (-127 / max) rounded half to even (at most 127),
// d = 1 / (-127 / max) kept as f32. Each invocation takes one block; a block is 73 words: d,
// the 256 signed bytes, then the sum of each 32 of them (for the K-quants' mins). Vulkan lets a
// division be up to 2.5 ULP off (lavapipe's are correctly rounded): on such a GPU a value at a
// rounding boundary may round to the other integer than on the CPU, a difference of one step of
// one activation, as quantize_q8_0.comp's division may.
layout(local_size_x = 64) in;

layout(std430, binding = 1) readonly buffer Inputs { float x[]; };
layout(std430, binding = 4) writeonly buffer QuantizedK { uint xk[]; };

layout(push_constant) uniform Shape {
  uint n_in;
  uint n_out;
  uint n_tokens;
  uint row_words;
  uint rows_per_y;
  uint y_offset;
} p;

void main() {
  const uint block = gl_GlobalInvocationID.x;
  const uint per_token = p.n_in / 256;
  if (block >= per_token * p.n_tokens) return;
  const uint at = (block / per_token) * p.n_in + (block % per_token) * 256;
  const uint dst = block * 73;
  float amax = 0.0, vmax = 0.0;
  for (uint j = 0; j < 256; ++j)
    if (abs(x[at + j]) > amax) {
      amax = abs(x[at + j]);
      vmax = x[at + j];
    }
  if (amax == 0.0) {
    for (uint i = 0; i < 73; ++i) xk[dst + i] = 0u;
    return;
  }
  const float iscale = -127.0 / vmax;
  xk[dst] = floatBitsToUint(1.0 / iscale);
  for (uint g = 0; g < 8; ++g) {
    int sum = 0;
    for (uint wi = 0; wi < 8; ++wi) {
      uint word = 0;
      for (uint k = 0; k < 4; ++k) {
        const int q = min(127, int(roundEven(iscale * x[at + 32 * g + 4 * wi + k])));
        sum += q;
        word |= (uint(q) & 0xffu) << (8 * k);
      }
      xk[dst + 1 + 8 * g + wi] = word;
    }
    xk[dst + 65 + g] = uint(sum);
  }
}
