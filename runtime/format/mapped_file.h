// Read-only memory mappings of a file, whole or by byte range.
//
// A pipeline stage maps only the byte ranges of its own tensors, so the pages of other layers
// are never faulted in (they do not count in the process's resident memory).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace hearth::runtime {

// RAII owner of one read-only mmap of [offset, offset + size) of a file.
class MappedRegion {
 public:
  MappedRegion() = default;
  // Throws std::runtime_error naming the file when it cannot be opened or mapped.
  MappedRegion(const std::string& path, uint64_t offset, uint64_t size);
  ~MappedRegion();
  MappedRegion(MappedRegion&& other) noexcept;
  MappedRegion& operator=(MappedRegion&& other) noexcept;
  MappedRegion(const MappedRegion&) = delete;
  MappedRegion& operator=(const MappedRegion&) = delete;

  // Pointer to the byte at file offset `offset` given to the constructor.
  const uint8_t* data() const { return base_ + lead_; }
  uint64_t size() const { return size_; }
  uint64_t offset() const { return offset_; }

  // How the mapping will be read, for the kernel's readahead (madvise). Random: a fault reads
  // only its page, not the megabytes around it (read_ahead_kb, often 128 KB to 8 MB); Normal:
  // back to that; WillNeed: read [offset, offset + size) of the file (clipped to the region)
  // into memory now; DontNeed: unmap its pages (widened to whole pages), so that they can leave
  // the page cache (a later read maps them again from the file). Advice the kernel refuses is
  // ignored.
  enum class Advice { Normal, Random, WillNeed, DontNeed };
  void advise(Advice advice, uint64_t offset, uint64_t size) const;

 private:
  void release();
  uint8_t* base_ = nullptr;  // page-aligned start of the mapping
  uint64_t lead_ = 0;        // bytes between base_ and the requested offset
  uint64_t offset_ = 0;      // file offset of data()
  uint64_t size_ = 0;        // bytes usable from data()
};

uint64_t file_size(const std::string& path);

// Lets the page cache drop its copy of [offset, offset + size) of the file (pages another mapping
// still uses stay): for bytes a process has made its own copy of (StageWeights::hold_in_memory),
// so that the original does not sit beside the copy. Best effort: an error is ignored.
void drop_cached_pages(const std::string& path, uint64_t offset, uint64_t size);

}  // namespace hearth::runtime
