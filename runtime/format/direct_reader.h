// Reads byte ranges of a file from storage, around the page cache where the file system allows.
//
// Paged layers (runtime/model/layer_pager.h) are read again every token. Through the page cache
// they would count in a memory cgroup's charge and, once read, come from memory rather than the
// disk, so a budget and a measured read rate would both be wrong. O_DIRECT reads go from the
// device to our buffer; where the file system refuses it (tmpfs, some overlays) the reader falls
// back to ordinary reads and drops each range from the page cache after reading it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace hearth::runtime {

// A buffer whose start is aligned for direct I/O (kDirectAlign); freed when it goes away.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes);
  uint8_t* data() const { return data_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t, Free> data_;
  size_t size_ = 0;
};

constexpr uint64_t kDirectAlign = 4096;

class DirectReader {
 public:
  // Throws std::runtime_error naming the file when it cannot be opened.
  explicit DirectReader(const std::string& path);
  ~DirectReader();
  DirectReader(const DirectReader&) = delete;
  DirectReader& operator=(const DirectReader&) = delete;

  // Bytes of `dst` a read of [offset, offset + size) needs: the range widened to kDirectAlign.
  static uint64_t span_bytes(uint64_t offset, uint64_t size);
  // Reads [offset, offset + size) into dst (kDirectAlign-aligned, span_bytes() long) and returns
  // where the byte at `offset` landed. Throws std::runtime_error when the file is shorter or the
  // read fails, naming the file and the range.
  const uint8_t* read(uint64_t offset, uint64_t size, uint8_t* dst);
  bool direct() const { return direct_fd_ >= 0; }
  // Drops [offset, offset + size) of the file from the page cache where no one maps it.
  void drop_cached(uint64_t offset, uint64_t size) const;  // false: buffered reads, page cache dropped

 private:
  std::string path_;
  int direct_fd_ = -1;    // O_DIRECT, or -1 where the file system refused it
  int buffered_fd_ = -1;  // for the fallback
};

}  // namespace hearth::runtime
