// Compute pipelines of one interface: `bindings` storage buffers at bindings 0..n-1 and
// `push_bytes` of push constants, one pipeline per SPIR-V program (vulkan_matmul's shaders,
// vulkan_layers'). RAII: destroyed with the object; a failure throws GpuError.
#pragma once

#include <vulkan/vulkan.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace hearth::runtime {

struct SpirvCode {
  const uint32_t* words;
  size_t bytes;
};

class VulkanPrograms {
 public:
  VulkanPrograms(VkDevice device, uint32_t bindings, uint32_t push_bytes, std::span<const SpirvCode> programs);
  ~VulkanPrograms();
  VulkanPrograms(const VulkanPrograms&) = delete;
  VulkanPrograms& operator=(const VulkanPrograms&) = delete;

  VkDescriptorSetLayout set_layout() const { return set_layout_; }
  VkPipelineLayout layout() const { return layout_; }
  VkPipeline pipeline(size_t i) const { return pipelines_[i]; }

 private:
  void release();
  VkDevice device_;
  VkDescriptorSetLayout set_layout_ = VK_NULL_HANDLE;
  VkPipelineLayout layout_ = VK_NULL_HANDLE;
  std::vector<VkShaderModule> modules_;
  std::vector<VkPipeline> pipelines_;
};

}  // namespace hearth::runtime
