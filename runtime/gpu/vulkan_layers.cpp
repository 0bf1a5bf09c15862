#include "runtime/gpu/vulkan_layers.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

namespace hearth::runtime {

namespace {

// SPIR-V of shaders/layer_ops.comp, one per operation, in the order of VulkanLayers::Op.
const uint32_t kRmsNormCode[] = {
#include "layer_rmsnorm.spv.inc"
};
const uint32_t kRopeStoreCode[] = {
#include "layer_rope_store.spv.inc"
};
const uint32_t kAttentionCode[] = {
#include "layer_attention.spv.inc"
};
const uint32_t kAddCode[] = {
#include "layer_add.spv.inc"
};
const uint32_t kSwigluCode[] = {
#include "layer_swiglu.spv.inc"
};
const SpirvCode kCode[] = {{kRmsNormCode, sizeof(kRmsNormCode)},
                           {kRopeStoreCode, sizeof(kRopeStoreCode)},
                           {kAttentionCode, sizeof(kAttentionCode)},
                           {kAddCode, sizeof(kAddCode)},
                           {kSwigluCode, sizeof(kSwigluCode)}};

constexpr uint32_t kOpBindings = 6;    // hidden, products' input, products' output, cache, batch, norms
constexpr uint32_t kMaxHeadDim = 256;  // the attention shader's 4 dimensions per invocation

// What follows in the command buffer reads what came before.
void after_writes(VkCommandBuffer cmd) {
  VkMemoryBarrier b{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  b.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  b.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT;
  vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                       VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &b, 0, nullptr, 0, nullptr);
}

uint32_t groups_of(uint64_t n) { return static_cast<uint32_t>((n + 63) / 64); }

}  // namespace

struct VulkanLayers::Shape {
  uint32_t n_tokens, n_embd, q_dim, kv_dim, head_dim, n_head, n_head_kv, n_ff, n_ctx, n_pairs, neox, kv_f16, norm_at;
  float eps, scale;
};

std::string VulkanLayers::unfit(const ModelConfig& c, const LayerWeights& w, int l) {
  if (c.is_moe() || c.is_recurrent(l)) return "mixture-of-experts and recurrent layers";
  if (c.is_swa(l) || c.n_swa > 0) return "sliding-window attention";
  if (c.attn_output_gate || c.v_norm || c.v_from_k || !c.has_own_kv(l) || c.n_embd_per_layer > 0)
    return "its attention's gates, norms or shared caches";
  if (c.ffn_activation != FfnActivation::SiLU) return "an FFN other than SwiGLU";
  if (!w.bq.empty() || !w.bk.empty() || !w.bv.empty() || !w.bo.empty()) return "attention biases";
  if (!w.q_norm.empty() || !w.k_norm.empty() || !w.post_attn_norm.empty() || !w.post_ffn_norm.empty() || !w.attn_sinks.empty() ||
      !w.out_scale.empty())
    return "q/k norms, post norms, sinks or output scales";
  if (!c.n_head_kv_layers.empty() || !c.n_ff_layers.empty()) return "layers of different shapes";
  if (c.layer_head_dim(l) > static_cast<int>(kMaxHeadDim) || c.n_rot > c.layer_head_dim(l) || c.n_rot % 2 != 0)
    return "heads wider than " + std::to_string(kMaxHeadDim) + " or an odd rotation";
  if (c.n_head % c.layer_n_head_kv(l) != 0) return "query heads not a multiple of key heads";
  if (w.attn_norm.empty() || w.ffn_norm.empty() || !w.wq.data || !w.wk.data || !w.wv.data || !w.wo.data || !w.w_gate.data ||
      !w.w_up.data || !w.w_down.data)
    return "a missing norm or matrix";
  return "";
}

VulkanLayers::VulkanLayers(VulkanDevice& gpu, VulkanMatmul& matmul, const StageWeights& weights, int end, uint64_t cache_budget)
    : gpu_(gpu),
      matmul_(matmul),
      first_(weights.spec().first_layer),
      active_(static_cast<size_t>(end - weights.spec().first_layer)),
      cache_budget_(cache_budget),
      programs_(gpu.device(), kOpBindings, sizeof(Shape), kCode) {
  const ModelConfig& c = weights.config();
  const int first = weights.spec().first_layer;
  n_embd_ = static_cast<uint32_t>(c.n_embd);
  q_dim_ = static_cast<uint32_t>(c.layer_q_dim(first));
  kv_dim_ = static_cast<uint32_t>(c.layer_kv_dim(first));
  head_dim_ = static_cast<uint32_t>(c.layer_head_dim(first));
  n_head_ = static_cast<uint32_t>(c.n_head);
  n_head_kv_ = static_cast<uint32_t>(c.layer_n_head_kv(first));
  n_ff_ = static_cast<uint32_t>(c.layer_n_ff(first));
  n_pairs_ = static_cast<uint32_t>(c.n_rot / 2);
  neox_ = c.rope_style == RopeStyle::NeoX;
  eps_ = c.rms_eps;
  scale_ = c.attention_scale > 0 ? c.attention_scale : 1.f / std::sqrt(static_cast<float>(head_dim_));
  std::vector<float> norms;
  for (int l = first; l < end; ++l) {
    const LayerWeights& w = weights.layer(l);
    Layer layer{w.wq, w.wk, w.wv, w.wo, w.w_gate, w.w_up, w.w_down};
    layer.attn_norm = static_cast<uint32_t>(norms.size());
    norms.insert(norms.end(), w.attn_norm.begin(), w.attn_norm.end());
    layer.ffn_norm = static_cast<uint32_t>(norms.size());
    norms.insert(norms.end(), w.ffn_norm.begin(), w.ffn_norm.end());
    layers_.push_back(layer);
  }
  VkDevice d = gpu_.device();
  try {
    norms_ = gpu_.create_buffer(norms.size() * sizeof(float), true);
    gpu_.upload(norms_, norms.data(), norms.size() * sizeof(float));
    const VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, kOpBindings * static_cast<uint32_t>(layers_.size())};
    VkDescriptorPoolCreateInfo dpi{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
    dpi.maxSets = static_cast<uint32_t>(layers_.size());
    dpi.poolSizeCount = 1;
    dpi.pPoolSizes = &size;
    vk_check(vkCreateDescriptorPool(d, &dpi, nullptr, &pool_), "vkCreateDescriptorPool");
  } catch (...) {
    release();
    throw;
  }
}

VulkanLayers::~VulkanLayers() { release(); }

void VulkanLayers::release() {
  VkDevice d = gpu_.device();
  for (Layer& l : layers_) gpu_.destroy(l.cache);
  for (VulkanBuffer* b : {&hidden_, &hidden_host_, &batch_, &norms_}) gpu_.destroy(*b);
  if (pool_) vkDestroyDescriptorPool(d, pool_, nullptr);
  pool_ = VK_NULL_HANDLE;
}

uint64_t VulkanLayers::prepare(int n_ctx, int max_sequences, int max_batch, TensorType kv_type) {
  if (kv_type != TensorType::F32 && kv_type != TensorType::F16)
    throw GpuError("the GPU's KV cache keeps f32 or f16 values, not " + std::string(tensor_type_name(kv_type)));
  const uint64_t cache_floats = uint64_t{static_cast<uint32_t>(max_sequences)} * static_cast<uint32_t>(n_ctx) * 2 * kv_dim_;
  const uint64_t cache_bytes = cache_floats * sizeof(float);
  if (cache_bytes > gpu_.max_buffer_bytes() || cache_floats > UINT32_MAX)
    throw GpuError("a layer's KV cache (" + std::to_string(cache_bytes >> 20) +
                   " MiB) is larger than the GPU's largest buffer or the shaders' 32-bit indices");
  // The caches share the budget the weights were placed in (the margin stays the driver's and
  // the display's): as many of the layers run whole as their caches fit, from the first; the
  // others go product by product. Checked before anything of an earlier stage is released.
  const size_t fit = std::min<uint64_t>(layers_.size(), cache_budget_ / cache_bytes);
  if (fit == 0)
    throw GpuError("no GPU layer's KV cache (" + std::to_string(cache_bytes >> 20) + " MiB for " + std::to_string(max_sequences) +
                   " x " + std::to_string(n_ctx) + " tokens) fits what the weights left of its budget (" +
                   std::to_string(cache_budget_ >> 20) + " MiB)");
  // A new stage (a relaunch, a test's next one) starts from empty caches sized for it: what an
  // earlier prepare() made goes first. One stage uses these at a time.
  unprepare();
  active_ = fit;
  n_ctx_ = static_cast<uint32_t>(n_ctx);
  max_sequences_ = static_cast<uint32_t>(max_sequences);
  max_batch_ = static_cast<uint32_t>(max_batch);
  kv_f16_ = kv_type == TensorType::F16;
  try {
    prepare_buffers(cache_bytes);
  } catch (...) {
    unprepare();
    throw;
  }
  return ++token_;
}

void VulkanLayers::unprepare() {
  for (Layer& l : layers_) {
    gpu_.destroy(l.cache);
    l.set = VK_NULL_HANDLE;
  }
  for (VulkanBuffer* b : {&hidden_, &hidden_host_, &batch_}) gpu_.destroy(*b);
  if (pool_) vkResetDescriptorPool(gpu_.device(), pool_, 0);
  max_batch_ = 0;
  ++token_;  // no earlier stage runs on what is gone
}

void VulkanLayers::prepare_buffers(uint64_t cache_bytes) {
  for (size_t i = 0; i < active_; ++i) layers_[i].cache = gpu_.create_buffer(cache_bytes, true);
  hidden_ = gpu_.create_buffer(uint64_t{max_batch_} * n_embd_ * sizeof(float), true);
  if (!hidden_.mapped) hidden_host_ = gpu_.create_buffer(hidden_.size, false);
  batch_ = gpu_.create_buffer(uint64_t{max_batch_} * (2 + 2 * n_pairs_) * sizeof(uint32_t), false);
  matmul_.ensure_io(uint64_t{max_batch_} * std::max({n_embd_, q_dim_, n_ff_}),
                    uint64_t{max_batch_} * std::max({q_dim_ + 2 * kv_dim_, 2 * n_ff_, n_embd_}));
  for (size_t i = 0; i < active_; ++i) {
    Layer& l = layers_[i];
    VkDescriptorSetAllocateInfo ai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
    ai.descriptorPool = pool_;
    ai.descriptorSetCount = 1;
    const VkDescriptorSetLayout set_layout = programs_.set_layout();
    ai.pSetLayouts = &set_layout;
    vk_check(vkAllocateDescriptorSets(gpu_.device(), &ai, &l.set), "vkAllocateDescriptorSets");
    bind(l);
  }
  io_generation_ = matmul_.io_generation();
}

void VulkanLayers::bind(Layer& layer) {
  const VkDescriptorBufferInfo info[kOpBindings] = {{hidden_.buffer, 0, VK_WHOLE_SIZE},
                                                    {matmul_.x_buffer().buffer, 0, VK_WHOLE_SIZE},
                                                    {matmul_.y_buffer().buffer, 0, VK_WHOLE_SIZE},
                                                    {layer.cache.buffer, 0, VK_WHOLE_SIZE},
                                                    {batch_.buffer, 0, VK_WHOLE_SIZE},
                                                    {norms_.buffer, 0, VK_WHOLE_SIZE}};
  VkWriteDescriptorSet writes[kOpBindings]{};
  for (uint32_t i = 0; i < kOpBindings; ++i) {
    writes[i].sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
    writes[i].dstSet = layer.set;
    writes[i].dstBinding = i;
    writes[i].descriptorCount = 1;
    writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[i].pBufferInfo = &info[i];
  }
  vkUpdateDescriptorSets(gpu_.device(), kOpBindings, writes, 0, nullptr);
}

void VulkanLayers::op(VkCommandBuffer cmd, Op op, const Layer& layer, uint64_t groups, uint32_t norm_at,
                      uint32_t n_tokens) const {
  const Shape shape{n_tokens, n_embd_,  q_dim_,          kv_dim_,           head_dim_, n_head_, n_head_kv_, n_ff_,
                    n_ctx_,   n_pairs_, neox_ ? 1u : 0u, kv_f16_ ? 1u : 0u, norm_at,   eps_,    scale_};
  vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, programs_.pipeline(op));
  vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, programs_.layout(), 0, 1, &layer.set, 0, nullptr);
  vkCmdPushConstants(cmd, programs_.layout(), VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(shape), &shape);
  // Counts past the GPU's largest x count go to a second dimension (layer_ops.comp's group_index).
  const uint64_t max_x = std::min<uint32_t>(gpu_.max_group_count_x(), 65535);
  const uint64_t gx = std::min(groups, max_x);
  vkCmdDispatch(cmd, static_cast<uint32_t>(gx), static_cast<uint32_t>((groups + gx - 1) / gx), 1);
  after_writes(cmd);
}

