#include "runtime/format/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace hearth::runtime {

namespace {

struct Fd {
  int fd;
  explicit Fd(const std::string& path) : fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd < 0) throw std::runtime_error("cannot open '" + path + "': " + std::strerror(errno));
  }
  ~Fd() { ::close(fd); }
};

}  // namespace

uint64_t file_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error("cannot stat '" + path + "': " + std::strerror(errno));
  return static_cast<uint64_t>(st.st_size);
}

MappedRegion::MappedRegion(const std::string& path, uint64_t offset, uint64_t size) {
  Fd f(path);
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) throw std::runtime_error("cannot stat '" + path + "'");
  if (S_ISDIR(st.st_mode)) throw std::runtime_error("'" + path + "' is a directory, not a GGUF file");
  if (!S_ISREG(st.st_mode)) throw std::runtime_error("'" + path + "' is not a regular file");
  const uint64_t fsize = static_cast<uint64_t>(st.st_size);
  if (offset > fsize || size > fsize - offset)
    throw std::runtime_error("'" + path + "': range [" + std::to_string(offset) + ", +" + std::to_string(size) +
                             ") lies outside the file (" + std::to_string(fsize) + " bytes)");
  offset_ = offset;
  size_ = size;
  if (size == 0) return;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t start = offset / page * page;
  lead_ = offset - start;
  void* p = ::mmap(nullptr, lead_ + size, PROT_READ, MAP_PRIVATE, f.fd, static_cast<off_t>(start));
  if (p == MAP_FAILED) throw std::runtime_error("cannot mmap '" + path + "': " + std::strerror(errno));
  base_ = static_cast<uint8_t*>(p);
}

void MappedRegion::advise(Advice advice, uint64_t offset, uint64_t size) const {
  if (base_ == nullptr) return;
  const uint64_t begin = std::max(offset, offset_), end = std::min(offset + size, offset_ + size_);
  if (begin >= end) return;
  // madvise wants a page-aligned start; widening it to the page stays inside the mapping.
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t at = lead_ + (begin - offset_);
  const uint64_t aligned = at / page * page;
  const int flag = advice == Advice::Random     ? MADV_RANDOM
                   : advice == Advice::Normal   ? MADV_NORMAL
                   : advice == Advice::WillNeed ? MADV_WILLNEED
                                                : MADV_DONTNEED;
  ::madvise(base_ + aligned, end - begin + (at - aligned), flag);
}

void drop_cached_pages(const std::string& path, uint64_t offset, uint64_t size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::posix_fadvise(fd, static_cast<off_t>(offset), static_cast<off_t>(size), POSIX_FADV_DONTNEED);
  ::close(fd);
}

MappedRegion::~MappedRegion() { release(); }

MappedRegion::MappedRegion(MappedRegion&& other) noexcept { *this = std::move(other); }

MappedRegion& MappedRegion::operator=(MappedRegion&& other) noexcept {
  if (this != &other) {
    release();
    base_ = std::exchange(other.base_, nullptr);
    lead_ = std::exchange(other.lead_, 0);
    offset_ = std::exchange(other.offset_, 0);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void MappedRegion::release() {
  if (base_ != nullptr) ::munmap(base_, lead_ + size_);
  base_ = nullptr;
}

}  // namespace hearth::runtime
