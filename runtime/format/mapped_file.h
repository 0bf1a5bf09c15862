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

  // The bytes of [offset, offset + size) (file offsets inside the region), writable by this
  // process alone: the mapping is private, so a write copies its page and the file never
  // changes. The copies are the process's own memory from then on: DontNeed would drop them and
  // map the file's bytes again. Throws std::runtime_error when the kernel refuses.
  uint8_t* writable(uint64_t offset, uint64_t size);
  // Makes the copies of writable pages of [offset, offset + size) now, in one call rather than a
  // fault per page at the first write (Linux 5.14+; best effort: older kernels fault). Threads
  // may populate parts of a range at once.
  void populate(uint64_t offset, uint64_t size) const;
  // Those pages read-only again (their copies stay).
  void read_only(uint64_t offset, uint64_t size);

 private:
  void release();
  // The page-aligned span of the mapping that holds [offset, offset + size).
  std::pair<uint8_t*, size_t> pages(uint64_t offset, uint64_t size) const;
  uint8_t* base_ = nullptr;  // page-aligned start of the mapping
  uint64_t lead_ = 0;        // bytes between base_ and the requested offset
  uint64_t offset_ = 0;      // file offset of data()
  uint64_t size_ = 0;        // bytes usable from data()
};

uint64_t file_size(const std::string& path);

// Lets the page cache drop its copy of [offset, offset + size) of the file (pages another mapping
// still uses stay): for bytes a process has made its own copy of (MappedRegion::writable), so that
// the original does not sit beside the copy. Best effort: an error is ignored.
void drop_cached_pages(const std::string& path, uint64_t offset, uint64_t size);

}  // namespace hearth::runtime
