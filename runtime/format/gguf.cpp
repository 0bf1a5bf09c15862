#include "runtime/format/gguf.h"

#include <cstring>
#include <limits>

#include "runtime/format/mapped_file.h"

namespace hearth::runtime {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kMaxTensors = 1u << 16;
constexpr uint64_t kMaxKeys = 1u << 16;
constexpr uint64_t kMaxKeyLength = 65535;
constexpr int kMaxArrayDepth = 8;
constexpr uint32_t kMaxDims = 4;

// Bounds-checked little-endian reader over the file's bytes. Every read names what it was
// reading so that a truncated file says where it ends.
class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size, const std::string& name) : data_(data), size_(size), name_(name) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  [[noreturn]] void fail(const std::string& what) const {
    throw GgufError("GGUF '" + name_ + "': " + what + " (at byte " + std::to_string(pos_) + ")");
  }

  void need(uint64_t n, const char* what) const {
    if (n > remaining())
      fail(std::string("file truncated while reading ") + what + ": needs " + std::to_string(n) + " bytes, " +
           std::to_string(remaining()) + " left");
  }

  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const char* what, uint64_t max_len) {
    const uint64_t len = read<uint64_t>(what);
    if (len > max_len) fail(std::string(what) + " length " + std::to_string(len) + " is absurd");
    need(len, what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), len);
    pos_ += len;
    return s;
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& name_;
};

bool valid_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::FLOAT64); }

uint64_t min_encoded_size(GgufType t) {
  switch (t) {
    case GgufType::UINT8:
    case GgufType::INT8:
    case GgufType::BOOL: return 1;
    case GgufType::UINT16:
    case GgufType::INT16: return 2;
    case GgufType::UINT32:
    case GgufType::INT32:
    case GgufType::FLOAT32: return 4;
    case GgufType::UINT64:
    case GgufType::INT64:
    case GgufType::FLOAT64:
    case GgufType::STRING: return 8;
    case GgufType::ARRAY: return 12;
  }
  return 1;
}

GgufValue read_value(Cursor& c, GgufType type, int depth);

GgufValue read_array(Cursor& c, int depth) {
  if (depth >= kMaxArrayDepth) c.fail("arrays nested deeper than " + std::to_string(kMaxArrayDepth));
  const uint32_t elem = c.read<uint32_t>("array element type");
  if (!valid_value_type(elem)) c.fail("unknown array element type " + std::to_string(elem));
  const uint64_t count = c.read<uint64_t>("array length");
  const GgufType et = static_cast<GgufType>(elem);
  // Each element takes at least min_encoded_size bytes, so a count that cannot fit is rejected
  // before anything is allocated.
  if (count > c.remaining() / min_encoded_size(et))
    c.fail("array length " + std::to_string(count) + " exceeds the bytes left in the file (truncated?)");
  GgufArray arr;
  arr.elem_type = et;
  arr.items.reserve(count);
  for (uint64_t i = 0; i < count; ++i) arr.items.push_back(read_value(c, et, depth + 1));
  return {GgufType::ARRAY, std::move(arr)};
}

GgufValue read_value(Cursor& c, GgufType type, int depth) {
  switch (type) {
    case GgufType::UINT8: return {type, uint64_t{c.read<uint8_t>("uint8 value")}};
    case GgufType::INT8: return {type, int64_t{c.read<int8_t>("int8 value")}};
    case GgufType::UINT16: return {type, uint64_t{c.read<uint16_t>("uint16 value")}};
    case GgufType::INT16: return {type, int64_t{c.read<int16_t>("int16 value")}};
    case GgufType::UINT32: return {type, uint64_t{c.read<uint32_t>("uint32 value")}};
    case GgufType::INT32: return {type, int64_t{c.read<int32_t>("int32 value")}};
    case GgufType::UINT64: return {type, c.read<uint64_t>("uint64 value")};
    case GgufType::INT64: return {type, c.read<int64_t>("int64 value")};
    case GgufType::FLOAT32: return {type, double{c.read<float>("float32 value")}};
    case GgufType::FLOAT64: return {type, c.read<double>("float64 value")};
    case GgufType::BOOL: {
      const uint8_t b = c.read<uint8_t>("bool value");
      if (b > 1) c.fail("bool value " + std::to_string(b) + " is neither 0 nor 1");
      return {type, b != 0};
    }
    case GgufType::STRING: return {type, c.read_string("string value", c.remaining())};
    case GgufType::ARRAY: return read_array(c, depth);
  }
  c.fail("unknown value type");
}

