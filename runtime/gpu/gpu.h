// GPUs that take a stage's matrix products (Vulkan compute), behind one header that names no
// GPU API: the programs choose a GPU with `--gpu auto|none|N`, and the stage sees only the
// MatmulOffload it is given.
//
//   auto gpu = open_stage_gpu("auto", *weights, {});
//   Stage stage(weights, {.offload = &gpu->offload()}, pool);
//
// What runs on the GPU (issue 18, so far): the dense weight matrices of the stage's layers and
// its output head, of types F32, F16, Q8_0, Q4_0, Q4_K, Q5_K and Q6_K, uploaded once, first
// layers first until the memory budget is spent; of those layers, the first ones of a llama-style
// model run there whole (vulkan_layers.h: norms, RoPE, attention over a KV cache in GPU memory,
// SwiGLU, residuals; one submission per forward()); other layers' products go one call at a
// time, the rest of them on the CPU; the matrices not uploaded run on the CPU.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/model/layer_offload.h"
#include "runtime/model/matmul_offload.h"
#include "runtime/model/weights.h"

namespace hearth::runtime {

// Why a GPU could not be used: none found, a driver that failed, a choice that names none.
class GpuError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct GpuInfo {
  int index = 0;       // what `--gpu N` names
  std::string name;    // the driver's device name
  std::string kind;    // "discrete", "integrated", "virtual" or "cpu" (lavapipe)
  uint64_t memory_bytes = 0;  // its largest device-local heap
  std::string api;     // "Vulkan 1.3.x"
};

// Whether this build has a GPU API at all (Vulkan found when it was configured).
bool gpu_support_built();

// The GPUs the driver lists; empty without any (or without a Vulkan loader).
std::vector<GpuInfo> list_gpus();

// What a GPU holds of a stage.
struct GpuPlacement {
  int layers = 0;           // the stage's first layers whose matrices are all on the GPU
  int whole_layers = 0;     // of those, the first ones that run there whole (layer_offload.h)
  int matrices = 0;         // matrices uploaded (those layers', and the output head's)
  bool output = false;      // the output head
  uint64_t bytes = 0;       // weight bytes uploaded
  std::vector<std::string> left;  // why matrices stayed on the CPU (type, size, budget), one line each
};

struct StageGpuOptions {
  uint64_t budget_bytes = 0;  // bytes of weights, then of whole layers' KV caches, at most; 0: default_gpu_budget()
  bool whole_layers = true;   // run the layers it can whole there, not product by product
};

// The bytes a stage puts on a GPU of `memory_bytes` by default (weights first, then the KV caches
// of the layers it runs whole): its memory less max(10%, 512 MiB) for the activation buffers, the
// driver's own, and a display's use of it.
uint64_t default_gpu_budget(uint64_t memory_bytes);

// What the GPU did so far: the products it ran and the time they took, on the GPU (its
// timestamps, from the first dispatch of a submission to its last's end) and around them on the
// CPU (copies in and out, submission, waiting). Their ratio is what submission costs.
struct GpuCounters {
  uint64_t submissions = 0;
  uint64_t weight_bytes = 0;  // of the matrices multiplied, each once per submission
  double gpu_s = 0;           // 0 where the queue has no timestamps
  double wall_s = 0;
};

class StageGpu {
 public:
  virtual ~StageGpu() = default;
  virtual const GpuInfo& info() const = 0;
  virtual const GpuPlacement& placement() const = 0;
  virtual MatmulOffload& offload() = 0;
  // The stage's first layers run whole on the GPU (placement().whole_layers); null for none.
  virtual LayerOffload* layers() = 0;
  virtual GpuCounters counters() const = 0;
};

// The index a `--gpu` choice names: -1 for "auto", N for "N". Throws GpuError for anything else
// ("none" is the programs' to handle before).
int parse_gpu_choice(const std::string& choice);

// What a GPU does for the planner (partitioner::GpuProfile), measured with the shaders a stage
// uses: `hearth profile --gpu` and hearthd with a GPU. Each rate is seen from the CPU (copies,
// submission and waiting included), as a stage sees it.
struct GpuSpeeds {
  GpuInfo info;
  uint64_t budget_bytes = 0;                         // the weight bytes a stage would put on it (its memory less a margin)
  std::map<std::string, double> decode_bytes_per_s;  // by type name: weight bytes/s of one-token products
  double prefill_flop_s = 0;                         // of a 64-token Q8_0 product
  double submission_s = 0;                           // one product of a tiny matrix: what each submission costs
};

// Measures the GPU `choice` names (as open_stage_gpu() takes it; "auto" too) on matrices of about
// `matrix_bytes` each. Throws GpuError as open_stage_gpu() does.
GpuSpeeds measure_gpu(const std::string& choice, uint64_t matrix_bytes);

// "auto" (the best GPU: discrete, then integrated, then virtual; never a CPU device such as
// lavapipe, which the CPU tables outrun on the same cores), or an index of list_gpus(). Throws GpuError when the choice names no GPU, none exists, or the driver fails.
std::unique_ptr<StageGpu> open_stage_gpu(const std::string& choice, const StageWeights& weights, const StageGpuOptions& options);

// What the programs' `--gpu` does: null for "none"; else open_stage_gpu(), with the GPU and what
// it holds said in the log. With "auto", no GPU or a failing driver is said there too and gives
// null (the CPU runs everything); a GPU named by number that cannot be used throws GpuError.
std::unique_ptr<StageGpu> choose_stage_gpu(const std::string& choice, const StageWeights& weights);

}  // namespace hearth::runtime
