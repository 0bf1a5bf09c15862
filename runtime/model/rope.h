// Rotary position embeddings (RoPE) in the two layouts llama.cpp knows, with the frequency
// adjustments GGUF files carry (Llama 3's per-dimension factors, linear position scaling).
#pragma once

#include <vector>

namespace hearth::runtime {

// Which dimensions of a head rotate together.
enum class RopeStyle {
  Normal,  // adjacent pairs (x[2i], x[2i+1]): llama (llama.cpp rope type 0)
  NeoX,    // halves (x[i], x[i + n_rot/2]): qwen2, qwen3 (llama.cpp rope type 2, "NeoX")
};

// Inverse frequencies base^(-2i/n_rot) for i in [0, n_rot/2).
std::vector<double> rope_inv_freq(float base, int n_rot);

// The frequencies a model actually rotates with: inv_freq[i] * freq_scale / factors[i].
// `factors` is Llama 3's rope_freqs.weight (empty when the file has none); freq_scale is 1/factor
// of linear scaling (positions divided by the factor), 1 without scaling.
std::vector<double> rope_frequencies(float base, int n_rot, float freq_scale, const std::vector<float>& factors);

// YaRN (gpt-oss): pair i rotates at a mix of its scaled and unscaled frequency,
//   inv_freq[i] * (freq_scale * (1 - r_i) + r_i),
// where r_i ramps from 1 (fast pairs, kept as trained) to 0 (slow pairs, scaled) between the
// dimensions at which beta_fast and beta_slow rotations fit the original context, rounded out to
// whole dimensions as ggml rounds them. Cos and sin are then multiplied by rope_yarn_mscale().
std::vector<double> rope_yarn_frequencies(float base, int n_rot, float freq_scale, int n_ctx_orig, float beta_fast,
                                          float beta_slow);
// 1 + 0.1 ln(1 / freq_scale): YaRN's attention temperature, applied through cos and sin.
float rope_yarn_mscale(float freq_scale);

// cos and sin of pos * freq[i], for the n_rot/2 pairs of one position; computed once per token
// and shared by every head. Angles are taken in double: at positions in the thousands float
// would lose the low bits.
// Both are multiplied by `mscale` (phi3's attn_factor, YaRN's temperature; 1 = none).
void rope_angles(int pos, const std::vector<double>& freq, float* cos_out, float* sin_out, float mscale = 1.f);

// Rotates pair i of head x by the angle whose cos/sin are c[i]/s[i], for i < n_pairs.
// Dimensions past 2 * n_pairs are left as they are.
void rope_rotate(float* x, const float* c, const float* s, int n_pairs, RopeStyle style);

// One head at one position, angles computed on the spot (tests and one-off use).
void rope_normal(float* x, int pos, const std::vector<double>& freq);
void rope_neox(float* x, int pos, const std::vector<double>& freq);

}  // namespace hearth::runtime
