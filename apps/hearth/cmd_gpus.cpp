// `hearth gpus`: the GPUs this device's Vulkan driver lists, with the numbers `--gpu N` takes.
#include <cstdio>

#include "apps/hearth/commands.h"
#include "runtime/gpu/gpu.h"

namespace hearth::cli {

void add_gpus_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("gpus", "List the GPUs that can take layers here (Vulkan), with their --gpu numbers");
  cmd->callback([] {
    if (!runtime::gpu_support_built()) {
      std::printf("this build of hearth has no GPU support (scripts/setup.sh builds it where libvulkan-dev and glslc are installed)\n");
      return;
    }
    const auto gpus = runtime::list_gpus();
    if (gpus.empty()) std::printf("no Vulkan device found (is a Vulkan driver installed? mesa-vulkan-drivers has lavapipe)\n");
    for (const runtime::GpuInfo& g : gpus)
      std::printf("%d  %-40s %-10s %8.1f GiB  %s%s\n", g.index, g.name.c_str(), g.kind.c_str(), static_cast<double>(g.memory_bytes) / (1 << 30),
                  g.api.c_str(), g.kind == "cpu" ? "  (a CPU device: --gpu auto passes it over)" : "");
  });
}

}  // namespace hearth::cli
