#include "runtime/format/gguf_writer.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <utility>

namespace hearth::runtime {

namespace {

// Serialises the header into memory: it is small, and the same bytes are what the head streams
// to a device as the start of its stage file.
class Out {
 public:
  void bytes(const void* p, size_t n) {
    const size_t at = buf_.size();
    buf_.resize(at + n);
    if (n) std::memcpy(buf_.data() + at, p, n);
  }
  template <typename T>
  void pod(T v) {
    bytes(&v, sizeof v);
  }
  void str(const std::string& s) {
    pod<uint64_t>(s.size());
    bytes(s.data(), s.size());
  }
  void pad_to(uint64_t alignment) {
    while (buf_.size() % alignment) buf_.push_back(0);
  }
  std::vector<uint8_t> take() { return std::move(buf_); }

 private:
  std::vector<uint8_t> buf_;
};

class File {
 public:
  explicit File(const std::string& path) : path_(path), f_(std::fopen(path.c_str(), "wb")) {
    if (!f_) throw std::runtime_error("cannot create '" + path + "': " + std::strerror(errno));
  }
  ~File() {
    if (f_) std::fclose(f_);
  }
  void write(const void* p, size_t n) {
    if (n && std::fwrite(p, 1, n, f_) != n) throw std::runtime_error("write to '" + path_ + "' failed: " + std::strerror(errno));
  }
  void close() {
    if (std::fclose(std::exchange(f_, nullptr)) != 0)
      throw std::runtime_error("closing '" + path_ + "' failed: " + std::strerror(errno));
  }

 private:
  std::string path_;
  std::FILE* f_;
};

void write_value(Out& o, const GgufValue& v) {
  switch (v.type) {
    case GgufType::UINT8: o.pod<uint8_t>(static_cast<uint8_t>(std::get<uint64_t>(v.value))); break;
    case GgufType::INT8: o.pod<int8_t>(static_cast<int8_t>(std::get<int64_t>(v.value))); break;
    case GgufType::UINT16: o.pod<uint16_t>(static_cast<uint16_t>(std::get<uint64_t>(v.value))); break;
    case GgufType::INT16: o.pod<int16_t>(static_cast<int16_t>(std::get<int64_t>(v.value))); break;
    case GgufType::UINT32: o.pod<uint32_t>(static_cast<uint32_t>(std::get<uint64_t>(v.value))); break;
    case GgufType::INT32: o.pod<int32_t>(static_cast<int32_t>(std::get<int64_t>(v.value))); break;
    case GgufType::UINT64: o.pod<uint64_t>(std::get<uint64_t>(v.value)); break;
    case GgufType::INT64: o.pod<int64_t>(std::get<int64_t>(v.value)); break;
    case GgufType::FLOAT32: o.pod<float>(static_cast<float>(std::get<double>(v.value))); break;
    case GgufType::FLOAT64: o.pod<double>(std::get<double>(v.value)); break;
    case GgufType::BOOL: o.pod<uint8_t>(std::get<bool>(v.value) ? 1 : 0); break;
    case GgufType::STRING: o.str(std::get<std::string>(v.value)); break;
    case GgufType::ARRAY: {
      const auto& a = std::get<GgufArray>(v.value);
      o.pod<uint32_t>(static_cast<uint32_t>(a.elem_type));
      o.pod<uint64_t>(a.items.size());
      for (const auto& it : a.items) {
        if (it.type != a.elem_type) throw std::logic_error("GGUF array with mixed element types");
        write_value(o, it);
      }
      break;
    }
  }
}

}  // namespace

void GgufWriter::add_tensor(const std::string& name, TensorType type, std::vector<uint64_t> shape) {
  const auto info = tensor_type_info(static_cast<uint32_t>(type));
  if (!info || shape.empty() || shape.size() > 4 || shape[0] % info->block_elems != 0)
    throw std::invalid_argument("tensor '" + name + "': shape does not fit its type");
  GgufTensorInfo t;
  t.name = name;
  t.type = type;
  t.shape = std::move(shape);
  t.n_bytes = t.n_elements() / info->block_elems * info->block_bytes;
  uint64_t offset = 0;
  if (!tensors_.empty()) {
    const auto& last = tensors_.back();
    offset = (last.offset + last.n_bytes + alignment_ - 1) / alignment_ * alignment_;
  }
  t.offset = offset;
  tensors_.push_back(std::move(t));
}

std::vector<uint8_t> GgufWriter::header() const {
  Out o;
  o.pod<uint32_t>(0x46554747);
  o.pod<uint32_t>(3);
  o.pod<uint64_t>(tensors_.size());
  const bool explicit_alignment = alignment_ != 32 && !metadata_.has("general.alignment");
  o.pod<uint64_t>(metadata_.all().size() + (explicit_alignment ? 1 : 0));
  if (explicit_alignment) {
    o.str("general.alignment");
    o.pod<uint32_t>(static_cast<uint32_t>(GgufType::UINT32));
    o.pod<uint32_t>(alignment_);
  }
  for (const auto& [key, value] : metadata_.all()) {
    o.str(key);
    o.pod<uint32_t>(static_cast<uint32_t>(value.type));
    write_value(o, value);
  }
  for (const auto& t : tensors_) {
    o.str(t.name);
    o.pod<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (auto d : t.shape) o.pod<uint64_t>(d);
    o.pod<uint32_t>(static_cast<uint32_t>(t.type));
    o.pod<uint64_t>(t.offset);
  }
  o.pad_to(alignment_);
  return o.take();
}

uint64_t GgufWriter::data_bytes() const { return tensors_.empty() ? 0 : tensors_.back().offset + tensors_.back().n_bytes; }

void GgufWriter::write(const std::string& path, const FillFn& fill) const {
  const std::string tmp = path + ".partial";
  {
    File f(tmp);
    const std::vector<uint8_t> head = header();
    f.write(head.data(), head.size());
    uint64_t pos = 0;  // within the data section
    std::vector<uint8_t> buf;
    static const uint8_t zeros[64] = {};
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const auto& t = tensors_[i];
      while (pos < t.offset) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(t.offset - pos, sizeof zeros));
        f.write(zeros, n);
        pos += n;
      }
      try {
        buf.assign(t.n_bytes, 0);
      } catch (const std::bad_alloc&) {  // said with the tensor's name and size, not as "std::bad_alloc"
        throw std::runtime_error("tensor '" + t.name + "' (" + std::to_string(t.n_bytes / 1000000) +
                                 " MB) does not fit in this machine's memory to be written");
      }
      fill(i, std::span<uint8_t>(buf));
      f.write(buf.data(), buf.size());
      pos += t.n_bytes;
    }
    f.close();
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw std::runtime_error("cannot rename '" + tmp + "' to '" + path + "': " + std::strerror(errno));
}

}  // namespace hearth::runtime
