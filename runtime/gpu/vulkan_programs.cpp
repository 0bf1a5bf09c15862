#include "runtime/gpu/vulkan_programs.h"

#include "runtime/gpu/vulkan_device.h"

namespace hearth::runtime {

VulkanPrograms::VulkanPrograms(VkDevice device, uint32_t bindings, uint32_t push_bytes, std::span<const SpirvCode> programs)
    : device_(device) {
  std::vector<VkDescriptorSetLayoutBinding> b(bindings);
  for (uint32_t i = 0; i < bindings; ++i) {
    b[i].binding = i;
    b[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    b[i].descriptorCount = 1;
    b[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
  }
  VkDescriptorSetLayoutCreateInfo li{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  li.bindingCount = bindings;
  li.pBindings = b.data();
  const VkPushConstantRange push{VK_SHADER_STAGE_COMPUTE_BIT, 0, push_bytes};
  try {
    vk_check(vkCreateDescriptorSetLayout(device_, &li, nullptr, &set_layout_), "vkCreateDescriptorSetLayout");
    VkPipelineLayoutCreateInfo pi{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
    pi.setLayoutCount = 1;
    pi.pSetLayouts = &set_layout_;
    pi.pushConstantRangeCount = 1;
    pi.pPushConstantRanges = &push;
    vk_check(vkCreatePipelineLayout(device_, &pi, nullptr, &layout_), "vkCreatePipelineLayout");
    modules_.reserve(programs.size());  // no push_back may throw between a handle's creation and its keeping
    pipelines_.reserve(programs.size());
    for (const SpirvCode& code : programs) {
      VkShaderModuleCreateInfo mi{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
      mi.codeSize = code.bytes;
      mi.pCode = code.words;
      VkShaderModule module;
      vk_check(vkCreateShaderModule(device_, &mi, nullptr, &module), "vkCreateShaderModule");
      modules_.push_back(module);
      VkComputePipelineCreateInfo ci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
      ci.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
      ci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
      ci.stage.module = module;
      ci.stage.pName = "main";
      ci.layout = layout_;
      VkPipeline pipeline;
      vk_check(vkCreateComputePipelines(device_, VK_NULL_HANDLE, 1, &ci, nullptr, &pipeline), "vkCreateComputePipelines");
      pipelines_.push_back(pipeline);
    }
  } catch (...) {
    release();  // the constructor did not finish, so no destructor will run
    throw;
  }
}

VulkanPrograms::~VulkanPrograms() { release(); }

void VulkanPrograms::release() {
  for (VkPipeline p : pipelines_) vkDestroyPipeline(device_, p, nullptr);
  pipelines_.clear();
  for (VkShaderModule m : modules_) vkDestroyShaderModule(device_, m, nullptr);
  modules_.clear();
  if (layout_) vkDestroyPipelineLayout(device_, layout_, nullptr);
  if (set_layout_) vkDestroyDescriptorSetLayout(device_, set_layout_, nullptr);
  layout_ = VK_NULL_HANDLE;
  set_layout_ = VK_NULL_HANDLE;
}

}  // namespace hearth::runtime
