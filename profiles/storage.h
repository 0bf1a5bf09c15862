// The storage a device would page weights from (issue 19): how fast it reads when nothing is
// cached, and how much room it has.
#pragma once

#include <cstdint>
#include <string>

namespace hearth::profiles {

struct StorageProfile {
  std::string path;             // the directory measured
  double read_bytes_per_s = 0;  // sequential reads of 4 MiB, cold (O_DIRECT, else the page cache dropped
                                // after each read): the median of a few passes
  uint64_t free_bytes = 0;      // what an unprivileged writer may still use there
  uint64_t total_bytes = 0;
  bool direct = false;          // whether the reads bypassed the page cache (O_DIRECT)
  std::string error;            // why it was not measured (a profile goes on without it)
};

// Writes a probe file of `bytes` in `dir`, reads it back cold, removes it. Throws
// std::runtime_error naming the directory when it cannot (missing, read-only, full).
StorageProfile measure_storage(const std::string& dir, uint64_t bytes);

}  // namespace hearth::profiles