void VulkanLayers::products(VkCommandBuffer cmd, std::initializer_list<const WeightMatrix*> ws, int n_tokens) {
  MatmulTarget targets[3];
  size_t n = 0;
  for (const WeightMatrix* w : ws) targets[n++] = {w, nullptr};  // the products stay on the GPU
  matmul_.record(cmd, std::span(targets, n), n_tokens);
  after_writes(cmd);
}

void VulkanLayers::forward(uint64_t token, float* x, const LayerOffloadBatch& batch) {
  if (token != token_) throw GpuError("the GPU layers were prepared for another stage since");
  const auto n = static_cast<uint32_t>(batch.n_tokens);
  if (n == 0) return;
  const auto start = std::chrono::steady_clock::now();
  if (n > max_batch_) throw GpuError("a batch larger than the GPU layers were prepared for (or none was)");
  if (matmul_.io_generation() != io_generation_) {  // the products' buffers were replaced
    for (size_t i = 0; i < active_; ++i) bind(layers_[i]);
    io_generation_ = matmul_.io_generation();
  }
  auto* b = static_cast<uint32_t*>(batch_.mapped);
  for (uint32_t t = 0; t < n; ++t) {
    // The stage's validate() keeps these in range; the shaders index the cache by them unchecked.
    if (batch.pos[t] < 0 || static_cast<uint32_t>(batch.pos[t]) >= n_ctx_ || batch.slot[t] < 0 ||
        static_cast<uint32_t>(batch.slot[t]) >= max_sequences_)
      throw GpuError("a position or cache slot out of the GPU layers' range");
    b[2 * t] = static_cast<uint32_t>(batch.pos[t]);
    b[2 * t + 1] = static_cast<uint32_t>(batch.slot[t]);
  }
  std::memcpy(b + 2 * n, batch.rope.data(), uint64_t{n} * 2 * n_pairs_ * sizeof(float));
  const uint64_t hidden_bytes = uint64_t{n} * n_embd_ * sizeof(float);
  std::memcpy(hidden_host_.buffer ? hidden_host_.mapped : hidden_.mapped, x, hidden_bytes);

  VkCommandBuffer cmd = gpu_.begin();
  if (hidden_host_.buffer) {
    const VkBufferCopy region{0, 0, hidden_bytes};
    vkCmdCopyBuffer(cmd, hidden_host_.buffer, hidden_.buffer, 1, &region);
    after_writes(cmd);
  }
  gpu_.stamp(cmd, 0);
  for (size_t i = 0; i < active_; ++i) {
    const Layer& l = layers_[i];
    op(cmd, kRmsNorm, l, n, l.attn_norm, n);
    products(cmd, {&l.wq, &l.wk, &l.wv}, static_cast<int>(n));
    op(cmd, kRopeStore, l, n, 0, n);
    op(cmd, kAttention, l, uint64_t{n} * n_head_, 0, n);
    products(cmd, {&l.wo}, static_cast<int>(n));
    op(cmd, kAdd, l, groups_of(uint64_t{n} * n_embd_), 0, n);
    op(cmd, kRmsNorm, l, n, l.ffn_norm, n);
    products(cmd, {&l.gate, &l.up}, static_cast<int>(n));
    op(cmd, kSwiglu, l, groups_of(uint64_t{n} * n_ff_), 0, n);
    products(cmd, {&l.down}, static_cast<int>(n));
    op(cmd, kAdd, l, groups_of(uint64_t{n} * n_embd_), 0, n);
  }
  gpu_.stamp(cmd, 1);
  VkMemoryBarrier to_host{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  if (hidden_host_.buffer) {
    const VkBufferCopy region{0, 0, hidden_bytes};
    vkCmdCopyBuffer(cmd, hidden_.buffer, hidden_host_.buffer, 1, &region);
    to_host.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
  } else {
    to_host.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT;
  }
  to_host.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
  vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0,
                       1, &to_host, 0, nullptr, 0, nullptr);
  gpu_.submit();
  std::memcpy(x, hidden_host_.buffer ? hidden_host_.mapped : hidden_.mapped, hidden_bytes);
  uint64_t bytes = 0;
  for (size_t i = 0; i < active_; ++i) {
    const Layer& l = layers_[i];
    for (const WeightMatrix* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down}) bytes += w->bytes();
  }
  matmul_.count(bytes, gpu_.stamped_seconds(), std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

}  // namespace hearth::runtime
