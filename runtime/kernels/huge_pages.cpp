#include "runtime/kernels/huge_pages.h"

#include <sys/mman.h>
#include <sys/prctl.h>

#include <cstdio>
#include <fstream>
#include <new>
#include <string>
#include <utility>

namespace hearth::runtime {

namespace {

std::size_t whole_pages(std::size_t bytes) { return (bytes + kHugePage - 1) / kHugePage * kHugePage; }

}  // namespace

bool huge_pages_available() {
#ifdef PR_GET_THP_DISABLE
  if (::prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1) return false;  // this process's own switch (systemd, containers)
#endif
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  if (!std::getline(f, line)) return false;
  return line.find("[always]") != std::string::npos || line.find("[madvise]") != std::string::npos;
}

void* map_huge_pages(std::size_t bytes) {
  // One huge page more than needed, then the ends trimmed so that the buffer starts on one.
  const std::size_t len = whole_pages(bytes);
  void* p = ::mmap(nullptr, len + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  const auto start = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t aligned = (start + kHugePage - 1) & ~(kHugePage - 1);
  if (aligned > start) ::munmap(p, aligned - start);
  if (const std::size_t tail = start + len + kHugePage - (aligned + len); tail > 0)
    ::munmap(reinterpret_cast<void*>(aligned + len), tail);
#ifdef MADV_HUGEPAGE
  ::madvise(reinterpret_cast<void*>(aligned), len, MADV_HUGEPAGE);
#endif
  return reinterpret_cast<void*>(aligned);
}

void unmap_huge_pages(void* p, std::size_t bytes) noexcept {
  if (p != nullptr) ::munmap(p, whole_pages(bytes));
}

uint64_t huge_page_bytes(const void* p, std::size_t bytes) {
  // smaps lists each mapping as "start-end perms ..." followed by its fields; the mappings that
  // overlap [p, p + bytes) are summed whole, so the figure is an upper bound (a neighbouring
  // anonymous region with the same flags may have merged with the buffer's).
  const auto begin = reinterpret_cast<std::uintptr_t>(p), end = begin + bytes;
  std::ifstream f("/proc/self/smaps");
  std::string line;
  bool inside = false;
  uint64_t total = 0;
  while (std::getline(f, line)) {
    unsigned long lo = 0, hi = 0;
    if (const auto dash = line.find('-');
        dash != std::string::npos && line.find(' ') > dash && std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) == 2) {
      inside = lo < end && hi > begin;
      continue;
    }
    unsigned long kb = 0;
    if (inside && std::sscanf(line.c_str(), "AnonHugePages: %lu kB", &kb) == 1) total += static_cast<uint64_t>(kb) * 1024;
  }
  return total;
}

HugePageBuffer& HugePageBuffer::operator=(HugePageBuffer&& o) noexcept {
  if (this != &o) {
    release();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

void HugePageBuffer::collapse() {
#ifdef MADV_COLLAPSE
  if (data_ != nullptr) ::madvise(data_, whole_pages(size_), MADV_COLLAPSE);
#endif
}

void HugePageBuffer::seal() {
  if (data_ != nullptr) ::mprotect(data_, whole_pages(size_), PROT_READ);
}

void HugePageBuffer::release() noexcept {
  unmap_huge_pages(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace hearth::runtime
