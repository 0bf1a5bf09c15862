#include "runtime/model/weights.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string_view>
#include <utility>

#include "runtime/kernels/aligned_vector.h"
#include "runtime/kernels/kernels.h"

namespace hearth::runtime {

namespace {

std::string blk(int l, const char* name, const char* kind = "weight") {
  return "blk." + std::to_string(l) + "." + name + "." + kind;
}

const char* const kNormAndOutputTensors[] = {"attn_norm", "attn_output"};
// A gated delta-net layer's own tensors (Qwen 3.5), besides its norms and FFN.
const char* const kDeltaNetTensors[] = {"attn_qkv.weight",  "attn_gate.weight", "ssm_conv1d.weight", "ssm_dt.bias", "ssm_a",
                                        "ssm_beta.weight",  "ssm_alpha.weight", "ssm_norm.weight",   "ssm_out.weight"};
const char* const kExpertTensors[] = {"ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"};
const char* const kSharedExpertTensors[] = {"ffn_gate_inp_shexp", "ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp"};
// Per-layer embeddings (Gemma 4 E2B/E4B): the first stage's tables, and each layer's own tensors.
const char* const kPerLayerEmbdTensors[] = {"per_layer_token_embd.weight", "per_layer_model_proj.weight",
                                            "per_layer_proj_norm.weight"};
const char* const kPerLayerTensors[] = {"inp_gate", "proj", "post_norm"};

constexpr const char* kRopeFreqs = "rope_freqs.weight";
constexpr const char* kRopeShort = "rope_factors_short.weight";
constexpr const char* kRopeLong = "rope_factors_long.weight";
// Every layer rotates with the same factors, so every stage with layers maps them.
constexpr const char* kRopeTensors[] = {kRopeFreqs, kRopeShort, kRopeLong};

// Whether layer l has its own V projection (Gemma 4's full layers may take V from K).
bool has_v(const GgufFile& file, const ModelConfig& c, int l) {
  return !c.v_from_k || file.find_tensor(blk(l, "attn_v")) != nullptr;
}

// The attention and FFN input tensors of layer l: separate, or fused (phi3).
std::vector<const char*> projection_tensors(const GgufFile& file, const ModelConfig& c, int l) {
  std::vector<const char*> names;
  if (c.fused_qkv) names.push_back("attn_qkv");
  else if (c.has_own_kv(l)) names.insert(names.end(), {"attn_q", "attn_k"});
  else names.push_back("attn_q");  // a shared-KV layer (Gemma 4) projects only its queries
  if (!c.fused_qkv && c.has_own_kv(l) && has_v(file, c, l)) names.push_back("attn_v");
  if (c.is_moe() && !c.moe_beside_dense) return names;
  if (c.fused_gate_up) names.insert(names.end(), {"ffn_up", "ffn_down"});
  else names.insert(names.end(), {"ffn_gate", "ffn_up", "ffn_down"});
  return names;
}

// Rows [first, first + n) of a matrix, as a matrix of its own (rows are contiguous).
WeightMatrix row_range(const WeightMatrix& m, int64_t first, int64_t n) {
  WeightMatrix out = m;
  out.data = m.row(first);
  out.n_out = n;
  return out;
}

// The optional kinds of layer tensors: the ModelConfig field that says whether an architecture
// has them, their name, length and where they go.
enum class Length { QDim, KvDim, Embd, QNorm, KNorm, Heads, One };
struct OptionalTensor {
  TensorNeed ModelConfig::*need;
  const char* name;
  const char* kind;
  Length length;
  std::vector<float> LayerWeights::*field;
};
const OptionalTensor kOptionalTensors[] = {
    {&ModelConfig::qkv_bias, "attn_q", "bias", Length::QDim, &LayerWeights::bq},
    {&ModelConfig::qkv_bias, "attn_k", "bias", Length::KvDim, &LayerWeights::bk},
    {&ModelConfig::qkv_bias, "attn_v", "bias", Length::KvDim, &LayerWeights::bv},
    {&ModelConfig::out_bias, "attn_output", "bias", Length::Embd, &LayerWeights::bo},
    {&ModelConfig::qk_norm, "attn_q_norm", "weight", Length::QNorm, &LayerWeights::q_norm},
    {&ModelConfig::qk_norm, "attn_k_norm", "weight", Length::KNorm, &LayerWeights::k_norm},
    {&ModelConfig::post_norms, "post_attention_norm", "weight", Length::Embd, &LayerWeights::post_attn_norm},
    {&ModelConfig::post_norms, "post_ffw_norm", "weight", Length::Embd, &LayerWeights::post_ffn_norm},
    {&ModelConfig::attn_sinks, "attn_sinks", "weight", Length::Heads, &LayerWeights::attn_sinks},
    {&ModelConfig::layer_out_scale, "layer_output_scale", "weight", Length::One, &LayerWeights::out_scale},
};

// The length of an optional tensor of layer `layer`.
uint64_t length_of(const ModelConfig& c, Length l, int layer) {
  switch (l) {
    case Length::QDim: return static_cast<uint64_t>(c.layer_q_dim(layer));
    case Length::KvDim: return static_cast<uint64_t>(c.layer_kv_dim(layer));
    case Length::Embd: return static_cast<uint64_t>(c.n_embd);
    case Length::Heads: return static_cast<uint64_t>(c.n_head);
    case Length::QNorm: return static_cast<uint64_t>(c.qk_norm_whole ? c.layer_q_dim(layer) : c.layer_head_dim(layer));
    case Length::KNorm: return static_cast<uint64_t>(c.qk_norm_whole ? c.layer_kv_dim(layer) : c.layer_head_dim(layer));
    case Length::One: return 1;
  }
  return 0;
}

// Whether the stage loads this optional tensor of layer l: always when required (a missing one
// is then reported by name), when present if optional.
bool wanted(const GgufFile& file, const ModelConfig& c, const OptionalTensor& t, int l) {
  if (!c.has_own_kv(l) && std::string_view(t.name).starts_with("attn_k"))
    return false;  // a shared-KV layer's K norm (if the file has one) goes unused
  const TensorNeed need = c.*t.need;
  return need == TensorNeed::Required || (need == TensorNeed::Optional && file.find_tensor(blk(l, t.name, t.kind)));
}

// Tied embeddings: the output head reuses token_embd when output.weight is absent.
std::string output_tensor_name(const GgufFile& file) {
  return file.find_tensor("output.weight") ? "output.weight" : "token_embd.weight";
}

void check_spec(const ModelConfig& c, const StageSpec& s) {
  if (s.first_layer < 0 || s.first_layer > s.last_layer || s.last_layer > c.n_layer)
    throw GgufError("layer range [" + std::to_string(s.first_layer) + ", " + std::to_string(s.last_layer) +
                    ") does not fit a model of " + std::to_string(c.n_layer) + " layers");
  for (int l = s.first_layer; l < s.last_layer; ++l)
    if (c.first_layer_with(l) < s.first_layer)
      throw GgufError("layer range [" + std::to_string(s.first_layer) + ", " + std::to_string(s.last_layer) + ") holds layer " +
                      std::to_string(l) + ", which reads the KV cache of layer " + std::to_string(c.kv_source(l)) +
                      ": a stage holding it must start at layer " + std::to_string(c.first_layer_with(l)) + " or before");
}

std::string shape_text(const std::vector<uint64_t>& shape) {
  std::string s;
  for (auto d : shape) s += (s.empty() ? "" : ", ") + std::to_string(d);
  return "[" + s + "]";
}

void check_shape(const GgufTensorInfo& t, const std::vector<uint64_t>& expected) {
  if (t.shape != expected)
    throw GgufError("tensor '" + t.name + "' has shape " + shape_text(t.shape) + ", expected " + shape_text(expected));
}

}  // namespace

std::vector<std::string> stage_tensor_names(const GgufFile& file, const ModelConfig& config, const StageSpec& spec) {
  check_spec(config, spec);
  std::vector<std::string> names;
  if (spec.has_embedding) names.push_back("token_embd.weight");
  if (spec.has_embedding && config.n_embd_per_layer > 0)
    names.insert(names.end(), std::begin(kPerLayerEmbdTensors), std::end(kPerLayerEmbdTensors));
  for (int l = spec.first_layer; l < spec.last_layer; ++l) {
    names.push_back(blk(l, config.ffn_norm_tensor.c_str()));
    if (config.n_embd_per_layer > 0)
      for (const char* t : kPerLayerTensors) names.push_back(blk(l, t));
    if (config.is_recurrent(l)) {
      names.push_back(blk(l, "attn_norm"));
      for (const char* t : kDeltaNetTensors) names.push_back("blk." + std::to_string(l) + "." + t);
    } else {
      for (const char* t : kNormAndOutputTensors) names.push_back(blk(l, t));
      for (const char* t : projection_tensors(file, config, l)) names.push_back(blk(l, t));
    }
    if (config.is_recurrent(l) && !config.is_moe())
      for (const char* t : {"ffn_gate", "ffn_up", "ffn_down"}) names.push_back(blk(l, t));
    if (config.is_moe() && !config.moe_beside_dense)
      for (const char* t : kExpertTensors) {
        names.push_back(blk(l, t));
        if (config.expert_bias == TensorNeed::Required) names.push_back(blk(l, t, "bias"));
      }
    if (config.moe_beside_dense) {
      const bool fused = file.find_tensor(blk(l, "ffn_gate_up_exps")) != nullptr;
      for (const char* t : {"ffn_gate_inp", "post_ffw_norm_1", "pre_ffw_norm_2", "post_ffw_norm_2", "ffn_down_exps"})
        names.push_back(blk(l, t));
      names.push_back(blk(l, "ffn_gate_inp", "scale"));
      if (file.find_tensor(blk(l, "ffn_down_exps", "scale"))) names.push_back(blk(l, "ffn_down_exps", "scale"));
      if (fused) names.push_back(blk(l, "ffn_gate_up_exps"));
      else names.insert(names.end(), {blk(l, "ffn_gate_exps"), blk(l, "ffn_up_exps")});
    }
    if (config.n_ff_shexp > 0)
      for (const char* t : kSharedExpertTensors) names.push_back(blk(l, t));
    if (!config.is_recurrent(l))  // the optional tensors are attention's and Gemma's
      for (const OptionalTensor& t : kOptionalTensors)
        if (wanted(file, config, t, l)) names.push_back(blk(l, t.name, t.kind));
  }
  for (const char* t : kRopeTensors)
    if (spec.first_layer < spec.last_layer && file.find_tensor(t)) names.push_back(t);
  if (spec.has_output) {
    names.push_back("output_norm.weight");
    names.push_back(output_tensor_name(file));
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  std::sort(names.begin(), names.end(), [&](const std::string& a, const std::string& b) {
    return file.require_tensor(a).offset < file.require_tensor(b).offset;
  });
  return names;
}

StageWeights::StageWeights(const GgufFile& file, const ModelConfig& config, const StageSpec& spec)
    : config_(config), spec_(spec), path_(file.path()) {
  const std::vector<std::string> names = stage_tensor_names(file, config, spec);

  // Map the needed tensors, merging neighbours whose gap is small, so a stage holds a handful of
  // mappings rather than hundreds.
  constexpr uint64_t kMergeGap = 64 * 1024;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [begin, end) file offsets
  for (const auto& n : names) {
    const auto& t = file.require_tensor(n);
    if (!ranges.empty() && t.offset <= ranges.back().second + kMergeGap)
      ranges.back().second = std::max(ranges.back().second, t.offset + t.n_bytes);
    else ranges.emplace_back(t.offset, t.offset + t.n_bytes);
  }
  for (const auto& [b, e] : ranges) regions_.emplace_back(file.path(), b, e - b);
  // The norms and biases read below are small tensors between large matrices: without this, each
  // read would bring read_ahead_kb of its neighbours into the page cache, which a stage that
  // pages those matrices (layer_pager.h) must not hold.
  for (const auto& r : regions_) r.advise(MappedRegion::Advice::Random, r.offset(), r.size());

  const auto bytes_of = [&](const GgufTensorInfo& t) -> const uint8_t* {
    for (const auto& r : regions_)
      if (t.offset >= r.offset() && t.offset + t.n_bytes <= r.offset() + r.size()) return r.data() + (t.offset - r.offset());
    throw GgufError("internal: tensor '" + t.name + "' is not mapped");
  };
  // A matrix, or with n_expert > 0 the first of a 3-D tensor's expert matrices.
  const auto matrix = [&](const std::string& name, uint64_t n_in, uint64_t n_out, uint64_t n_expert = 0) {
    const auto& t = file.require_tensor(name);
    std::vector<uint64_t> shape{n_in};
    if (n_out) shape.push_back(n_out);
    if (n_expert) shape.push_back(n_expert);
    check_shape(t, shape);
    const auto info = tensor_type_info(static_cast<uint32_t>(t.type));
    if (!info->computable)
      throw GgufError("tensor '" + name + "' has type " + std::string(info->name) +
                      ", which this runtime cannot compute with (supported: " + computable_type_names() + ")");
    return WeightMatrix{t.type, bytes_of(t), static_cast<int64_t>(n_in), static_cast<int64_t>(n_out), row_bytes(t.type, n_in)};
  };
  const auto vector = [&](const std::string& name, uint64_t n) {
    const WeightMatrix m = matrix(name, n, 0);
    std::vector<float> v(n);
    dequantize_row(m.type, m.data, v.data(), static_cast<int64_t>(n));
    return v;
  };

  const uint64_t E = config.n_embd;
  if (spec.has_embedding) token_embd_ = matrix("token_embd.weight", E, config.n_vocab);
  if (const uint64_t P = static_cast<uint64_t>(config.n_embd_per_layer); spec.has_embedding && P > 0) {
    const uint64_t all = P * static_cast<uint64_t>(config.n_layer);
    per_layer_embd_.token_embd = matrix(kPerLayerEmbdTensors[0], all, config.n_vocab);
    per_layer_embd_.model_proj = matrix(kPerLayerEmbdTensors[1], E, all);
    per_layer_embd_.proj_norm = vector(kPerLayerEmbdTensors[2], P);
  }
  for (int l = spec.first_layer; l < spec.last_layer; ++l) {
    const uint64_t F = static_cast<uint64_t>(config.layer_n_ff(l));  // Gemma 4 E2B: its shared-KV layers are twice as wide
    const uint64_t Q = config.layer_q_dim(l), KV = config.layer_kv_dim(l);
    LayerWeights w;
    w.attn_norm = vector(blk(l, "attn_norm"), E);
    if (config.is_recurrent(l)) {
      const auto name = [&](const char* t) { return "blk." + std::to_string(l) + "." + t; };
      const uint64_t C = static_cast<uint64_t>(config.ssm_conv_channels()), DI = static_cast<uint64_t>(config.ssm_d_inner);
      const uint64_t H = static_cast<uint64_t>(config.ssm_dt_rank), K = static_cast<uint64_t>(config.ssm_conv_kernel);
      w.ssm_qkv = matrix(name("attn_qkv.weight"), E, C);
      w.ssm_z = matrix(name("attn_gate.weight"), E, DI);
      w.ssm_beta = matrix(name("ssm_beta.weight"), E, H);
      w.ssm_alpha = matrix(name("ssm_alpha.weight"), E, H);
      w.ssm_out = matrix(name("ssm_out.weight"), DI, E);
      const WeightMatrix conv = matrix(name("ssm_conv1d.weight"), K, C);
      w.ssm_conv.resize(K * C);
      for (uint64_t c = 0; c < C; ++c) dequantize_row(conv.type, conv.row(static_cast<int64_t>(c)), &w.ssm_conv[c * K], static_cast<int64_t>(K));
      w.ssm_dt_bias = vector(name("ssm_dt.bias"), H);
      w.ssm_a = vector(name("ssm_a"), H);
      w.ssm_norm = vector(name("ssm_norm.weight"), static_cast<uint64_t>(config.ssm_head_v_dim()));
    } else if (config.fused_qkv) {
      const WeightMatrix qkv = matrix(blk(l, "attn_qkv"), E, Q + 2 * KV);
      w.wq = row_range(qkv, 0, static_cast<int64_t>(Q));
      w.wk = row_range(qkv, static_cast<int64_t>(Q), static_cast<int64_t>(KV));
      w.wv = row_range(qkv, static_cast<int64_t>(Q + KV), static_cast<int64_t>(KV));
    } else {
      w.wq = matrix(blk(l, "attn_q"), E, config.attn_output_gate ? 2 * Q : Q);  // per head: query, then gate
      if (config.has_own_kv(l)) w.wk = matrix(blk(l, "attn_k"), E, KV);         // else it reads another layer's cache
      if (config.has_own_kv(l) && has_v(file, config, l)) w.wv = matrix(blk(l, "attn_v"), E, KV);  // else V is K's projection
    }
    if (!config.is_recurrent(l)) w.wo = matrix(blk(l, "attn_output"), Q, E);
    w.ffn_norm = vector(blk(l, config.ffn_norm_tensor.c_str()), E);
    if (config.is_moe()) {
      const uint64_t X = static_cast<uint64_t>(config.n_expert), FX = static_cast<uint64_t>(config.n_ff_exp);
      w.router = matrix(blk(l, "ffn_gate_inp"), E, X);
      if (config.moe_beside_dense && file.find_tensor(blk(l, "ffn_gate_up_exps"))) {
        // Each expert's gate rows, then its up rows (llama.cpp's views of the fused tensor).
        const WeightMatrix both = matrix(blk(l, "ffn_gate_up_exps"), E, 2 * FX, X);
        w.gate_exps = {row_range(both, 0, static_cast<int64_t>(FX)), config.n_expert, both.bytes()};
        w.up_exps = {row_range(both, static_cast<int64_t>(FX), static_cast<int64_t>(FX)), config.n_expert, both.bytes()};
      } else {
        w.gate_exps = {matrix(blk(l, "ffn_gate_exps"), E, FX, X), config.n_expert};
        w.up_exps = {matrix(blk(l, "ffn_up_exps"), E, FX, X), config.n_expert};
      }
      w.down_exps = {matrix(blk(l, "ffn_down_exps"), FX, E, X), config.n_expert};
      if (config.moe_beside_dense) {
        w.router_scale = vector(blk(l, "ffn_gate_inp", "scale"), E);
        w.post_ffn_norm_1 = vector(blk(l, "post_ffw_norm_1"), E);
        w.pre_ffn_norm_2 = vector(blk(l, "pre_ffw_norm_2"), E);
        w.post_ffn_norm_2 = vector(blk(l, "post_ffw_norm_2"), E);
        if (file.find_tensor(blk(l, "ffn_down_exps", "scale"))) w.down_exps_scale = vector(blk(l, "ffn_down_exps", "scale"), X);
        w.w_gate = matrix(blk(l, "ffn_gate"), E, F);
        w.w_up = matrix(blk(l, "ffn_up"), E, F);
        w.w_down = matrix(blk(l, "ffn_down"), F, E);
      }
      if (config.expert_bias == TensorNeed::Required) {
        const auto rows = [&](const char* name, uint64_t n, uint64_t count) {  // a [n, count] f32 bias, row by row
          const WeightMatrix m = matrix(blk(l, name, "bias"), n, count);
          std::vector<float> v(n * count);
          for (uint64_t r = 0; r < count; ++r)
            dequantize_row(m.type, m.row(static_cast<int64_t>(r)), v.data() + r * n, static_cast<int64_t>(n));
          return v;
        };
        w.router_bias = vector(blk(l, "ffn_gate_inp", "bias"), X);
        w.gate_exps_bias = rows("ffn_gate_exps", FX, X);
        w.up_exps_bias = rows("ffn_up_exps", FX, X);
        w.down_exps_bias = rows("ffn_down_exps", E, X);
      }
    } else if (config.fused_gate_up) {  // the gate's rows first, then the up projection's
      const WeightMatrix gate_up = matrix(blk(l, "ffn_up"), E, 2 * F);
      w.w_gate = row_range(gate_up, 0, static_cast<int64_t>(F));
      w.w_up = row_range(gate_up, static_cast<int64_t>(F), static_cast<int64_t>(F));
      w.w_down = matrix(blk(l, "ffn_down"), F, E);
    } else {
      w.w_gate = matrix(blk(l, "ffn_gate"), E, F);
      w.w_up = matrix(blk(l, "ffn_up"), E, F);
      w.w_down = matrix(blk(l, "ffn_down"), F, E);
    }
    if (config.n_ff_shexp > 0) {
      const uint64_t FS = static_cast<uint64_t>(config.n_ff_shexp);
      w.gate_inp_shexp = vector(blk(l, "ffn_gate_inp_shexp"), E);
      w.gate_shexp = matrix(blk(l, "ffn_gate_shexp"), E, FS);
      w.up_shexp = matrix(blk(l, "ffn_up_shexp"), E, FS);
      w.down_shexp = matrix(blk(l, "ffn_down_shexp"), FS, E);
    }
    if (!config.is_recurrent(l))
      for (const OptionalTensor& t : kOptionalTensors)
        if (wanted(file, config, t, l)) w.*t.field = vector(blk(l, t.name, t.kind), length_of(config, t.length, l));
    if (const uint64_t P = static_cast<uint64_t>(config.n_embd_per_layer); P > 0) {
      w.ple_gate = matrix(blk(l, "inp_gate"), E, P);
      w.ple_proj = matrix(blk(l, "proj"), P, E);
      w.ple_post_norm = vector(blk(l, "post_norm"), E);
    }
    layers_.push_back(std::move(w));
  }
  const auto factors = [&](const char* name) {
    std::vector<float> v;
    if (spec.first_layer == spec.last_layer || !file.find_tensor(name)) return v;
    v = vector(name, static_cast<uint64_t>(config.n_rot / 2));
    for (float f : v)
      if (!(f > 0.f) || !std::isfinite(f))
        throw GgufError("tensor '" + std::string(name) + "' holds a factor " + std::to_string(f) + "; factors must be positive");
    return v;
  };
  rope_freqs_ = factors(kRopeFreqs);
  rope_factors_short_ = factors(kRopeShort);
  rope_factors_long_ = factors(kRopeLong);
  if (spec.has_output) {
    output_norm_ = vector("output_norm.weight", E);
    output_ = matrix(output_tensor_name(file), E, config.n_vocab);
  }
  for (const auto& r : regions_) r.advise(MappedRegion::Advice::Normal, r.offset(), r.size());
}

const std::vector<float>& StageWeights::rope_factors(int n_ctx) const {
  if (!rope_freqs_.empty()) return rope_freqs_;
  const bool long_context = config_.n_ctx_orig > 0 && n_ctx > config_.n_ctx_orig;
  return long_context && !rope_factors_long_.empty() ? rope_factors_long_ : rope_factors_short_;
}

uint64_t StageWeights::mapped_bytes() const {
  uint64_t n = 0;
  for (const auto& r : regions_) n += r.size();
  return n;
}

void StageWeights::prepare_for_paging(const std::vector<std::pair<uint64_t, uint64_t>>& paged) const {
  if (!memory_.empty()) throw std::logic_error("a stage whose weights are held in memory cannot page");
  for (const auto& r : regions_) {
    r.advise(MappedRegion::Advice::Random, r.offset(), r.size());
    uint64_t at = r.offset();
    for (const auto& [begin, end] : paged) {
      r.advise(MappedRegion::Advice::DontNeed, begin, end - begin);  // what reading the norms mapped
      if (begin > at) r.advise(MappedRegion::Advice::WillNeed, at, begin - at);
      at = std::max(at, end);
    }
    if (at < r.offset() + r.size()) r.advise(MappedRegion::Advice::WillNeed, at, r.offset() + r.size() - at);
  }
}

uint64_t StageWeights::file_offset(const uint8_t* mapped) const {
  for (const MovedSpan& m : moved_)
    if (mapped >= m.at && mapped < m.at + m.bytes) return m.file_offset + static_cast<uint64_t>(mapped - m.at);
  for (const auto& r : regions_)
    if (mapped >= r.data() && mapped < r.data() + r.size()) return r.offset() + static_cast<uint64_t>(mapped - r.data());
  throw std::logic_error("StageWeights::file_offset: the pointer is not in this stage's mappings");
}

std::array<const WeightMatrix*, 18> step_matrices(const LayerWeights& w) {
  return {&w.wq,    &w.wk,       &w.wv,        &w.wo,      &w.w_gate,     &w.w_up,     &w.w_down,     &w.router,   &w.ssm_qkv,
          &w.ssm_z, &w.ssm_beta, &w.ssm_alpha, &w.ssm_out, &w.gate_shexp, &w.up_shexp, &w.down_shexp, &w.ple_gate, &w.ple_proj};
}

std::array<WeightMatrix*, 18> step_matrices(LayerWeights& w) {
  std::array<WeightMatrix*, 18> out{};
  const auto in = step_matrices(std::as_const(w));
  for (size_t i = 0; i < in.size(); ++i) out[i] = const_cast<WeightMatrix*>(in[i]);
  return out;
}

std::vector<WeightMatrix*> StageWeights::all_matrices() {
  std::vector<WeightMatrix*> all{&token_embd_, &output_, &per_layer_embd_.token_embd, &per_layer_embd_.model_proj};
  for (LayerWeights& w : layers_) {
    for (WeightMatrix* m : step_matrices(w)) all.push_back(m);
    for (ExpertMatrix* e : {&w.gate_exps, &w.up_exps, &w.down_exps}) all.push_back(&e->first);
  }
  return all;
}

std::vector<WeightMatrix*> StageWeights::interleavable_matrices(const KernelTable& kernels,
                                                                const std::function<bool(const WeightMatrix&)>& keep) {
  std::vector<WeightMatrix*> dense;
  for (LayerWeights& w : layers_)
    for (WeightMatrix* m : {&w.wq, &w.wk, &w.wv, &w.wo, &w.w_gate, &w.w_up, &w.w_down, &w.gate_shexp, &w.up_shexp, &w.down_shexp})
      dense.push_back(m);
  // The token embedding reads its rows one by one: an output head tied to it keeps them.
  if (spec_.has_output && !(spec_.has_embedding && output_.data == token_embd_.data)) dense.push_back(&output_);
  // A tensor two matrices share (none today) keeps its rows: it would be rewritten twice.
  const auto shared = [&](const WeightMatrix* m) {
    return std::count_if(dense.begin(), dense.end(), [&](const WeightMatrix* o) { return o->data == m->data; }) > 1;
  };
  std::vector<WeightMatrix*> out;
  for (WeightMatrix* m : dense)
    if (m->data != nullptr && m->n_out > 0 && m->n_out % kInterleavedRows == 0 && m->layout == RowLayout::kRows &&
        interleavable(m->type) && gemm_kernel(kernels, m->type, RowLayout::kInterleaved8) != nullptr && !keep(*m) && !shared(m))
      out.push_back(m);
  return out;
}

void StageWeights::interleave_in_memory(WeightMatrix& m, ThreadPool& pool) {
  // A run of groups per thread, each permuting with its own scratch.
  const int64_t groups = m.n_out / kInterleavedRows;
  const int64_t tasks = std::min<int64_t>(groups, pool.size());
  const uint64_t group_bytes = kInterleavedRows * m.row_bytes;
  std::vector<uint8_t> scratch(static_cast<size_t>(tasks) * group_bytes);
  if (m.data < memory_.data() || m.data >= memory_.data() + memory_.size())
    throw std::logic_error("StageWeights: a matrix to interleave is not in the stage's memory");
  auto* rows = const_cast<uint8_t*>(m.data);  // in memory_, still writable
  pool.run(static_cast<int>(tasks), [&](int task) {
    uint8_t* own = scratch.data() + static_cast<size_t>(task) * group_bytes;
    for (int64_t g = groups * task / tasks; g < groups * (task + 1) / tasks; ++g)
      interleave_rows(m.type, rows + static_cast<uint64_t>(g) * group_bytes, m.row_bytes, own);
  });
  m.layout = RowLayout::kInterleaved8;
}

StageWeights::HeldBytes StageWeights::hold_in_memory(const KernelTable& kernels,
                                                     const std::function<bool(const WeightMatrix&)>& keep, ThreadPool& pool) {
  if (!memory_.empty()) return {};
  const std::vector<WeightMatrix*> to_interleave = interleavable_matrices(kernels, keep);
  // What moves, as spans of the mapping: a step's matrices, or without huge pages only those
  // that change layout. A tensor two views share (a fused gate-up's experts) is one span.
  struct Span {
    const uint8_t* begin;
    const uint8_t* end;
    uint64_t at = 0;  // in memory_
  };
  std::vector<Span> spans;
  const auto add = [&](const WeightMatrix& m, uint64_t bytes) {
    if (m.data != nullptr && bytes > 0 && !keep(m)) spans.push_back({m.data, m.data + bytes});
  };
  if (huge_pages_available()) {
    for (LayerWeights& w : layers_) {
      for (const WeightMatrix* m : step_matrices(w)) add(*m, m->bytes());
      for (const ExpertMatrix* e : {&w.gate_exps, &w.up_exps, &w.down_exps})
        if (e->n_expert > 0)
          add(e->first, static_cast<uint64_t>(e->n_expert - 1) * (e->stride ? e->stride : e->first.bytes()) + e->first.bytes());
    }
    if (spec_.has_output) add(output_, output_.bytes());
    if (spec_.has_embedding) add(per_layer_embd_.model_proj, per_layer_embd_.model_proj.bytes());
  } else {
    for (const WeightMatrix* m : to_interleave) add(*m, m->bytes());
  }
  if (spans.empty()) return {};
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  std::vector<Span> merged;
  for (const Span& sp : spans)
    if (!merged.empty() && sp.begin < merged.back().end) merged.back().end = std::max(merged.back().end, sp.end);
    else merged.push_back(sp);
  uint64_t total = 0;
  for (Span& sp : merged) {
    sp.at = (total + kCacheLine - 1) / kCacheLine * kCacheLine;
    total = sp.at + static_cast<uint64_t>(sp.end - sp.begin);
  }
  // Everything a failure could stop halfway is allocated before a byte moves.
  moved_.reserve(merged.size());
  const std::vector<WeightMatrix*> all = all_matrices();
  try {
    memory_ = HugePageBuffer(total);
  } catch (const std::bad_alloc&) {
    // A speed-up, not a need (e.g. no commit charge left under strict overcommit).
    spdlog::warn("no memory for a copy of the weights ({:.1f} MB): they stay mapped from the file",
                 static_cast<double>(total) / 1e6);
    return {};
  }
  // Tensor by tensor, each copied by all threads, then its file pages let go: the stage never
  // holds much more than one tensor twice.
  HeldBytes held;
  for (const Span& sp : merged) {
    const uint64_t bytes = static_cast<uint64_t>(sp.end - sp.begin), offset = file_offset(sp.begin);
    constexpr uint64_t kPiece = uint64_t{1} << 20;
    const int pieces = static_cast<int>((bytes + kPiece - 1) / kPiece);
    pool.run(pieces, [&](int i) {
      const uint64_t at = static_cast<uint64_t>(i) * kPiece, n = std::min(kPiece, bytes - at);
      std::memcpy(memory_.data() + sp.at + at, sp.begin + at, n);
    });
    for (const MappedRegion& r : regions_) r.advise(MappedRegion::Advice::DontNeed, offset, bytes);
    drop_cached_pages(path_, offset, bytes);
    moved_.push_back({memory_.data() + sp.at, bytes, offset});
    held.moved += bytes;
  }
  for (WeightMatrix* m : all) {
    if (m->data == nullptr || keep(*m)) continue;  // a GPU finds its matrices by where they are
    for (const Span& sp : merged)
      if (m->data >= sp.begin && m->data < sp.end) {
        m->data = memory_.data() + sp.at + (m->data - sp.begin);
        break;
      }
  }
  try {
    for (WeightMatrix* m : to_interleave) {
      interleave_in_memory(*m, pool);
      held.interleaved += m->bytes();
    }
  } catch (const std::bad_alloc&) {
    // Its scratch, before the matrix changed: this one and the rest keep their rows.
    spdlog::warn("no memory to interleave the remaining weights: they keep the file's layout");
  }
  held.huge = std::min(memory_.huge_bytes(), held.moved);  // whole pages, the last one partly empty
  if (held.huge < held.moved) {
    memory_.collapse();
    held.huge = std::min(memory_.huge_bytes(), held.moved);
  }
  // Sealed only when all of it is on huge pages: the kernel leaves small pages of a read-only
  // mapping as they are, and the weights would keep them for the stage's life.
  if (held.huge == held.moved) memory_.seal();
  return held;
}

}  // namespace hearth::runtime
