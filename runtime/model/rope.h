// Rotary position embeddings (RoPE) in the two layouts llama.cpp knows, with the frequency
// adjustments GGUF files carry (Llama 3's per-dimension factors, LongRoPE, linear scaling, YaRN).
#pragma once

#include <vector>

namespace hearth::runtime {

// Which dimensions of a head rotate together.
enum class RopeStyle {
  Normal,  // adjacent pairs (x[2i], x[2i+1]): llama (llama.cpp rope type 0)
  NeoX,    // halves (x[i], x[i + n_rot/2]): qwen2, qwen3 (llama.cpp rope type 2, "NeoX")
};

// How one kind of layer rotates, computed as llama.cpp's CPU backend computes it (ggml's rope
// cache), in float: pair i's angle at position p is freq_scale * theta_i / factors[i] with
// theta_i = p * base^(-2/n_rot) ^ i iterated in float, YaRN's ramp mixing it with the unscaled
// angle; cos and sin are multiplied by attn_factor (and YaRN's temperature). Float angles lose low
// bits at positions in the thousands, as the reference and the models' own training code do; the
// Q8_0 reference files then agree bit for bit (a last-bit difference in an angle moves an
// activation across a rounding boundary, and logits by 0.07).
struct RopeSpec {
  float base = 10000.f;
  int n_rot = 0;                // dimensions rotated (pairs: n_rot / 2)
  float freq_scale = 1.f;       // 1 / linear scaling factor
  std::vector<float> factors;   // per pair, dividing the angle (rope_freqs, LongRoPE); empty = none
  float attn_factor = 1.f;      // rope.scaling.attn_factor
  bool yarn = false;            // YaRN (set_yarn)
  float yarn_low = 0, yarn_high = 0;  // the correction range, in dimensions

  // YaRN with ggml's rounded correction range for this base, n_rot and freq_scale.
  void set_yarn(int n_ctx_orig, float beta_fast, float beta_slow);
};

// cos and sin of the n_rot/2 angles of one position; computed once per token, shared by heads.
void rope_angles(int pos, const RopeSpec& spec, float* cos_out, float* sin_out);

// Rotates pair i of head x by the angle whose cos/sin are c[i]/s[i], for i < n_pairs.
// Dimensions past 2 * n_pairs are left as they are.
void rope_rotate(float* x, const float* c, const float* s, int n_pairs, RopeStyle style);

// One head at one position, angles computed on the spot (tests and one-off use).
void rope_apply(float* x, int pos, const RopeSpec& spec, RopeStyle style);

}  // namespace hearth::runtime