GgufTensorInfo read_tensor_info(Cursor& c) {
  GgufTensorInfo t;
  t.name = c.read_string("tensor name", kMaxKeyLength);
  const uint32_t n_dims = c.read<uint32_t>("tensor dimension count");
  if (n_dims == 0 || n_dims > kMaxDims)
    c.fail("tensor '" + t.name + "' has " + std::to_string(n_dims) + " dimensions (1..4 allowed)");
  uint64_t n = 1;
  for (uint32_t i = 0; i < n_dims; ++i) {
    const uint64_t d = c.read<uint64_t>("tensor dimension");
    if (d == 0 || d > (uint64_t{1} << 40) || n > (uint64_t{1} << 48) / d)
      c.fail("tensor '" + t.name + "' has an absurd dimension " + std::to_string(d));
    n *= d;
    t.shape.push_back(d);
  }
  const uint32_t type = c.read<uint32_t>("tensor type");
  const auto info = tensor_type_info(type);
  if (!info) c.fail("tensor '" + t.name + "' has unknown type " + std::to_string(type));
  t.type = static_cast<TensorType>(type);
  if (t.shape[0] % info->block_elems != 0)
    c.fail("tensor '" + t.name + "' row of " + std::to_string(t.shape[0]) + " elements is not a multiple of the " +
           std::string(info->name) + " block size " + std::to_string(info->block_elems));
  t.n_bytes = n / info->block_elems * info->block_bytes;
  t.offset = c.read<uint64_t>("tensor data offset");
  return t;
}

}  // namespace

const char* gguf_type_name(GgufType t) {
  static constexpr const char* names[] = {"uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
                                          "bool",  "string", "array",  "uint64", "int64",  "float64"};
  const auto i = static_cast<uint32_t>(t);
  return i < std::size(names) ? names[i] : "unknown";
}

uint64_t GgufTensorInfo::n_elements() const {
  uint64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

uint64_t GgufTensorInfo::rows() const { return n_elements() / shape[0]; }

GgufFile GgufFile::open(const std::string& path) {
  const uint64_t size = runtime::file_size(path);
  MappedRegion whole(path, 0, size);
  GgufFile f = parse(whole.data(), size, path);
  return f;  // the mapping is released here; tensor data is mapped range by range later
}

GgufFile GgufFile::parse(const uint8_t* data, uint64_t size, const std::string& name) {
  GgufFile f;
  f.path_ = name;
  f.file_size_ = size;
  Cursor c(data, size, name);

  if (size < 4 || c.read<uint32_t>("magic") != kMagic)
    throw GgufError("'" + name + "' is not a GGUF file (wrong magic; expected \"GGUF\")");
  f.version_ = c.read<uint32_t>("version");
  if (f.version_ != 2 && f.version_ != 3)
    c.fail("unsupported GGUF version " + std::to_string(f.version_) + " (2 and 3 are supported)");
  const uint64_t n_tensors = c.read<uint64_t>("tensor count");
  const uint64_t n_kv = c.read<uint64_t>("metadata count");
  if (n_tensors > kMaxTensors) c.fail("absurd tensor count " + std::to_string(n_tensors));
  if (n_kv > kMaxKeys) c.fail("absurd metadata count " + std::to_string(n_kv));

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.read_string("metadata key", kMaxKeyLength);
    const uint32_t type = c.read<uint32_t>("metadata value type");
    if (!valid_value_type(type)) c.fail("key '" + key + "' has unknown value type " + std::to_string(type));
    if (f.metadata_.has(key)) c.fail("duplicate metadata key '" + key + "'");
    f.metadata_.set(key, read_value(c, static_cast<GgufType>(type), 0));
  }

  if (const GgufValue* a = f.metadata_.find("general.alignment")) {
    const auto* v = std::get_if<uint64_t>(&a->value);
    if (a->type != GgufType::UINT32 || v == nullptr || *v == 0 || (*v & (*v - 1)) != 0 || *v > 65536)
      c.fail("general.alignment must be a uint32 power of two");
    f.alignment_ = *v;
  }

  f.tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t = read_tensor_info(c);
    if (f.by_name_.count(t.name)) c.fail("duplicate tensor '" + t.name + "'");
    f.by_name_[t.name] = f.tensors_.size();
    f.tensors_.push_back(std::move(t));
  }

  f.data_offset_ = (c.pos() + f.alignment_ - 1) / f.alignment_ * f.alignment_;
  for (auto& t : f.tensors_) {
    if (t.offset % f.alignment_ != 0)
      throw GgufError("GGUF '" + name + "': tensor '" + t.name + "' data offset " + std::to_string(t.offset) +
                      " is not aligned to " + std::to_string(f.alignment_));
    const uint64_t room = size >= f.data_offset_ ? size - f.data_offset_ : 0;
    if (t.offset > room || t.n_bytes > room - t.offset)
      throw GgufError("GGUF '" + name + "': tensor '" + t.name + "' data [" + std::to_string(t.offset) + ", +" +
                      std::to_string(t.n_bytes) + ") lies outside the file (truncated?)");
    t.offset += f.data_offset_;
  }
  return f;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensorInfo& GgufFile::require_tensor(const std::string& name) const {
  const GgufTensorInfo* t = find_tensor(name);
  if (t == nullptr) throw GgufError("GGUF '" + path_ + "': required tensor '" + name + "' is missing");
  return *t;
}

