// The --gpu option of the commands that run a model here (run, bench): one spelling, one
// default, and one way of saying what went to the GPU.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "runtime/gpu/gpu.h"

namespace hearth::cli {

inline void add_gpu_option(CLI::App* cmd, std::string& gpu) {
  cmd->add_option("--gpu", gpu,
                  "Where the matrix products run: auto (the best GPU, if any; CPU devices such as lavapipe only when "
                  "named), none (the CPU), or a GPU's number from `hearth gpus`")
      ->capture_default_str();
}

}  // namespace hearth::cli
