// Memory on 2 MiB pages, where the kernel gives them (transparent huge pages: Linux's "madvise"
// mode, Debian's default, gives them to mappings that ask; "never" to none).
//
// Decode streams every weight once per token. On 4 KiB pages each page is a TLB miss and the
// hardware prefetchers stop at its end: weights mapped from the file or copied to ordinary memory
// streamed at 36-41 GB/s where the same loop over 2 MiB pages read 55-63 on the same machine
// at the same moments (docs/performance.md, session 36). Attention's KV cache, read in short
// strided pieces, lost 6% to the same misses.
#pragma once

#include <cstddef>
#include <cstdint>

namespace hearth::runtime {

inline constexpr std::size_t kHugePage = std::size_t{2} << 20;

// Whether this kernel gives 2 MiB pages to mappings that ask (transparent huge pages "always"
// or "madvise"); false where it cannot be known.
bool huge_pages_available();

// `bytes` rounded up to whole huge pages, mapped anonymous, read-write, starting on a 2 MiB
// boundary, advised to be backed by huge pages (advice only: refused, small pages work). Not
// touched: its pages are made at the first write. Throws std::bad_alloc when mmap fails.
void* map_huge_pages(std::size_t bytes);
// What map_huge_pages(bytes) returned.
void unmap_huge_pages(void* p, std::size_t bytes) noexcept;

// Bytes of [p, p + bytes) the kernel backs with huge pages now (AnonHugePages of the mappings
// that hold it, /proc/self/smaps); 0 where that cannot be read.
uint64_t huge_page_bytes(const void* p, std::size_t bytes);

// An uninitialised buffer on huge pages (map_huge_pages), owned: the weights a stage holds in
// its own memory, the bandwidth probe's buffer.
class HugePageBuffer {
 public:
  HugePageBuffer() = default;
  explicit HugePageBuffer(std::size_t bytes) : data_(static_cast<uint8_t*>(map_huge_pages(bytes))), size_(bytes) {}
  ~HugePageBuffer() { release(); }
  HugePageBuffer(HugePageBuffer&& o) noexcept : data_(o.data_), size_(o.size_) { o.data_ = nullptr, o.size_ = 0; }
  HugePageBuffer& operator=(HugePageBuffer&& o) noexcept;
  HugePageBuffer(const HugePageBuffer&) = delete;
  HugePageBuffer& operator=(const HugePageBuffer&) = delete;

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // Asks the kernel to put what has small pages on huge ones now (MADV_COLLAPSE, Linux 6.1+;
  // best effort: memory too fragmented leaves them).
  void collapse();
  // Read-only from now on (a stray write faults instead of changing weights). The whole mapping
  // at once: protecting part of a huge page would split it into small ones. The kernel no longer
  // collapses small pages of a read-only mapping into huge ones, so seal what is on huge pages.
  void seal();
  uint64_t huge_bytes() const { return data_ ? huge_page_bytes(data_, size_) : 0; }

 private:
  void release() noexcept;
  uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace hearth::runtime
