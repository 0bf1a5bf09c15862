// GGUF v3 writer: metadata, tensor directory, aligned tensor data.
//
//   GgufWriter w;
//   w.metadata().set("general.architecture", GgufValue::str("llama"));
//   w.add_tensor("token_embd.weight", TensorType::F32, {64, 512});
//   w.write("out.gguf", [&](size_t i, std::span<uint8_t> out) { ...fill tensor i... });
//
// Tensor bytes are produced on demand by the callback, one tensor at a time, so a multi-GB model
// is written without holding it in memory.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "runtime/format/gguf.h"

namespace hearth::runtime {

class GgufWriter {
 public:
  using FillFn = std::function<void(size_t tensor_index, std::span<uint8_t> out)>;

  explicit GgufWriter(uint32_t alignment = 32) : alignment_(alignment) {}

  GgufMetadata& metadata() { return metadata_; }
  // REQUIRES: shape[0] is a multiple of the type's block size.
  void add_tensor(const std::string& name, TensorType type, std::vector<uint64_t> shape);
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }

  // The bytes before the data section: magic, version, metadata, tensor directory, padding.
  std::vector<uint8_t> header() const;
  // Bytes of the data section (tensor offsets are relative to its start).
  uint64_t data_bytes() const;

  // Writes the file (to a temporary name, renamed when complete, so a crash never leaves a
  // half-written file under the final name). Throws std::runtime_error on I/O failure.
  void write(const std::string& path, const FillFn& fill) const;

 private:
  uint32_t alignment_;
  GgufMetadata metadata_;
  std::vector<GgufTensorInfo> tensors_;  // offsets relative to the data section
};

}  // namespace hearth::runtime
