#include "cluster/activation_codec.h"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "runtime/kernels/kernels.h"

namespace hearth::cluster {

namespace wire = transport::wire;
using runtime::TensorType;

namespace {

constexpr float kF16Max = 65504.0f;

bool all_finite(std::span<const float> v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

}  // namespace

bool is_wire_type(TensorType t) { return t == TensorType::F32 || t == TensorType::F16 || t == TensorType::Q8_0; }

std::string wire_type_unfit(TensorType t, size_t width) {
  if (!is_wire_type(t)) return "a hop carries f32, f16 or q8_0, not " + std::string(runtime::tensor_type_name(t));
  if (t == TensorType::Q8_0 && width % 32 != 0)
    return "q8_0 on the wire needs a hidden size that is a multiple of 32 (this model's is " + std::to_string(width) +
           "): use f16";
  return "";
}

size_t encoded_bytes(TensorType t, size_t rows, size_t width) { return rows * runtime::row_bytes(t, width); }

bool encode_activations(TensorType t, std::span<const float> rows, size_t width, std::span<uint8_t> out) {
  const size_t n_rows = width == 0 ? 0 : rows.size() / width;
  if (rows.size() != n_rows * width || out.size() != encoded_bytes(t, n_rows, width))
    throw std::logic_error("encode_activations: sizes do not match");
  // Beyond f16's range, or not finite (which the receiver refuses, loudly, as f32).
  if (t != TensorType::F32)
    for (float x : rows)
      if (!(std::fabs(x) <= kF16Max)) return false;
  const size_t row_out = runtime::row_bytes(t, width);
  for (size_t r = 0; r < n_rows; ++r)
    runtime::quantize_row(t, rows.data() + r * width, out.data() + r * row_out, static_cast<int64_t>(width));
  return true;
}

void decode_activations(TensorType t, std::span<const uint8_t> in, size_t width, std::span<float> out) {
  const size_t n_rows = width == 0 ? 0 : out.size() / width;
  if (!wire_type_unfit(t, width).empty()) throw std::invalid_argument("activations of a type this hop cannot carry");
  if (in.size() != encoded_bytes(t, n_rows, width)) throw std::invalid_argument("forward payload of the wrong size");
  if (t == TensorType::F32) {
    std::memcpy(out.data(), in.data(), in.size());  // one copy, as before there were other types
  } else {
    // Rows are read from a copy: ZeroMQ frames may be misaligned, and f16 values and q8_0 scales
    // are read as 16-bit words.
    const size_t row_in = runtime::row_bytes(t, width);
    std::vector<uint8_t> row(row_in);
    for (size_t r = 0; r < n_rows; ++r) {
      std::memcpy(row.data(), in.data() + r * row_in, row_in);
      runtime::dequantize_row(t, row.data(), out.data() + r * width, static_cast<int64_t>(width));
    }
  }
  if (!all_finite(out)) throw std::invalid_argument("forward payload holds NaN or infinity");
}

wire::Forward::DType dtype_to_wire(TensorType t) {
  switch (t) {
    case TensorType::F32: return wire::Forward::DType::F32;
    case TensorType::F16: return wire::Forward::DType::F16;
    case TensorType::Q8_0: return wire::Forward::DType::Q80;
    default: throw std::logic_error("not a wire type: " + std::string(runtime::tensor_type_name(t)));
  }
}

std::optional<TensorType> dtype_from_wire(wire::Forward::DType d) {
  switch (d) {
    case wire::Forward::DType::F32: return TensorType::F32;
    case wire::Forward::DType::F16: return TensorType::F16;
    case wire::Forward::DType::Q80: return TensorType::Q8_0;
  }
  return std::nullopt;
}

}  // namespace hearth::cluster
