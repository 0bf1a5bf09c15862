// Receives a stage file chunk by chunk into the weight cache, verifying each chunk's checksum,
// and resumes an interrupted transfer: chunks already received are listed in a progress log next
// to the partial file, so a restarted daemon asks only for the rest.
#pragma once

#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace hearth::cluster {

class WeightReceiver {
 public:
  static constexpr uint32_t kChunkBytes = 4u << 20;

  // Opens (or resumes) `final_path + ".partial"`; if `final_path` already exists with `total`
  // bytes, the transfer is complete at once. Throws std::runtime_error on I/O failure.
  WeightReceiver(std::string final_path, uint64_t total);
  ~WeightReceiver();
  WeightReceiver(const WeightReceiver&) = delete;
  WeightReceiver& operator=(const WeightReceiver&) = delete;

  // Ranges (offset, length) to request now so that at most `window` are outstanding.
  std::vector<std::pair<uint64_t, uint32_t>> next_requests(int window);
  // Stores a chunk. Throws std::invalid_argument when it was not requested, has the wrong size
  // or fails its checksum (the range is requested again).
  void accept(uint64_t offset, std::span<const uint8_t> data, uint64_t checksum);
  bool complete() const { return done_.size() == n_chunks_; }
  uint64_t bytes_done() const;
  uint64_t total() const { return total_; }
  bool was_cached() const { return cached_; }
  // Moves the completed file to its final name. REQUIRES: complete().
  void finish();
  const std::string& final_path() const { return final_path_; }

 private:
  uint64_t chunk_size(uint64_t index) const;
  std::string final_path_;
  uint64_t total_;
  uint64_t n_chunks_;
  int fd_ = -1;
  int progress_fd_ = -1;
  bool cached_ = false;
  std::set<uint64_t> done_;
  std::set<uint64_t> outstanding_;
  uint64_t next_ = 0;  // lowest chunk index not yet requested or received
};

}  // namespace hearth::cluster