// ---- metadata access ----

const GgufValue* GgufMetadata::find(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

const GgufValue& GgufMetadata::require(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) throw GgufError("required metadata key '" + key + "' is missing");
  return *v;
}

namespace {

[[noreturn]] void wrong_type(const std::string& key, const GgufValue& v, const char* wanted) {
  throw GgufError("metadata key '" + key + "' is a " + gguf_type_name(v.type) + ", expected " + wanted);
}

std::optional<uint64_t> as_uint(const GgufValue& v) {
  if (auto* u = std::get_if<uint64_t>(&v.value)) return *u;
  if (auto* i = std::get_if<int64_t>(&v.value); i && *i >= 0) return static_cast<uint64_t>(*i);
  return std::nullopt;
}

std::optional<double> as_float(const GgufValue& v) {
  if (auto* d = std::get_if<double>(&v.value)) return *d;
  if (auto* u = std::get_if<uint64_t>(&v.value)) return static_cast<double>(*u);
  if (auto* i = std::get_if<int64_t>(&v.value)) return static_cast<double>(*i);
  return std::nullopt;
}

const GgufArray& as_array(const std::string& key, const GgufValue& v) {
  auto* a = std::get_if<GgufArray>(&v.value);
  if (a == nullptr) wrong_type(key, v, "array");
  return *a;
}

}  // namespace

uint64_t GgufMetadata::get_uint(const std::string& key) const {
  const GgufValue& v = require(key);
  auto u = as_uint(v);
  if (!u) wrong_type(key, v, "non-negative integer");
  return *u;
}

std::optional<uint64_t> GgufMetadata::get_uint_opt(const std::string& key) const {
  return has(key) ? std::optional(get_uint(key)) : std::nullopt;
}

double GgufMetadata::get_float(const std::string& key) const {
  const GgufValue& v = require(key);
  auto d = as_float(v);
  if (!d) wrong_type(key, v, "number");
  return *d;
}

std::optional<double> GgufMetadata::get_float_opt(const std::string& key) const {
  return has(key) ? std::optional(get_float(key)) : std::nullopt;
}

bool GgufMetadata::get_bool_or(const std::string& key, bool fallback) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return fallback;
  if (auto* b = std::get_if<bool>(&v->value)) return *b;
  wrong_type(key, *v, "bool");
}

std::string GgufMetadata::get_string(const std::string& key) const {
  const GgufValue& v = require(key);
  auto* s = std::get_if<std::string>(&v.value);
  if (s == nullptr) wrong_type(key, v, "string");
  return *s;
}

std::optional<std::string> GgufMetadata::get_string_opt(const std::string& key) const {
  return has(key) ? std::optional(get_string(key)) : std::nullopt;
}

std::vector<std::string> GgufMetadata::get_string_array(const std::string& key) const {
  const GgufArray& a = as_array(key, require(key));
  if (a.elem_type != GgufType::STRING) throw GgufError("metadata key '" + key + "' is not an array of strings");
  std::vector<std::string> out;
  out.reserve(a.items.size());
  for (const auto& it : a.items) out.push_back(std::get<std::string>(it.value));
  return out;
}

std::vector<float> GgufMetadata::get_float_array(const std::string& key) const {
  const GgufArray& a = as_array(key, require(key));
  std::vector<float> out;
  out.reserve(a.items.size());
  for (const auto& it : a.items) {
    auto d = as_float(it);
    if (!d) throw GgufError("metadata key '" + key + "' is not an array of numbers");
    out.push_back(static_cast<float>(*d));
  }
  return out;
}

std::vector<int64_t> GgufMetadata::get_int_array(const std::string& key) const {
  const GgufArray& a = as_array(key, require(key));
  std::vector<int64_t> out;
  out.reserve(a.items.size());
  for (const auto& it : a.items) {
    if (auto* i = std::get_if<int64_t>(&it.value)) out.push_back(*i);
    else if (auto* u = std::get_if<uint64_t>(&it.value); u && *u <= uint64_t(std::numeric_limits<int64_t>::max()))
      out.push_back(static_cast<int64_t>(*u));
    else throw GgufError("metadata key '" + key + "' is not an array of integers");
  }
  return out;
}

}  // namespace hearth::runtime
