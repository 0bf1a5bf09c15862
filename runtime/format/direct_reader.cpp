#include "runtime/format/direct_reader.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

namespace hearth::runtime {

AlignedBuffer::AlignedBuffer(size_t bytes) : size_(bytes) {
  const size_t rounded = (bytes + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
  void* p = std::aligned_alloc(kDirectAlign, rounded == 0 ? kDirectAlign : rounded);
  if (p == nullptr) throw std::bad_alloc();
  data_.reset(static_cast<uint8_t*>(p));
}

void AlignedBuffer::Free::operator()(uint8_t* p) const { std::free(p); }

DirectReader::DirectReader(const std::string& path) : path_(path) {
  buffered_fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (buffered_fd_ < 0) throw std::runtime_error("cannot open '" + path + "': " + std::strerror(errno));
  direct_fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);  // -1 where unsupported
}

DirectReader::~DirectReader() {
  if (direct_fd_ >= 0) ::close(direct_fd_);
  ::close(buffered_fd_);
}

void DirectReader::drop_cached(uint64_t offset, uint64_t size) const {
  ::posix_fadvise(buffered_fd_, static_cast<off_t>(offset), static_cast<off_t>(size), POSIX_FADV_DONTNEED);
}

uint64_t DirectReader::span_bytes(uint64_t offset, uint64_t size) {
  const uint64_t begin = offset / kDirectAlign * kDirectAlign;
  const uint64_t end = (offset + size + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
  return end - begin;
}

namespace {

// Reads up to `size` bytes at `offset` into dst; returns the bytes read (fewer at the end of the
// file) or -errno. A direct read stops at its first short read: that is the end of the file, and
// another read from the unaligned place it stopped at would be refused.
int64_t read_at(int fd, uint64_t offset, uint64_t size, uint8_t* dst, bool direct) {
  uint64_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, dst + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) break;
    done += static_cast<uint64_t>(n);
    if (direct && done < size) break;
  }
  return static_cast<int64_t>(done);
}

}  // namespace

const uint8_t* DirectReader::read(uint64_t offset, uint64_t size, uint8_t* dst) {
  const uint64_t begin = offset / kDirectAlign * kDirectAlign;
  const uint64_t lead = offset - begin;
  int64_t got = 0;  // bytes from `offset` on, or -errno
  if (direct_fd_ >= 0) {
    got = read_at(direct_fd_, begin, span_bytes(offset, size), dst, true);
    if (got == -EINVAL) {  // the file system takes O_DIRECT at open but not at read: buffered from now on
      ::close(direct_fd_);
      direct_fd_ = -1;
    } else if (got >= 0) {
      got = std::max<int64_t>(0, got - static_cast<int64_t>(lead));
    }
  }
  if (direct_fd_ < 0) {
    got = read_at(buffered_fd_, offset, size, dst + lead, false);
    drop_cached(offset, size);
  }
  if (got < 0)
    throw std::runtime_error("cannot read '" + path_ + "' at byte " + std::to_string(offset) + ": " +
                             std::strerror(static_cast<int>(-got)));
  if (static_cast<uint64_t>(got) < size)
    throw std::runtime_error("'" + path_ + "' ends before byte " + std::to_string(offset + size) +
                             " of a weight it was opened with (was the file truncated or replaced?)");
  return dst + lead;
}

}  // namespace hearth::runtime
