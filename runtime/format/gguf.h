// GGUF reader: header, metadata, tensor directory. Validates everything it reads.
//
//   GgufFile f = GgufFile::open("model.gguf");      // throws GgufError on malformed input
//   uint32_t n = f.metadata().get_u32("llama.block_count");
//   const GgufTensorInfo* t = f.find_tensor("blk.0.attn_q.weight");
//
// The file is mapped only while the directory is parsed; tensor data is mapped later, range by
// range (see weights.h), so opening a 30 GB model touches only its header pages.
// Spec: github.com/ggml-org/ggml/blob/master/docs/gguf.md (versions 2 and 3 are read).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "runtime/format/tensor_type.h"

namespace hearth::runtime {

// A malformed or unsupported file. The message names the file and what is wrong.
class GgufError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class GgufType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};
const char* gguf_type_name(GgufType t);

struct GgufValue;
struct GgufArray {
  GgufType elem_type = GgufType::UINT8;
  std::vector<GgufValue> items;
};

// One metadata value. Integers keep their signedness; the GGUF type is kept so a writer can
// reproduce the file exactly.
struct GgufValue {
  GgufType type = GgufType::UINT8;
  std::variant<uint64_t, int64_t, double, bool, std::string, GgufArray> value;

  static GgufValue u32(uint32_t v) { return {GgufType::UINT32, uint64_t{v}}; }
  static GgufValue i32(int32_t v) { return {GgufType::INT32, int64_t{v}}; }
  static GgufValue u64(uint64_t v) { return {GgufType::UINT64, v}; }
  static GgufValue f32(float v) { return {GgufType::FLOAT32, double{v}}; }
  static GgufValue boolean(bool v) { return {GgufType::BOOL, v}; }
  static GgufValue str(std::string v) { return {GgufType::STRING, std::move(v)}; }
  static GgufValue array(GgufType elem, std::vector<GgufValue> items) {
    return {GgufType::ARRAY, GgufArray{elem, std::move(items)}};
  }
};

// Typed access to the key/value section; every getter throws GgufError naming the key when it
// is missing or of an incompatible type.
class GgufMetadata {
 public:
  void set(const std::string& key, GgufValue value) { kv_[key] = std::move(value); }
  bool has(const std::string& key) const { return kv_.count(key) != 0; }
  const GgufValue* find(const std::string& key) const;
  const std::map<std::string, GgufValue>& all() const { return kv_; }

  uint64_t get_uint(const std::string& key) const;
  std::optional<uint64_t> get_uint_opt(const std::string& key) const;
  double get_float(const std::string& key) const;
  std::optional<double> get_float_opt(const std::string& key) const;
  bool get_bool_or(const std::string& key, bool fallback) const;
  std::string get_string(const std::string& key) const;
  std::optional<std::string> get_string_opt(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<float> get_float_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;

 private:
  const GgufValue& require(const std::string& key) const;
  std::map<std::string, GgufValue> kv_;
};

struct GgufTensorInfo {
  std::string name;
  TensorType type = TensorType::F32;
  std::vector<uint64_t> shape;  // ne[0] first: ne[0] is the contiguous (row) dimension
  uint64_t offset = 0;          // bytes, from the start of the file (not of the data section)
  uint64_t n_bytes = 0;

  uint64_t n_elements() const;
  uint64_t rows() const;  // product of ne[1..]
};

class GgufFile {
 public:
  // Parses and validates the header and tensor directory. Throws GgufError.
  static GgufFile open(const std::string& path);
  // Same, from bytes in memory (used by tests and fuzzers); `name` appears in messages.
  static GgufFile parse(const uint8_t* data, uint64_t size, const std::string& name);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return file_size_; }
  const GgufMetadata& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;
  const GgufTensorInfo& require_tensor(const std::string& name) const;

 private:
  std::string path_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  uint64_t file_size_ = 0;
  GgufMetadata metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> by_name_;
};

}  // namespace hearth::runtime
