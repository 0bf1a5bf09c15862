// A launch's choice of how hops carry activations (`--wire-type f32|f16|q8_0|auto`): the
// planner's bytes per hop, and the type every hop then uses. `auto` compresses (f16) the hops over
// links below Gigabit Ethernet, measured or assumed: there a prefill chunk's f32 activations cost
// milliseconds, and f16 halves them for a logit difference of a few 1e-3 (the note on issue 16).
#pragma once

#include <optional>

#include "partitioner/options.h"
#include "runtime/format/tensor_type.h"
#include "transport/codec.h"

namespace hearth::cluster {

inline constexpr double kAutoCompressBelowBytesPerS = 1e9 / 8;

// Sets the planner's bytes per hop for `choice` and returns the type of every hop, or nullopt
// for auto (then each plan's StageAssignment::compressed_hop says, see hop_wire_type()). Throws
// std::invalid_argument when a model of `n_embd` values per token cannot use it.
std::optional<runtime::TensorType> apply_wire_choice(transport::wire::WireType choice, int n_embd,
                                                     partitioner::PartitionOptions& options);

// The type of a stage's output hop: the launch's, or under auto what the plan chose for it.
inline runtime::TensorType hop_wire_type(const std::optional<runtime::TensorType>& fixed, bool compressed_hop) {
  return fixed.value_or(compressed_hop ? runtime::TensorType::F16 : runtime::TensorType::F32);
}

}  // namespace hearth::cluster
