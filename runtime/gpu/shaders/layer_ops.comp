#version 450
// The parts of a layer between its matrix products (vulkan_layers.cpp), one per OP_* define:
//   OP_RMSNORM     X[t] = H[t] * rsqrt(mean(H[t]^2) + eps) * norm         (a workgroup per token)
//   OP_ROPE_STORE  rotates Y's queries in place, stores the rotated keys and the values in the
//                  cache (rounded to f16 for an f16 cache, as the CPU's)     (a workgroup per token)
//   OP_ATTENTION   X[t, head] = softmax(q.K * scale) V over positions 0..pos  (a workgroup per token and head)
//   OP_ADD         H += Y                                                     (an invocation per element)
//   OP_SWIGLU      X = silu(gate) * up, gate and up from Y                    (an invocation per element)
// H is the hidden state, X the products' input, Y their output (q, k, v; or gate, up; back to
// back per matrix, token-major as matmul.comp writes them). The CPU's versions are in
// runtime/model (ops.cpp, rope.cpp, stage.cpp); results differ in the order of f32 sums and the
// GPU's exp.
layout(local_size_x = 64) in;

layout(std430, binding = 0) buffer Hidden { float h[]; };
layout(std430, binding = 1) buffer In { float x[]; };
layout(std430, binding = 2) buffer Out { float y[]; };
layout(std430, binding = 3) buffer Cache { float kv[]; };  // [slot][pos][k then v], this layer's
layout(std430, binding = 4) readonly buffer Batch { uint batch[]; };  // pos, slot per token; then cos, sin per token
layout(std430, binding = 5) readonly buffer Norms { float norms[]; };

layout(push_constant) uniform Shape {
  uint n_tokens;
  uint n_embd;
  uint q_dim;
  uint kv_dim;
  uint head_dim;
  uint n_head;
  uint n_head_kv;
  uint n_ff;
  uint n_ctx;
  uint n_pairs;   // RoPE: n_rot / 2
  uint neox;      // RoPE pairs n_pairs apart (else adjacent)
  uint kv_f16;    // the cache keeps f16 values
  uint norm_at;   // where this norm's weights start in norms[]
  float eps;
  float scale;    // attention's
} p;

shared float red[64];

float sum64(float v) {  // the workgroup's sum, in every invocation
  const uint lane = gl_LocalInvocationID.x;
  red[lane] = v;
  barrier();
  for (uint s = 32; s > 0; s >>= 1) {
    if (lane < s) red[lane] += red[lane + s];
    barrier();
  }
  const float total = red[0];
  barrier();
  return total;
}

float max64(float v) {
  const uint lane = gl_LocalInvocationID.x;
  red[lane] = v;
  barrier();
  for (uint s = 32; s > 0; s >>= 1) {
    if (lane < s) red[lane] = max(red[lane], red[lane + s]);
    barrier();
  }
  const float m = red[0];
  barrier();
  return m;
}

// f rounded to the nearest f16 value, ties to even, as an f32 (matmul.comp's to_half).
float to_half(float f) {
  if (isnan(f)) return f;
  int e;
  frexp(f, e);
  const int step = max(e - 11, -24);
  const float r = ldexp(roundEven(ldexp(abs(f), -step)), step);
  const float v = r > 65504.0 ? uintBitsToFloat(0x7f800000u) : r;
  return f < 0.0 ? -v : v;
}

uint tok_pos(uint t) { return batch[2 * t]; }
uint tok_slot(uint t) { return batch[2 * t + 1]; }
float rope_cos(uint t, uint i) { return uintBitsToFloat(batch[2 * p.n_tokens + t * 2 * p.n_pairs + i]); }
float rope_sin(uint t, uint i) { return uintBitsToFloat(batch[2 * p.n_tokens + t * 2 * p.n_pairs + p.n_pairs + i]); }

uint cache_row(uint t) { return (tok_slot(t) * p.n_ctx + tok_pos(t)) * 2 * p.kv_dim; }

#if defined(OP_ROPE_STORE)
// Pair i of a head: its two dimensions, adjacent or n_pairs apart (below n_rot either way).
uvec2 pair_dims(uint i) { return p.neox != 0u ? uvec2(i, i + p.n_pairs) : uvec2(2 * i, 2 * i + 1); }
vec2 rotated(uint t, uint i, vec2 v) {
  const float c = rope_cos(t, i), s = rope_sin(t, i);
  return vec2(v.x * c - v.y * s, v.x * s + v.y * c);
}
#endif

// The workgroup's index in a dispatch that may be two-dimensional (VulkanLayers::op() splits
// counts past min(the GPU's largest x count, 65535)).
uint group_index() { return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x; }

