#include "runtime/gpu/vulkan_matmul.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>

namespace hearth::runtime {

namespace {

// SPIR-V of shaders/matmul.comp, one per weight type, compiled by glslc at build time.
const uint32_t kMatmulF32[] = {
#include "matmul_f32.spv.inc"
};
const uint32_t kMatmulF16[] = {
#include "matmul_f16.spv.inc"
};
const uint32_t kMatmulQ8_0[] = {
#include "matmul_q8_0.spv.inc"
};
const uint32_t kMatmulQ4_0[] = {
#include "matmul_q4_0.spv.inc"
};
const uint32_t kMatmulQ4_K[] = {
#include "matmul_q4_k.spv.inc"
};
const uint32_t kMatmulQ5_K[] = {
#include "matmul_q5_k.spv.inc"
};
const uint32_t kMatmulQ6_K[] = {
#include "matmul_q6_k.spv.inc"
};
const uint32_t kQuantizeQ8_0[] = {
#include "quantize_q8_0.spv.inc"
};
const uint32_t kQuantizeQ8_K[] = {
#include "quantize_q8_k.spv.inc"
};

struct ShaderCode {
  std::optional<TensorType> type;  // the weights a matmul shader reads; none for the quantizer
  SpirvCode code;
};
const ShaderCode kShaders[] = {
    {TensorType::F32, {kMatmulF32, sizeof(kMatmulF32)}},
    {TensorType::F16, {kMatmulF16, sizeof(kMatmulF16)}},
    {TensorType::Q8_0, {kMatmulQ8_0, sizeof(kMatmulQ8_0)}},
    {TensorType::Q4_0, {kMatmulQ4_0, sizeof(kMatmulQ4_0)}},
    {TensorType::Q4_K, {kMatmulQ4_K, sizeof(kMatmulQ4_K)}},
    {TensorType::Q5_K, {kMatmulQ5_K, sizeof(kMatmulQ5_K)}},
    {TensorType::Q6_K, {kMatmulQ6_K, sizeof(kMatmulQ6_K)}},
    {std::nullopt, {kQuantizeQ8_0, sizeof(kQuantizeQ8_0)}},  // activations for Q8_0 and Q4_0 weights
    {std::nullopt, {kQuantizeQ8_K, sizeof(kQuantizeQ8_K)}},  // activations for the K-quants
};

std::vector<SpirvCode> shader_codes() {
  std::vector<SpirvCode> codes;
  for (const ShaderCode& s : kShaders) codes.push_back(s.code);
  return codes;
}
constexpr int kQuantizeQ8_0Pipeline = static_cast<int>(std::size(kShaders)) - 2;
constexpr int kQuantizeQ8_KPipeline = static_cast<int>(std::size(kShaders)) - 1;

// The activations a type's shader reads, as the CPU's dot products take them: Q8_0 blocks, Q8_K
// blocks, or floats.
enum class ActivationBlocks { none, q8_0, q8_k };
ActivationBlocks activation_blocks(TensorType t) {
  if (t == TensorType::Q8_0 || t == TensorType::Q4_0) return ActivationBlocks::q8_0;
  if (t == TensorType::Q4_K || t == TensorType::Q5_K || t == TensorType::Q6_K) return ActivationBlocks::q8_k;
  return ActivationBlocks::none;
}

// Bytes of Q8_0 activation blocks for n floats: 9 words per 32; of Q8_K blocks: 73 per 256.
uint64_t q8_bytes(uint64_t n) { return n / 32 * 9 * 4; }
uint64_t q8_k_bytes(uint64_t n) { return n / 256 * 73 * 4; }

int shader_of(TensorType t) {
  for (size_t i = 0; i < std::size(kShaders); ++i)
    if (kShaders[i].type == t) return static_cast<int>(i);
  return -1;
}

struct Shape {  // the shader's push constants
  uint32_t n_in, n_out, n_tokens, row_words, rows_per_y, y_offset;
};

constexpr uint32_t kTokensPerGroup = 8;  // TOK in the shader
constexpr int kSetsPerPool = 256;
constexpr uint32_t kBindings = 5;  // weights, activations, products, activations as Q8_0, as Q8_K

void barrier(VkCommandBuffer cmd, VkPipelineStageFlags from, VkAccessFlags from_access, VkPipelineStageFlags to, VkAccessFlags to_access) {
  VkMemoryBarrier b{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  b.srcAccessMask = from_access;
  b.dstAccessMask = to_access;
  vkCmdPipelineBarrier(cmd, from, to, 0, 1, &b, 0, nullptr, 0, nullptr);
}

}  // namespace

VulkanMatmul::VulkanMatmul(VulkanDevice& gpu) : gpu_(gpu), programs_(gpu.device(), kBindings, sizeof(Shape), shader_codes()) {}

VulkanMatmul::~VulkanMatmul() { release(); }

void VulkanMatmul::release() {
  VkDevice d = gpu_.device();
  for (auto& [_, r] : resident_) gpu_.destroy(r.weights);
  resident_.clear();
  for (VulkanBuffer* b : {&x_dev_, &y_dev_, &xq_dev_, &xk_dev_, &x_host_, &y_host_}) gpu_.destroy(*b);
  for (VkDescriptorPool p : pools_) vkDestroyDescriptorPool(d, p, nullptr);
  pools_.clear();
}

std::string VulkanMatmul::unfit(const WeightMatrix& w) const {
  if (shader_of(w.type) < 0) return "no GPU shader for " + std::string(tensor_type_name(w.type)) + " weights yet";
  if (activation_blocks(w.type) == ActivationBlocks::q8_k && w.n_in % 256 != 0) return "K-quant rows not a multiple of 256";
  if (w.bytes() > gpu_.max_buffer_bytes())
    return "the matrix (" + std::to_string(w.bytes() >> 20) + " MiB) is larger than the GPU's largest buffer (" +
           std::to_string(gpu_.max_buffer_bytes() >> 20) + " MiB)";
  if (w.type == TensorType::F16 && w.n_in % 2 != 0) return "f16 rows of an odd length (the shader reads pairs)";
  return "";
}

VkDescriptorSet VulkanMatmul::allocate_set() {
  VkDevice d = gpu_.device();
  if (sets_left_ == 0) {
    const VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, kBindings * kSetsPerPool};
    VkDescriptorPoolCreateInfo pi{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
    pi.maxSets = kSetsPerPool;
    pi.poolSizeCount = 1;
    pi.pPoolSizes = &size;
    VkDescriptorPool pool;
    vk_check(vkCreateDescriptorPool(d, &pi, nullptr, &pool), "vkCreateDescriptorPool");
    pools_.push_back(pool);
    sets_left_ = kSetsPerPool;
  }
  VkDescriptorSetAllocateInfo ai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
  ai.descriptorPool = pools_.back();
  ai.descriptorSetCount = 1;
  const VkDescriptorSetLayout set_layout = programs_.set_layout();
  ai.pSetLayouts = &set_layout;
  VkDescriptorSet set;
  vk_check(vkAllocateDescriptorSets(d, &ai, &set), "vkAllocateDescriptorSets");
  --sets_left_;
  return set;
}

void VulkanMatmul::bind_io(VkDescriptorSet set) const {
  const VkDescriptorBufferInfo io[4] = {{x_dev_.buffer, 0, VK_WHOLE_SIZE},
                                        {y_dev_.buffer, 0, VK_WHOLE_SIZE},
                                        {xq_dev_.buffer, 0, VK_WHOLE_SIZE},
                                        {xk_dev_.buffer, 0, VK_WHOLE_SIZE}};
  VkWriteDescriptorSet writes[4]{};
  for (uint32_t i = 0; i < 4; ++i) {
    writes[i].sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
    writes[i].dstSet = set;
    writes[i].dstBinding = i + 1;
    writes[i].descriptorCount = 1;
    writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[i].pBufferInfo = &io[i];
  }
  vkUpdateDescriptorSets(gpu_.device(), 4, writes, 0, nullptr);
}

void VulkanMatmul::ensure_io(uint64_t x_floats, uint64_t y_floats) {
  const uint64_t xb = x_floats * sizeof(float), yb = y_floats * sizeof(float);
  if (x_dev_.buffer && x_dev_.size >= xb && y_dev_.size >= yb) return;
  const uint64_t x_size = std::max({xb, x_dev_.size, uint64_t{1} << 16}), y_size = std::max({yb, y_dev_.size, uint64_t{1} << 16});
  for (VulkanBuffer* b : {&x_dev_, &y_dev_, &xq_dev_, &xk_dev_, &x_host_, &y_host_}) gpu_.destroy(*b);
  x_dev_ = gpu_.create_buffer(x_size, true);
  y_dev_ = gpu_.create_buffer(y_size, true);
  xq_dev_ = gpu_.create_buffer(q8_bytes(x_size / sizeof(float)) + 64, true);
  xk_dev_ = gpu_.create_buffer(q8_k_bytes(x_size / sizeof(float)) + 512, true);
  if (!x_dev_.mapped) x_host_ = gpu_.create_buffer(x_size, false);
  if (!y_dev_.mapped) y_host_ = gpu_.create_buffer(y_size, false);
  for (const auto& [_, r] : resident_) bind_io(r.set);
  ++io_generation_;
}

void VulkanMatmul::upload(const WeightMatrix& w) {
  if (holds(w)) return;
  Resident r;
  r.pipeline = shader_of(w.type);
  r.weights = gpu_.create_buffer(w.bytes(), true);
  try {
    gpu_.upload(r.weights, w.data, w.bytes());
    r.set = allocate_set();
    ensure_io(1, 1);
  } catch (...) {
    gpu_.destroy(r.weights);
    throw;
  }
  const VkDescriptorBufferInfo wi{r.weights.buffer, 0, VK_WHOLE_SIZE};
  VkWriteDescriptorSet write{VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
  write.dstSet = r.set;
  write.dstBinding = 0;
  write.descriptorCount = 1;
  write.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
  write.pBufferInfo = &wi;
  vkUpdateDescriptorSets(gpu_.device(), 1, &write, 0, nullptr);
  bind_io(r.set);
  bytes_ += w.bytes();
  resident_.emplace(w.data, r);
}

void VulkanMatmul::matmul(std::span<const MatmulTarget> targets, const float* x, int n_tokens) {
  if (targets.empty() || n_tokens <= 0) return;
  const auto start = std::chrono::steady_clock::now();
  const int64_t n_in = targets[0].w->n_in;
  uint64_t y_floats = 0;
  for (const MatmulTarget& t : targets) y_floats += static_cast<uint64_t>(t.w->n_out) * static_cast<uint64_t>(n_tokens);
  const uint64_t x_floats = static_cast<uint64_t>(n_in) * static_cast<uint64_t>(n_tokens);
  ensure_io(x_floats, y_floats);
  std::memcpy(x_host_.buffer ? x_host_.mapped : x_dev_.mapped, x, x_floats * sizeof(float));

  VkCommandBuffer cmd = gpu_.begin();
  if (x_host_.buffer) {
    const VkBufferCopy region{0, 0, x_floats * sizeof(float)};
    vkCmdCopyBuffer(cmd, x_host_.buffer, x_dev_.buffer, 1, &region);
    barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
  }
  gpu_.stamp(cmd, 0);
  record(cmd, targets, n_tokens);
  gpu_.stamp(cmd, 1);
  if (y_host_.buffer) {
    barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT,
            VK_ACCESS_TRANSFER_READ_BIT);
    const VkBufferCopy region{0, 0, y_floats * sizeof(float)};
    vkCmdCopyBuffer(cmd, y_dev_.buffer, y_host_.buffer, 1, &region);
    barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
            VK_ACCESS_HOST_READ_BIT);
  } else {
    barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
            VK_ACCESS_HOST_READ_BIT);
  }
  gpu_.submit();
  const auto* y = static_cast<const float*>(y_host_.buffer ? y_host_.mapped : y_dev_.mapped);
  for (const MatmulTarget& t : targets) {
    const size_t n = static_cast<size_t>(t.w->n_out) * static_cast<size_t>(n_tokens);
    std::memcpy(t.y, y, n * sizeof(float));
    y += n;
    counters_.weight_bytes += t.w->bytes();
  }
  counters_.submissions++;
  counters_.gpu_s += gpu_.stamped_seconds();
  counters_.wall_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void VulkanMatmul::record(VkCommandBuffer cmd, std::span<const MatmulTarget> targets, int n_tokens) {
  const uint32_t max_x = std::min<uint32_t>(gpu_.max_group_count_x(), 65535);
  const int64_t n_in = targets[0].w->n_in;
  const uint64_t x_floats = static_cast<uint64_t>(n_in) * static_cast<uint64_t>(n_tokens);
  // The activations' blocks, once for all targets that read them (their n_in is the same); any
  // target's set binds x, xq and xk.
  bool quantizing = false;
  // (A struct, not a tuple's structured bindings: clang 14, the fuzz build's, cannot capture those.)
  struct Quantizer {
    ActivationBlocks blocks;
    int pipeline;
    uint64_t block_floats;
  };
  for (const Quantizer& q : {Quantizer{ActivationBlocks::q8_0, kQuantizeQ8_0Pipeline, 32},
                             Quantizer{ActivationBlocks::q8_k, kQuantizeQ8_KPipeline, 256}}) {
    if (std::none_of(targets.begin(), targets.end(),
                     [&](const MatmulTarget& t) { return activation_blocks(t.w->type) == q.blocks; }))
      continue;
    const Shape shape{static_cast<uint32_t>(n_in), 0, static_cast<uint32_t>(n_tokens), 0, 0, 0};
    vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, programs_.pipeline(static_cast<size_t>(q.pipeline)));
    vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, programs_.layout(), 0, 1, &resident_.at(targets[0].w->data).set,
                            0, nullptr);
    vkCmdPushConstants(cmd, programs_.layout(), VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(shape), &shape);
    const uint64_t n_blocks = x_floats / q.block_floats;
    vkCmdDispatch(cmd, static_cast<uint32_t>((n_blocks + 63) / 64), 1, 1);
    quantizing = true;
  }
  if (quantizing)
    barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
            VK_ACCESS_SHADER_READ_BIT);
  uint64_t y_at = 0;
  int bound = -1;
  for (const MatmulTarget& t : targets) {
    const Resident& r = resident_.at(t.w->data);
    if (r.pipeline != bound) {
      vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, programs_.pipeline(static_cast<size_t>(r.pipeline)));
      bound = r.pipeline;
    }
    vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, programs_.layout(), 0, 1, &r.set, 0, nullptr);
    const auto n_out = static_cast<uint32_t>(t.w->n_out);
    const uint32_t gx = std::min(n_out, max_x);
    const Shape shape{static_cast<uint32_t>(n_in), n_out, static_cast<uint32_t>(n_tokens), static_cast<uint32_t>(t.w->row_bytes / 2), gx,
                      static_cast<uint32_t>(y_at)};
    vkCmdPushConstants(cmd, programs_.layout(), VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(shape), &shape);
    vkCmdDispatch(cmd, gx, (n_out + gx - 1) / gx, (static_cast<uint32_t>(n_tokens) + kTokensPerGroup - 1) / kTokensPerGroup);
    y_at += static_cast<uint64_t>(n_out) * static_cast<uint64_t>(n_tokens);
  }
}

}  // namespace hearth::runtime
