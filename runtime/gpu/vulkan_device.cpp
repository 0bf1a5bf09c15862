#include "runtime/gpu/vulkan_device.h"

#include <dlfcn.h>
#include <link.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace hearth::runtime {

namespace {

const char* result_name(VkResult r) {
  switch (r) {
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER (no Vulkan driver installed?)";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_TIMEOUT: return "VK_TIMEOUT";
    default: return "VkResult error";
  }
}

// Keeps the drivers the Vulkan loader has loaded (every shared object loaded now) from being
// unloaded when the instance goes. Why: lavapipe (mesa 22.3.6-1+deb12u2) allocates once, inside
// vkEnumeratePhysicalDevices, memory only its own globals point to; unloaded at
// vkDestroyInstance, that memory looked leaked to LeakSanitizer, which failed every sanitized
// process that looked for a GPU. A driver once used staying mapped costs a process nothing.
void keep_drivers_loaded() {
  std::vector<std::string> loaded;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) {
        if (info->dlpi_name != nullptr && info->dlpi_name[0] != '\0')
          static_cast<std::vector<std::string>*>(out)->push_back(info->dlpi_name);
        return 0;
      },
      &loaded);
  // Outside the iteration, which holds the loader's lock. RTLD_NOLOAD: only marks what is loaded.
  for (const std::string& name : loaded) dlopen(name.c_str(), RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

// Holds a VkInstance for as long as a scope needs one.
struct Instance {
  VkInstance handle = VK_NULL_HANDLE;
  Instance() {
    VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
    app.pApplicationName = "hearth";
    app.apiVersion = VK_API_VERSION_1_1;
    VkInstanceCreateInfo ci{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
    ci.pApplicationInfo = &app;
    vk_check(vkCreateInstance(&ci, nullptr, &handle), "vkCreateInstance");
    keep_drivers_loaded();
  }
  ~Instance() {
    if (handle) vkDestroyInstance(handle, nullptr);
  }
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;
  VkInstance release() { return std::exchange(handle, VK_NULL_HANDLE); }
};

std::vector<VkPhysicalDevice> physical_devices(VkInstance instance) {
  uint32_t n = 0;
  vk_check(vkEnumeratePhysicalDevices(instance, &n, nullptr), "vkEnumeratePhysicalDevices");
  std::vector<VkPhysicalDevice> devices(n);
  vk_check(vkEnumeratePhysicalDevices(instance, &n, devices.data()), "vkEnumeratePhysicalDevices");
  devices.resize(n);
  return devices;
}

const char* kind_of(VkPhysicalDeviceType t) {
  switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual";
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
    default: return "other";
  }
}

// Lower is better for `--gpu auto`: a graphics card before an integrated GPU before the CPU.
int rank_of(const std::string& kind) {
  static const char* order[] = {"discrete", "integrated", "virtual", "other", "cpu"};
  for (int i = 0; i < 5; ++i)
    if (kind == order[i]) return i;
  return 5;
}

GpuInfo describe(VkPhysicalDevice d, int index) {
  VkPhysicalDeviceProperties p;
  vkGetPhysicalDeviceProperties(d, &p);
  VkPhysicalDeviceMemoryProperties m;
  vkGetPhysicalDeviceMemoryProperties(d, &m);
  GpuInfo info;
  info.index = index;
  info.name = p.deviceName;
  info.kind = kind_of(p.deviceType);
  for (uint32_t h = 0; h < m.memoryHeapCount; ++h)
    if (m.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) info.memory_bytes = std::max<uint64_t>(info.memory_bytes, m.memoryHeaps[h].size);
  info.api = "Vulkan " + std::to_string(VK_API_VERSION_MAJOR(p.apiVersion)) + "." + std::to_string(VK_API_VERSION_MINOR(p.apiVersion)) + "." +
             std::to_string(VK_API_VERSION_PATCH(p.apiVersion));
  return info;
}

int compute_queue_family(VkPhysicalDevice d) {
  uint32_t n = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(d, &n, nullptr);
  std::vector<VkQueueFamilyProperties> families(n);
  vkGetPhysicalDeviceQueueFamilyProperties(d, &n, families.data());
  for (uint32_t i = 0; i < n; ++i)
    if (families[i].queueFlags & VK_QUEUE_COMPUTE_BIT) return static_cast<int>(i);
  return -1;
}

// How long one submission may take before the GPU counts as hung (a whole prefill of a big
// stage is well under this; a lost device would otherwise block the stage forever).
constexpr uint64_t kSubmitTimeoutNs = 120'000'000'000ull;

}  // namespace

