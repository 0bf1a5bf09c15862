// Matrix products on a Vulkan device (shaders/matmul.comp): weights uploaded once, activations
// copied in and products copied out around each call, in one submission per call.
#pragma once

#include <vulkan/vulkan.h>

#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/gpu/vulkan_device.h"
#include "runtime/gpu/vulkan_programs.h"
#include "runtime/model/matmul_offload.h"

namespace hearth::runtime {

class VulkanMatmul : public MatmulOffload {
 public:
  explicit VulkanMatmul(VulkanDevice& gpu);
  ~VulkanMatmul() override;
  VulkanMatmul(const VulkanMatmul&) = delete;
  VulkanMatmul& operator=(const VulkanMatmul&) = delete;

  // Why w cannot live on this GPU ("" when it can): a weight type without a shader, or a matrix
  // over the device's largest storage buffer.
  std::string unfit(const WeightMatrix& w) const;
  // Copies w's weights to the GPU. REQUIRES: unfit(w) is empty. Throws GpuError (out of memory).
  void upload(const WeightMatrix& w);
  uint64_t bytes_uploaded() const { return bytes_; }
  const GpuCounters& counters() const { return counters_; }

  bool holds(const WeightMatrix& w) const override { return resident_.count(w.data) != 0; }
  void matmul(std::span<const MatmulTarget> targets, const float* x, int n_tokens) override;

  // For work that keeps its data on the GPU between products (vulkan_layers.h): the buffers the
  // products read (activations, n_tokens x n_in) and write (each target's n_tokens x n_out, back
  // to back), sized by ensure_io(), which may replace them (io_generation() then changes); and the
  // products recorded into a command buffer, after which y_buffer() holds them.
  void ensure_io(uint64_t x_floats, uint64_t y_floats);
  const VulkanBuffer& x_buffer() const { return x_dev_; }
  const VulkanBuffer& y_buffer() const { return y_dev_; }
  uint64_t io_generation() const { return io_generation_; }
  void record(VkCommandBuffer cmd, std::span<const MatmulTarget> targets, int n_tokens);
  // Adds a submission made around record() to counters(): the weight bytes it read, its GPU time.
  void count(uint64_t weight_bytes, double gpu_s, double wall_s) {
    counters_.submissions++;
    counters_.weight_bytes += weight_bytes;
    counters_.gpu_s += gpu_s;
    counters_.wall_s += wall_s;
  }

 private:
  struct Resident {
    VulkanBuffer weights;
    VkDescriptorSet set = VK_NULL_HANDLE;
    int pipeline = 0;  // index into pipelines_
  };
  void release();
  void bind_io(VkDescriptorSet set) const;
  VkDescriptorSet allocate_set();

  VulkanDevice& gpu_;
  VulkanPrograms programs_;  // one per matmul shader, then the Q8_0 and Q8_K activation quantizers
  std::vector<VkDescriptorPool> pools_;
  int sets_left_ = 0;                  // in pools_.back()
  std::unordered_map<const uint8_t*, Resident> resident_;  // by where the weights are mapped
  uint64_t bytes_ = 0;
  uint64_t io_generation_ = 0;
  GpuCounters counters_;
  // Activations in and products out: on the GPU (x_dev_, y_dev_), and where the CPU writes and
  // reads them when that memory is not the CPU's (x_host_, y_host_ stay empty on unified memory).
  VulkanBuffer x_dev_, y_dev_, xq_dev_, xk_dev_, x_host_, y_host_;
};

}  // namespace hearth::runtime
