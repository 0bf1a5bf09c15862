// Which of a stage's matrices go to the GPU, and the GPU behind gpu.h.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>

#include "runtime/gpu/gpu.h"
#ifdef HEARTH_HAVE_VULKAN
#include "runtime/gpu/vulkan_device.h"
#include "runtime/gpu/vulkan_layers.h"
#include "runtime/gpu/vulkan_matmul.h"
#endif

namespace hearth::runtime {

int parse_gpu_choice(const std::string& choice) {
  if (choice == "auto") return -1;
  int index = -1;
  const auto [end, ec] = std::from_chars(choice.data(), choice.data() + choice.size(), index);
  if (ec != std::errc() || end != choice.data() + choice.size() || index < 0)
    throw GpuError("--gpu takes auto, none or a GPU's number (hearth gpus lists them), not '" + choice + "'");
  return index;
}

uint64_t default_gpu_budget(uint64_t memory_bytes) {
  const uint64_t margin = std::max<uint64_t>(memory_bytes / 10, uint64_t{512} << 20);
  return memory_bytes > margin ? memory_bytes - margin : 0;
}

#ifdef HEARTH_HAVE_VULKAN

namespace {

// The dense matrices of a layer that the stage multiplies through its MatmulOffload (a MoE
// layer's experts and router stay on the CPU in this slice).
std::vector<const WeightMatrix*> layer_matrices(const LayerWeights& w) {
  std::vector<const WeightMatrix*> out;
  for (const WeightMatrix* m : {&w.wq, &w.wk, &w.wv, &w.wo, &w.w_gate, &w.w_up, &w.w_down, &w.gate_shexp, &w.up_shexp,
                                &w.down_shexp, &w.ssm_qkv, &w.ssm_z, &w.ssm_beta, &w.ssm_alpha, &w.ssm_out})
    if (m->data && m->n_out > 0) out.push_back(m);
  return out;
}

class VulkanStageGpu : public StageGpu {
 public:
  VulkanStageGpu(int index, const StageWeights& weights, const StageGpuOptions& options) : device_(index), matmul_(device_) {
    budget_bytes_ = options.budget_bytes ? options.budget_bytes : default_gpu_budget(device_.info().memory_bytes);
    place(weights, budget_bytes_);
    if (options.whole_layers) run_whole(weights);
  }
  const GpuInfo& info() const override { return device_.info(); }
  const GpuPlacement& placement() const override { return placement_; }
  MatmulOffload& offload() override { return matmul_; }
  LayerOffload* layers() override { return layers_.get(); }
  GpuCounters counters() const override { return matmul_.counters(); }

 private:
  // First layers first, while they fit: a layer is on the GPU whole or not at all (but for
  // matrices of a type without a shader), so the CPU takes the stage's tail.
  void place(const StageWeights& weights, uint64_t budget) {
    const StageSpec& spec = weights.spec();
    bool full = false;
    for (int l = spec.first_layer; l < spec.last_layer; ++l) {
      std::vector<const WeightMatrix*> fit;
      uint64_t bytes = 0;
      for (const WeightMatrix* m : layer_matrices(weights.layer(l))) {
        const std::string why = matmul_.unfit(*m);
        if (why.empty()) {
          fit.push_back(m);
          bytes += m->bytes();
        } else {
          placement_.left.push_back("layer " + std::to_string(l) + ": " + why);
        }
      }
      if (placement_.bytes + bytes > budget) {
        placement_.left.push_back("layers " + std::to_string(l) + "-" + std::to_string(spec.last_layer - 1) + ": over the GPU memory budget (" +
                                  std::to_string(budget >> 20) + " MiB)");
        full = true;
        break;
      }
      for (const WeightMatrix* m : fit) matmul_.upload(*m);
      placement_.bytes += bytes;
      placement_.matrices += static_cast<int>(fit.size());
      ++placement_.layers;
    }
    if (!spec.has_output || full) return;
    const WeightMatrix& out = weights.output();
    const std::string why = matmul_.unfit(out);
    if (!why.empty()) {
      placement_.left.push_back("output head: " + why);
    } else if (placement_.bytes + out.bytes() > budget) {
      placement_.left.push_back("output head: over the GPU memory budget");
    } else {
      matmul_.upload(out);
      placement_.bytes += out.bytes();
      ++placement_.matrices;
      placement_.output = true;
    }
  }

