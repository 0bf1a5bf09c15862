// One Vulkan device opened for compute: its instance, queue, command buffer and buffers.
//
// RAII over the C API: every handle made here is destroyed with the object. Errors throw
// GpuError naming the call and its result, so a failing driver reaches the user as one message.
#pragma once

#include <vulkan/vulkan.h>

#include <cstdint>
#include <vector>

#include "runtime/gpu/gpu.h"

namespace hearth::runtime {

// A buffer and its own memory allocation; `mapped` is set for host-visible ones.
struct VulkanBuffer {
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  void* mapped = nullptr;
  uint64_t size = 0;
};

class VulkanDevice {
 public:
  // The devices the loader lists (none when it or a driver is missing).
  static std::vector<GpuInfo> list();
  // index: from list(); -1 for the best one. Throws GpuError.
  explicit VulkanDevice(int index);
  ~VulkanDevice();
  VulkanDevice(const VulkanDevice&) = delete;
  VulkanDevice& operator=(const VulkanDevice&) = delete;

  const GpuInfo& info() const { return info_; }
  VkDevice device() const { return device_; }
  uint64_t max_buffer_bytes() const { return max_storage_range_; }
  uint32_t max_group_count_x() const { return max_group_x_; }

  // device_local: memory the GPU reads fastest (filled through upload()); otherwise host-visible
  // and coherent, mapped for the CPU. Throws GpuError when out of memory.
  VulkanBuffer create_buffer(uint64_t size, bool device_local);
  void destroy(VulkanBuffer& b);
  // Copies host bytes into a buffer (through a staging buffer when it is not host-visible).
  void upload(const VulkanBuffer& dst, const void* src, uint64_t size);

  // The one command buffer: begin() resets and opens it, submit() runs it and waits.
  VkCommandBuffer begin();
  void submit();
  // Timestamps around a submission's work: stamp(cmd, 0) before it, stamp(cmd, 1) after; after
  // submit(), the seconds between them (0 where the queue has no timestamps).
  void stamp(VkCommandBuffer cmd, uint32_t which);
  double stamped_seconds();

 private:
  void release();  // every handle, in reverse order of making
  uint32_t memory_type(uint32_t type_bits, VkMemoryPropertyFlags want, VkMemoryPropertyFlags avoid) const;

  GpuInfo info_;
  VkInstance instance_ = VK_NULL_HANDLE;
  VkPhysicalDevice physical_ = VK_NULL_HANDLE;
  VkPhysicalDeviceMemoryProperties memory_{};
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t queue_family_ = 0;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
  VkQueryPool timestamps_ = VK_NULL_HANDLE;  // 2 queries; none where the queue cannot
  double timestamp_ns_ = 0;                  // per tick
  uint64_t timestamp_mask_ = 0;              // the bits a timestamp has
  bool poll_fence_ = false;  // submit() polls before it blocks (not on CPU devices)
  uint64_t max_storage_range_ = 0;
  uint32_t max_group_x_ = 0;
};

// Throws GpuError("what: VK_ERROR_...") unless r is VK_SUCCESS.
void vk_check(VkResult r, const char* what);

}  // namespace hearth::runtime
