#include "cluster/weight_receiver.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace hearth::cluster {

namespace {

std::runtime_error io_error(const std::string& what, const std::string& path) {
  return std::runtime_error(what + " '" + path + "': " + std::strerror(errno));
}

}  // namespace

WeightReceiver::WeightReceiver(std::string final_path, uint64_t total)
    : final_path_(std::move(final_path)), total_(total), n_chunks_((total + kChunkBytes - 1) / kChunkBytes) {
  std::error_code ec;
  if (std::filesystem::file_size(final_path_, ec) == total_ && !ec) {
    cached_ = true;
    for (uint64_t i = 0; i < n_chunks_; ++i) done_.insert(i);
    return;
  }
  std::filesystem::create_directories(std::filesystem::path(final_path_).parent_path());
  const std::string partial = final_path_ + ".partial", progress = final_path_ + ".progress";
  fd_ = ::open(partial.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw io_error("cannot open", partial);
  if (::ftruncate(fd_, static_cast<off_t>(total_)) != 0) throw io_error("cannot size", partial);
  progress_fd_ = ::open(progress.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (progress_fd_ < 0) throw io_error("cannot open", progress);
  // The progress log holds the indexes of chunks already written (8 bytes each).
  uint64_t index;
  while (::read(progress_fd_, &index, sizeof index) == sizeof index)
    if (index < n_chunks_) done_.insert(index);
}

WeightReceiver::~WeightReceiver() {
  if (fd_ >= 0) ::close(fd_);
  if (progress_fd_ >= 0) ::close(progress_fd_);
}

uint64_t WeightReceiver::chunk_size(uint64_t index) const {
  return std::min<uint64_t>(kChunkBytes, total_ - index * kChunkBytes);
}

std::vector<std::pair<uint64_t, uint32_t>> WeightReceiver::next_requests(int window) {
  std::vector<std::pair<uint64_t, uint32_t>> out;
  while (static_cast<int>(outstanding_.size()) < window && next_ < n_chunks_) {
    const uint64_t i = next_++;
    if (done_.count(i)) continue;
    outstanding_.insert(i);
    out.emplace_back(i * kChunkBytes, static_cast<uint32_t>(chunk_size(i)));
  }
  return out;
}

void WeightReceiver::accept(uint64_t offset, std::span<const uint8_t> data, uint64_t checksum) {
  const uint64_t i = offset / kChunkBytes;
  if (offset % kChunkBytes != 0 || !outstanding_.count(i))
    throw std::invalid_argument("weight chunk at an offset that was not requested");
  if (data.size() != chunk_size(i) || XXH3_64bits(data.data(), data.size()) != checksum) {
    outstanding_.erase(i);
    next_ = std::min(next_, i);  // ask for it again
    throw std::invalid_argument("weight chunk at byte " + std::to_string(offset) + " has the wrong size or checksum");
  }
  size_t written = 0;
  while (written < data.size()) {
    const ssize_t w = ::pwrite(fd_, data.data() + written, data.size() - written, static_cast<off_t>(offset + written));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw io_error("cannot write", final_path_ + ".partial");
    written += static_cast<size_t>(w);
  }
  if (::write(progress_fd_, &i, sizeof i) != sizeof i) throw io_error("cannot write", final_path_ + ".progress");
  outstanding_.erase(i);
  done_.insert(i);
}

uint64_t WeightReceiver::bytes_done() const {
  uint64_t n = 0;
  for (uint64_t i : done_) n += chunk_size(i);
  return n;
}

void WeightReceiver::finish() {
  if (cached_) return;
  if (::fsync(fd_) != 0) throw io_error("cannot sync", final_path_ + ".partial");
  ::close(std::exchange(fd_, -1));
  ::close(std::exchange(progress_fd_, -1));
  const std::string partial = final_path_ + ".partial";
  if (std::rename(partial.c_str(), final_path_.c_str()) != 0) throw io_error("cannot rename", partial);
  std::remove((final_path_ + ".progress").c_str());
}

}  // namespace hearth::cluster