void vk_check(VkResult r, const char* what) {
  if (r != VK_SUCCESS) throw GpuError(std::string(what) + " failed: " + result_name(r) + " (" + std::to_string(static_cast<int>(r)) + ")");
}

std::vector<GpuInfo> VulkanDevice::list() {
  std::vector<GpuInfo> out;
  try {
    Instance instance;
    const auto devices = physical_devices(instance.handle);
    for (size_t i = 0; i < devices.size(); ++i)
      if (compute_queue_family(devices[i]) >= 0) out.push_back(describe(devices[i], static_cast<int>(i)));
  } catch (const GpuError&) {
    return {};  // no loader or no driver: no GPU, which list_gpus() callers report
  }
  return out;
}

VulkanDevice::VulkanDevice(int index) {
  Instance instance;
  const auto devices = physical_devices(instance.handle);
  if (devices.empty()) throw GpuError("the Vulkan driver lists no GPU");
  if (index >= static_cast<int>(devices.size()))
    throw GpuError("--gpu " + std::to_string(index) + " names no GPU: the driver lists " + std::to_string(devices.size()) + " (hearth devices shows them)");
  if (index < 0) {
    int best_rank = 1 << 30;
    uint64_t best_memory = 0;
    for (size_t i = 0; i < devices.size(); ++i) {
      if (compute_queue_family(devices[i]) < 0) continue;
      const GpuInfo g = describe(devices[i], static_cast<int>(i));
      if (g.kind == "cpu") continue;  // lavapipe: slower than the CPU tables on the same cores
      const int r = rank_of(g.kind);
      if (r < best_rank || (r == best_rank && g.memory_bytes > best_memory)) {
        best_rank = r;
        best_memory = g.memory_bytes;
        index = static_cast<int>(i);
      }
    }
    if (index < 0) throw GpuError("no GPU: the Vulkan driver lists only CPU devices (`--gpu N` names one anyway)");
  }
  physical_ = devices[static_cast<size_t>(index)];
  info_ = describe(physical_, index);
  // A GPU's product takes tens of microseconds, and a driver's blocking wait may sleep longer
  // than that before it wakes: submit() polls first. Not on a CPU device (lavapipe), whose own
  // threads need the cores it would spin on.
  poll_fence_ = info_.kind != "cpu";
  const int family = compute_queue_family(physical_);
  if (family < 0) throw GpuError(info_.name + " has no compute queue");
  queue_family_ = static_cast<uint32_t>(family);
  uint32_t n_families = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(physical_, &n_families, nullptr);
  std::vector<VkQueueFamilyProperties> families(n_families);
  vkGetPhysicalDeviceQueueFamilyProperties(physical_, &n_families, families.data());
  const uint32_t timestamp_bits = families[queue_family_].timestampValidBits;
  vkGetPhysicalDeviceMemoryProperties(physical_, &memory_);
  VkPhysicalDeviceProperties props;
  vkGetPhysicalDeviceProperties(physical_, &props);
  max_storage_range_ = props.limits.maxStorageBufferRange;
  max_group_x_ = props.limits.maxComputeWorkGroupCount[0];

  const float priority = 1.f;
  VkDeviceQueueCreateInfo qi{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  qi.queueFamilyIndex = queue_family_;
  qi.queueCount = 1;
  qi.pQueuePriorities = &priority;
  VkDeviceCreateInfo di{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  di.queueCreateInfoCount = 1;
  di.pQueueCreateInfos = &qi;
  vk_check(vkCreateDevice(physical_, &di, nullptr, &device_), "vkCreateDevice");
  instance_ = instance.release();  // from here the destructor owns it, with the device
  vkGetDeviceQueue(device_, queue_family_, 0, &queue_);
  VkCommandPoolCreateInfo pi{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pi.queueFamilyIndex = queue_family_;
  VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  ai.commandBufferCount = 1;
  VkFenceCreateInfo fi{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  try {
    vk_check(vkCreateCommandPool(device_, &pi, nullptr, &pool_), "vkCreateCommandPool");
    ai.commandPool = pool_;
    vk_check(vkAllocateCommandBuffers(device_, &ai, &cmd_), "vkAllocateCommandBuffers");
    vk_check(vkCreateFence(device_, &fi, nullptr, &fence_), "vkCreateFence");
    if (timestamp_bits > 0 && props.limits.timestampPeriod > 0) {
      VkQueryPoolCreateInfo qpi{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
      qpi.queryType = VK_QUERY_TYPE_TIMESTAMP;
      qpi.queryCount = 2;
      vk_check(vkCreateQueryPool(device_, &qpi, nullptr, &timestamps_), "vkCreateQueryPool");
      timestamp_ns_ = props.limits.timestampPeriod;
      timestamp_mask_ = timestamp_bits >= 64 ? ~uint64_t{0} : (uint64_t{1} << timestamp_bits) - 1;
    }
  } catch (...) {
    release();  // the constructor did not finish, so no destructor will run
    throw;
  }
}

VulkanDevice::~VulkanDevice() { release(); }

void VulkanDevice::release() {
  if (device_) {
    vkDeviceWaitIdle(device_);
    if (timestamps_) vkDestroyQueryPool(device_, timestamps_, nullptr);
    if (fence_) vkDestroyFence(device_, fence_, nullptr);
    if (pool_) vkDestroyCommandPool(device_, pool_, nullptr);
    vkDestroyDevice(device_, nullptr);
  }
  if (instance_) vkDestroyInstance(instance_, nullptr);
  timestamps_ = VK_NULL_HANDLE;
  fence_ = VK_NULL_HANDLE;
  pool_ = VK_NULL_HANDLE;
  device_ = VK_NULL_HANDLE;
  instance_ = VK_NULL_HANDLE;
}

uint32_t VulkanDevice::memory_type(uint32_t type_bits, VkMemoryPropertyFlags want, VkMemoryPropertyFlags avoid) const {
  for (uint32_t i = 0; i < memory_.memoryTypeCount; ++i) {
    const VkMemoryPropertyFlags f = memory_.memoryTypes[i].propertyFlags;
    if ((type_bits & (1u << i)) && (f & want) == want && (f & avoid) == 0) return i;
  }
  return UINT32_MAX;
}

VulkanBuffer VulkanDevice::create_buffer(uint64_t size, bool device_local) {
  VulkanBuffer b;
  b.size = size;
  VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bi.size = std::max<uint64_t>(size, 4);
  bi.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  vk_check(vkCreateBuffer(device_, &bi, nullptr, &b.buffer), "vkCreateBuffer");
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(device_, b.buffer, &req);
  const VkMemoryPropertyFlags host = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  // Device-local memory the CPU cannot see first (a graphics card's own; its BAR window is small),
  // then any device-local (unified memory: integrated GPUs, lavapipe). Host memory cached if it
  // can be, as the CPU reads the products back from it.
  uint32_t type = device_local ? memory_type(req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)
                               : memory_type(req.memoryTypeBits, host | VK_MEMORY_PROPERTY_HOST_CACHED_BIT, 0);
  if (type == UINT32_MAX) type = memory_type(req.memoryTypeBits, device_local ? VkMemoryPropertyFlags{VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT} : host, 0);
  if (type == UINT32_MAX && device_local) type = memory_type(req.memoryTypeBits, 0, 0);
  VkMemoryAllocateInfo mi{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  mi.allocationSize = req.size;
  mi.memoryTypeIndex = type;
  VkResult r = type == UINT32_MAX ? VK_ERROR_FEATURE_NOT_PRESENT : vkAllocateMemory(device_, &mi, nullptr, &b.memory);
  if (r == VK_SUCCESS) r = vkBindBufferMemory(device_, b.buffer, b.memory, 0);
  if (r == VK_SUCCESS && (memory_.memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT))
    r = vkMapMemory(device_, b.memory, 0, VK_WHOLE_SIZE, 0, &b.mapped);
  if (r != VK_SUCCESS) {
    destroy(b);
    vk_check(r, "allocating GPU memory");
  }
  return b;
}

void VulkanDevice::destroy(VulkanBuffer& b) {
  if (b.buffer) vkDestroyBuffer(device_, b.buffer, nullptr);
  if (b.memory) vkFreeMemory(device_, b.memory, nullptr);  // unmaps it too
  b = {};
}

void VulkanDevice::upload(const VulkanBuffer& dst, const void* src, uint64_t size) {
  if (dst.mapped) {
    std::memcpy(dst.mapped, src, size);
    return;
  }
  constexpr uint64_t kStaging = uint64_t{64} << 20;
  VulkanBuffer staging = create_buffer(std::min(size, kStaging), false);
  try {
    for (uint64_t at = 0; at < size; at += kStaging) {
      const uint64_t n = std::min(kStaging, size - at);
      std::memcpy(staging.mapped, static_cast<const uint8_t*>(src) + at, n);
      VkCommandBuffer cmd = begin();
      const VkBufferCopy region{0, at, n};
      vkCmdCopyBuffer(cmd, staging.buffer, dst.buffer, 1, &region);
      submit();
    }
  } catch (...) {
    destroy(staging);
    throw;
  }
  destroy(staging);
}

VkCommandBuffer VulkanDevice::begin() {
  vk_check(vkResetCommandBuffer(cmd_, 0), "vkResetCommandBuffer");
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  vk_check(vkBeginCommandBuffer(cmd_, &bi), "vkBeginCommandBuffer");
  return cmd_;
}

void VulkanDevice::submit() {
  vk_check(vkEndCommandBuffer(cmd_), "vkEndCommandBuffer");
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cmd_;
  vk_check(vkQueueSubmit(queue_, 1, &si, fence_), "vkQueueSubmit");
  VkResult r = VK_NOT_READY;
  if (poll_fence_) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2);
    while ((r = vkGetFenceStatus(device_, fence_)) == VK_NOT_READY && std::chrono::steady_clock::now() < until) {
    }
  }
  if (r == VK_NOT_READY) r = vkWaitForFences(device_, 1, &fence_, VK_TRUE, kSubmitTimeoutNs);
  vkResetFences(device_, 1, &fence_);
  vk_check(r, "waiting for the GPU");
}

void VulkanDevice::stamp(VkCommandBuffer cmd, uint32_t which) {
  if (!timestamps_) return;
  if (which == 0) vkCmdResetQueryPool(cmd, timestamps_, 0, 2);
  vkCmdWriteTimestamp(cmd, which == 0 ? VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT : VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, timestamps_, which);
}

double VulkanDevice::stamped_seconds() {
  if (!timestamps_) return 0;
  uint64_t t[2] = {0, 0};
  if (vkGetQueryPoolResults(device_, timestamps_, 0, 2, sizeof(t), t, sizeof(uint64_t), VK_QUERY_RESULT_64_BIT) != VK_SUCCESS) return 0;
  return static_cast<double>((t[1] - t[0]) & timestamp_mask_) * timestamp_ns_ * 1e-9;
}

}  // namespace hearth::runtime
