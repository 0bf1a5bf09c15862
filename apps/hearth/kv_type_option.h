// The --kv-type option of every command that holds or sizes a KV cache: one spelling, one default.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "runtime/model/kv_rows.h"

namespace hearth::cli {

inline constexpr const char* kDefaultKvType = "f16";

inline void add_kv_type_option(CLI::App* cmd, std::string& kv) {
  cmd->add_option("--kv-type", kv,
                  "What the KV cache stores: f16 (half of f32's memory), q8_0 (about a quarter; heads of a multiple of "
                  "32 elements) or f32 (exact)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f16", "q8_0"}));
}

// A name add_kv_type_option() accepted.
inline runtime::TensorType kv_type_named(const std::string& name) { return runtime::kv_type_from_name(name).value(); }

}  // namespace hearth::cli
