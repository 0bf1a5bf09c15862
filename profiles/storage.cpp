#include "profiles/storage.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include "runtime/format/direct_reader.h"

namespace hearth::profiles {

namespace {

constexpr uint64_t kChunk = 4u << 20;  // a paged layer is read in pieces of megabytes
// Passes over the probe, of which the median rate counts: at least kMinPasses and kMinSeconds
// of reading. A pass of 32 MiB takes a few ms on a fast disk, and a virtual disk's rate moved 2-4x
// (2.0-8.7 GB/s) between runs of five passes a minute apart, while paging it sustained 4.3-5.6.
constexpr int kMinPasses = 3, kMaxPasses = 64;
constexpr double kMinSeconds = 0.5;

// The probe file, removed whatever happens.
struct ProbeFile {
  std::string path;
  ~ProbeFile() { std::filesystem::remove(path); }
};

[[noreturn]] void fail(const std::string& dir, const std::string& what) {
  throw std::runtime_error("cannot measure the storage of '" + dir + "': " + what);
}

void write_probe(const std::string& dir, const std::string& path, uint64_t bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) fail(dir, std::strerror(errno));
  std::string chunk(kChunk, '\0');
  for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>(i * 2654435761u >> 24);  // not all zeros
  uint64_t done = 0;
  int error = 0;
  while (done < bytes && error == 0) {
    const ssize_t n = ::write(fd, chunk.data(), std::min<uint64_t>(kChunk, bytes - done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) error = n < 0 ? errno : ENOSPC;
    else done += static_cast<uint64_t>(n);
  }
  if (error == 0 && ::fsync(fd) != 0) error = errno;
  // Written pages stay cached: drop them so that the reads below come from the device.
  if (error == 0) ::posix_fadvise(fd, 0, static_cast<off_t>(bytes), POSIX_FADV_DONTNEED);
  ::close(fd);
  if (error == ENOSPC) fail(dir, "the disk is full (" + std::to_string(bytes >> 20) + " MiB were needed for the probe)");
  if (error != 0) fail(dir, std::strerror(error));
}

}  // namespace

StorageProfile measure_storage(const std::string& dir, uint64_t bytes) {
  StorageProfile s{.path = dir};
  struct statvfs fs {};
  if (::statvfs(dir.c_str(), &fs) != 0) fail(dir, std::strerror(errno));
  s.free_bytes = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
  s.total_bytes = static_cast<uint64_t>(fs.f_blocks) * fs.f_frsize;
  bytes = std::max<uint64_t>(kChunk, bytes / kChunk * kChunk);
  const ProbeFile probe{(std::filesystem::path(dir) / (".hearth-storage-probe-" + std::to_string(::getpid()))).string()};
  write_probe(dir, probe.path, bytes);
  runtime::DirectReader reader(probe.path);
  runtime::AlignedBuffer buffer(runtime::DirectReader::span_bytes(0, kChunk));
  std::vector<double> rates;
  double total = 0;
  // Each pass cold: direct reads, or pages dropped after each read.
  while (rates.size() < kMaxPasses && (rates.size() < kMinPasses || total < kMinSeconds)) {
    const auto start = std::chrono::steady_clock::now();
    for (uint64_t at = 0; at < bytes; at += kChunk) reader.read(at, kChunk, buffer.data());
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    rates.push_back(static_cast<double>(bytes) / std::max(seconds, 1e-6));
    total += seconds;
  }
  std::nth_element(rates.begin(), rates.begin() + rates.size() / 2, rates.end());
  s.read_bytes_per_s = rates[rates.size() / 2];
  s.direct = reader.direct();
  return s;
}

}  // namespace hearth::profiles