void main() {
  const uint lane = gl_LocalInvocationID.x;
#if defined(OP_RMSNORM)
  const uint t = group_index(), at = t * p.n_embd;
  if (t >= p.n_tokens) return;  // the same for the whole workgroup
  float ss = 0.0;
  for (uint i = lane; i < p.n_embd; i += 64) ss += h[at + i] * h[at + i];
  const float scale = 1.0 / sqrt(sum64(ss) / float(p.n_embd) + p.eps);
  for (uint i = lane; i < p.n_embd; i += 64) x[at + i] = h[at + i] * scale * norms[p.norm_at + i];
#elif defined(OP_ROPE_STORE)
  // Each invocation writes only what it read: queries rotated in place; keys rotated straight
  // into the cache, their dimensions past n_rot and the values copied there (no invocation reads
  // another's writes, so no barrier or coherence is needed).
  const uint t = group_index();
  if (t >= p.n_tokens) return;
  const uint q_at = t * p.q_dim, k_at = p.n_tokens * p.q_dim + t * p.kv_dim, v_at = p.n_tokens * (p.q_dim + p.kv_dim) + t * p.kv_dim;
  const uint row = cache_row(t);
  for (uint j = lane; j < p.n_head * p.n_pairs; j += 64) {
    const uint at = q_at + (j / p.n_pairs) * p.head_dim, i = j % p.n_pairs;
    const uvec2 d = pair_dims(i);
    const vec2 r = rotated(t, i, vec2(y[at + d.x], y[at + d.y]));
    y[at + d.x] = r.x;
    y[at + d.y] = r.y;
  }
  for (uint j = lane; j < p.n_head_kv * p.n_pairs; j += 64) {
    const uint head = (j / p.n_pairs) * p.head_dim, i = j % p.n_pairs;
    const uvec2 d = pair_dims(i);
    const vec2 r = rotated(t, i, vec2(y[k_at + head + d.x], y[k_at + head + d.y]));
    kv[row + head + d.x] = p.kv_f16 != 0u ? to_half(r.x) : r.x;
    kv[row + head + d.y] = p.kv_f16 != 0u ? to_half(r.y) : r.y;
  }
  for (uint i = lane; i < p.kv_dim; i += 64) {
    const float k = y[k_at + i], v = y[v_at + i];
    if (i % p.head_dim >= 2 * p.n_pairs) kv[row + i] = p.kv_f16 != 0u ? to_half(k) : k;
    kv[row + p.kv_dim + i] = p.kv_f16 != 0u ? to_half(v) : v;
  }
#elif defined(OP_ATTENTION)
  // Online softmax over blocks of 64 keys (one per invocation): each block's scores, its max and
  // sum, then every invocation's share of the head's dimensions (at most 4 of 256) rescaled and
  // added to. No scratch the size of the context.
  if (group_index() >= p.n_tokens * p.n_head) return;  // the same for the whole workgroup
  const uint t = group_index() / p.n_head, head = group_index() % p.n_head;
  const uint kvh = head / (p.n_head / p.n_head_kv);
  const uint q_at = t * p.q_dim + head * p.head_dim;
  const uint n_keys = tok_pos(t) + 1;
  const uint base = tok_slot(t) * p.n_ctx * 2 * p.kv_dim + kvh * p.head_dim;
  float m = uintBitsToFloat(0xff800000u);  // -inf
  float total = 0.0;
  float o[4] = float[4](0.0, 0.0, 0.0, 0.0);
  for (uint j0 = 0; j0 < n_keys; j0 += 64) {
    const uint j = j0 + lane;
    float s = uintBitsToFloat(0xff800000u);
    if (j < n_keys) {
      const uint k_at = base + j * 2 * p.kv_dim;
      float d = 0.0;
      for (uint i = 0; i < p.head_dim; ++i) d += y[q_at + i] * kv[k_at + i];
      s = d * p.scale;
    }
    const float block_max = max64(s);
    const float m_new = max(m, block_max);
    const float shrink = exp(m - m_new);  // 0 on the first block (m is -inf)
    const float e = j < n_keys ? exp(s - m_new) : 0.0;
    red[lane] = e;
    barrier();
    const uint n_block = min(64u, n_keys - j0);
    for (uint r = 0; r < 4; ++r) {
      const uint dim = lane + 64 * r;
      if (dim >= p.head_dim) break;
      float acc = o[r] * shrink;
      for (uint jj = 0; jj < n_block; ++jj) acc += red[jj] * kv[base + (j0 + jj) * 2 * p.kv_dim + p.kv_dim + dim];
      o[r] = acc;
    }
    barrier();
    total = total * shrink + sum64(e);
    m = m_new;
  }
  for (uint r = 0; r < 4; ++r) {
    const uint dim = lane + 64 * r;
    if (dim < p.head_dim) x[q_at + dim] = o[r] / total;
  }
#elif defined(OP_ADD)
  const uint i = group_index() * 64 + lane;
  if (i < p.n_tokens * p.n_embd) h[i] += y[i];
#elif defined(OP_SWIGLU)
  const uint i = group_index() * 64 + lane;
  if (i < p.n_tokens * p.n_ff) {
    const float g = y[i];
    x[i] = g / (1.0 + exp(-g)) * y[p.n_tokens * p.n_ff + i];
  }
#else
#error "define one of OP_RMSNORM, OP_ROPE_STORE, OP_ATTENTION, OP_ADD, OP_SWIGLU"
#endif
}
