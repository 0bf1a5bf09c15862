// The --wire-type option of the commands that plan or launch a split: how activations cross the
// hops between devices (cluster/wire_choice.h). One spelling, one default.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "cluster/wire_convert.h"

namespace hearth::cli {

inline void add_wire_type_option(CLI::App* cmd, std::string& wire) {
  cmd->add_option("--wire-type", wire,
                  "How activations cross the hops between devices: f32 (exact: what one device computes), f16 (half "
                  "the bytes), q8_0 (27%), or auto (f16 on links slower than 1 Gbit/s)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f16", "q8_0", "auto"}));
}

// A name add_wire_type_option() accepted.
inline transport::wire::WireType wire_type_named(const std::string& name) { return cluster::wire_choice_from_name(name).value(); }

}  // namespace hearth::cli
