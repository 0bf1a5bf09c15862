// How activations cross a hop between stages: f32 (bit-exact, the default), f16 (half the
// bytes) or q8_0 (34 bytes per 32 values). The type is chosen per launch and per hop (a slow
// Wi-Fi link gains most); every message names its own type, so a receiver reads any of them and
// a sender may fall back to f32 for a batch whose values f16 cannot hold.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "runtime/format/tensor_type.h"
#include "transport/codec.h"

namespace hearth::cluster {

// F32, F16 or Q8_0. Q8_0 needs rows whose width is a multiple of 32.
bool is_wire_type(runtime::TensorType t);
// Why `t` cannot carry rows of `width` values, or "" when it can.
std::string wire_type_unfit(runtime::TensorType t, size_t width);

// Bytes of `rows` rows of `width` values as `t`.
size_t encoded_bytes(runtime::TensorType t, size_t rows, size_t width);
// The rows as `t` into `out` (encoded_bytes() long). Returns false, leaving `out` undefined,
// when `t` is not F32 and a value is not finite or beyond f16's range (f16 values, q8_0
// scales): the caller sends f32 instead.
bool encode_activations(runtime::TensorType t, std::span<const float> rows, size_t width, std::span<uint8_t> out);
// The inverse, into `out` (rows x width floats). Throws std::invalid_argument when `in` is not
// encoded_bytes() long or decodes to a value that is not finite.
void decode_activations(runtime::TensorType t, std::span<const uint8_t> in, size_t width, std::span<float> out);

// The wire enum of a message's payload, and back (nullopt: a type this build does not know).
transport::wire::Forward::DType dtype_to_wire(runtime::TensorType t);
std::optional<runtime::TensorType> dtype_from_wire(transport::wire::Forward::DType d);

}  // namespace hearth::cluster
