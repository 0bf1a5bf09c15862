// A stage's first layers whole on a Vulkan device: the products of VulkanMatmul and, between
// them, shaders/layer_ops.comp (norms, RoPE, attention over a KV cache in GPU memory, SwiGLU,
// residuals), all of a forward() in one submission, the hidden state crossing once each way.
//
// This slice runs llama-style layers only (unfit() says what else keeps a layer on the
// per-product path): RMSNorm, no biases or q/k norms, full attention with RoPE (normal or NeoX),
// a SwiGLU FFN, an f32 or f16 cache.
#pragma once

#include <vulkan/vulkan.h>

#include <string>
#include <vector>

#include "runtime/gpu/vulkan_device.h"
#include "runtime/gpu/vulkan_matmul.h"
#include "runtime/gpu/vulkan_programs.h"
#include "runtime/model/layer_offload.h"
#include "runtime/model/weights.h"

namespace hearth::runtime {

class VulkanLayers : public LayerOffload {
 public:
  // Layers [weights.spec().first_layer, end), whose matrices `matmul` holds, none unfit(); their
  // KV caches may take at most cache_budget bytes of the GPU's memory.
  VulkanLayers(VulkanDevice& gpu, VulkanMatmul& matmul, const StageWeights& weights, int end, uint64_t cache_budget);
  ~VulkanLayers() override;
  VulkanLayers(const VulkanLayers&) = delete;
  VulkanLayers& operator=(const VulkanLayers&) = delete;

  // Why layer l cannot run whole here ("" when it can): a feature of its model the shaders lack.
  static std::string unfit(const ModelConfig& c, const LayerWeights& w, int l);

  // Before prepare(): every layer offered; after: those whose caches fit (prepare()).
  int end() const override { return first_ + static_cast<int>(active_); }
  uint64_t prepare(int n_ctx, int max_sequences, int max_batch, TensorType kv_type) override;
  void forward(uint64_t token, float* x, const LayerOffloadBatch& batch) override;

 private:
  struct Layer {
    WeightMatrix wq, wk, wv, wo, gate, up, down;  // copies: keys of the matrices the GPU holds
    uint32_t attn_norm = 0, ffn_norm = 0;         // where their weights start in norms_
    VulkanBuffer cache;                           // [slot][pos][k then v]
    VkDescriptorSet set = VK_NULL_HANDLE;
  };
  enum Op { kRmsNorm, kRopeStore, kAttention, kAdd, kSwiglu, kOps };
  struct Shape;  // layer_ops.comp's push constants
  void release();
  void unprepare();  // what prepare() made
  void prepare_buffers(uint64_t cache_bytes);
  void bind(Layer& layer);
  void op(VkCommandBuffer cmd, Op op, const Layer& layer, uint64_t groups, uint32_t norm_at, uint32_t n_tokens) const;
  void products(VkCommandBuffer cmd, std::initializer_list<const WeightMatrix*> ws, int n_tokens);

  VulkanDevice& gpu_;
  VulkanMatmul& matmul_;
  int first_;
  size_t active_;  // the first layers_ that run, their caches allocated
  uint64_t cache_budget_;
  uint64_t token_ = 0;  // prepare()'s latest: the stage that may run
  // The model's shape, the same in every layer here.
  uint32_t n_embd_, q_dim_, kv_dim_, head_dim_, n_head_, n_head_kv_, n_ff_, n_pairs_;
  bool neox_;
  float eps_, scale_;
  uint32_t n_ctx_ = 0, max_sequences_ = 0, max_batch_ = 0;
  bool kv_f16_ = false;
  std::vector<Layer> layers_;
  VulkanBuffer hidden_, hidden_host_, batch_, norms_;
  VulkanPrograms programs_;  // one per Op
  VkDescriptorPool pool_ = VK_NULL_HANDLE;
  uint64_t io_generation_ = ~uint64_t{0};  // matmul_'s buffers the sets bind
};

}  // namespace hearth::runtime
