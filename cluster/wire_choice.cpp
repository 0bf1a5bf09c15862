#include "cluster/wire_choice.h"

#include <stdexcept>

#include "cluster/activation_codec.h"

namespace hearth::cluster {

namespace wire = transport::wire;
using runtime::TensorType;

std::optional<TensorType> apply_wire_choice(wire::WireType choice, int n_embd, partitioner::PartitionOptions& options) {
  if (choice == wire::WireType::AUTO) {
    options.compress_below_bytes_per_s = kAutoCompressBelowBytesPerS;
    options.compressed_bytes_per_elem = static_cast<double>(runtime::row_bytes(TensorType::F16, 1));
    return std::nullopt;
  }
  const TensorType t = choice == wire::WireType::F16   ? TensorType::F16
                       : choice == wire::WireType::Q80 ? TensorType::Q8_0
                                                       : TensorType::F32;
  if (const std::string why = wire_type_unfit(t, static_cast<size_t>(n_embd)); !why.empty()) throw std::invalid_argument(why);
  options.activation_bytes_per_elem = static_cast<double>(runtime::row_bytes(t, 32)) / 32;
  return t;
}

}  // namespace hearth::cluster