  // The placed layers that run whole on the GPU: the first ones whose model the layer shaders
  // cover; from the first that does not, the rest go product by product.
  void run_whole(const StageWeights& weights) {
    const int first = weights.spec().first_layer;
    int end = first;
    for (; end < first + placement_.layers; ++end) {
      const LayerWeights& w = weights.layer(end);
      std::string why = VulkanLayers::unfit(weights.config(), w, end);
      for (const WeightMatrix* m : {&w.wq, &w.wk, &w.wv, &w.wo, &w.w_gate, &w.w_up, &w.w_down})
        if (why.empty() && !matmul_.holds(*m))
          why = "a matrix of a type without a GPU shader (" + std::string(tensor_type_name(m->type)) + ")";
      if (!why.empty()) {
        placement_.left.push_back("layers " + std::to_string(end) + "-" + std::to_string(first + placement_.layers - 1) +
                                  " run product by product: " + why);
        break;
      }
    }
    if (end == first) return;
    const uint64_t budget = budget_bytes_ > placement_.bytes ? budget_bytes_ - placement_.bytes : 0;
    layers_ = std::make_unique<VulkanLayers>(device_, matmul_, weights, end, budget);
    placement_.whole_layers = end - first;
  }

  VulkanDevice device_;
  VulkanMatmul matmul_;
  GpuPlacement placement_;
  uint64_t budget_bytes_ = 0;             // for weights, then the whole layers' caches
  std::unique_ptr<VulkanLayers> layers_;  // before matmul_ and device_ go
};

}  // namespace

bool gpu_support_built() { return true; }

std::vector<GpuInfo> list_gpus() { return VulkanDevice::list(); }

std::unique_ptr<StageGpu> open_stage_gpu(const std::string& choice, const StageWeights& weights, const StageGpuOptions& options) {
  return std::make_unique<VulkanStageGpu>(parse_gpu_choice(choice), weights, options);
}

#else  // built without Vulkan

bool gpu_support_built() { return false; }

std::vector<GpuInfo> list_gpus() { return {}; }

namespace {
const char kNoVulkan[] = "this build of hearth has no GPU support (configure it where libvulkan-dev and glslc are installed)";
}

std::unique_ptr<StageGpu> open_stage_gpu(const std::string& choice, const StageWeights&, const StageGpuOptions&) {
  parse_gpu_choice(choice);
  throw GpuError(kNoVulkan);
}

GpuSpeeds measure_gpu(const std::string& choice, uint64_t) {
  parse_gpu_choice(choice);
  throw GpuError(kNoVulkan);
}

#endif

std::unique_ptr<StageGpu> choose_stage_gpu(const std::string& choice, const StageWeights& weights) {
  if (choice == "none") return nullptr;
  std::unique_ptr<StageGpu> gpu;
  try {
    gpu = open_stage_gpu(choice, weights, {});
  } catch (const GpuError& e) {
    if (choice != "auto") throw GpuError("--gpu " + choice + ": " + e.what());
    spdlog::info("no GPU used ({}): the CPU runs everything", e.what());
    return nullptr;
  }
  const GpuPlacement& p = gpu->placement();
  const StageSpec& spec = weights.spec();
  spdlog::info("GPU {}: {} ({}, {:.1f} GiB, {}): {} of {} layers ({} whole){}, {} matrices, {:.1f} MiB of weights",
               gpu->info().index, gpu->info().name, gpu->info().kind, static_cast<double>(gpu->info().memory_bytes) / (1 << 30),
               gpu->info().api, p.layers, spec.last_layer - spec.first_layer, p.whole_layers,
               p.output ? " and the output head" : "", p.matrices, static_cast<double>(p.bytes) / (1 << 20));
  for (const std::string& why : p.left) spdlog::info("  on the CPU: {}", why);
  return gpu;
}

}  // namespace hearth::runtime
