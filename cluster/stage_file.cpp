#include "cluster/stage_file.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "runtime/format/gguf_writer.h"

namespace hearth::cluster {

namespace {

void pread_all(int fd, uint8_t* out, size_t n, uint64_t offset, const std::string& path) {
  while (n > 0) {
    const ssize_t r = ::pread(fd, out, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) throw std::runtime_error("cannot read '" + path + "' at byte " + std::to_string(offset));
    out += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
}

}  // namespace

StageFile::StageFile(const runtime::GgufFile& source, const runtime::ModelConfig& config, const runtime::StageSpec& spec)
    : source_path_(source.path()) {
  runtime::GgufWriter w(static_cast<uint32_t>(source.alignment()));
  for (const auto& [k, v] : source.metadata().all()) w.metadata().set(k, v);
  std::vector<const runtime::GgufTensorInfo*> infos;
  for (const auto& name : runtime::stage_tensor_names(source, config, spec)) {
    const auto& t = source.require_tensor(name);
    w.add_tensor(t.name, t.type, t.shape);
    infos.push_back(&t);
  }
  header_ = w.header();
  header_hash_ = XXH3_64bits(header_.data(), header_.size());
  for (size_t i = 0; i < infos.size(); ++i)
    segments_.push_back({header_.size() + w.tensors()[i].offset, infos[i]->n_bytes, infos[i]->offset});
  size_ = header_.size() + w.data_bytes();
  fd_ = ::open(source_path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw std::runtime_error("cannot open '" + source_path_ + "': " + std::strerror(errno));
}

StageFile::~StageFile() {
  if (fd_ >= 0) ::close(fd_);
}

void StageFile::read(uint64_t offset, std::span<uint8_t> out) const {
  if (offset > size_ || out.size() > size_ - offset) throw std::out_of_range("range past the end of the stage file");
  std::fill(out.begin(), out.end(), uint8_t{0});
  const uint64_t end = offset + out.size();
  if (offset < header_.size()) {
    const uint64_t n = std::min<uint64_t>(end, header_.size()) - offset;
    std::memcpy(out.data(), header_.data() + offset, n);
  }
  // Segments are sorted: find the first one that ends after `offset`.
  auto it = std::lower_bound(segments_.begin(), segments_.end(), offset,
                             [](const Segment& s, uint64_t off) { return s.offset + s.size <= off; });
  for (; it != segments_.end() && it->offset < end; ++it) {
    const uint64_t from = std::max(offset, it->offset), to = std::min(end, it->offset + it->size);
    const uint64_t source = it->source_offset + (from - it->offset);
    pread_all(fd_, out.data() + (from - offset), to - from, source, source_path_);
    // Streamed once, to another device: cached, these pages would count against the head's memory
    // (its cgroup charges them) and push out the weights it maps itself. Mapped pages stay.
    ::posix_fadvise(fd_, static_cast<off_t>(source), static_cast<off_t>(to - from), POSIX_FADV_DONTNEED);
  }
}

uint64_t hash_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open '" + path + "': " + std::strerror(errno));
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  std::vector<uint8_t> buf(8 << 20);
  off_t done = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    XXH3_64bits_update(st, buf.data(), static_cast<size_t>(n));
    // One pass over a whole model: left cached it would fill the memory (and the memory cgroup)
    // of a device that may hold only part of it. Pages something maps stay.
    ::posix_fadvise(fd, done, n, POSIX_FADV_DONTNEED);
    done += n;
  }
  const uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  ::close(fd);
  return h;
}

}  // namespace hearth::cluster
