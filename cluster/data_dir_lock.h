// One daemon per data directory. The data directory holds a device's identity (node id, keys)
// and its weight cache: two daemons on one directory would register as one device and write one
// cache file from two processes. The lock is an flock(2) on DATA_DIR/hearthd.lock, held for the
// daemon's life and released by the kernel however the process ends.
#pragma once

#include <string>

namespace hearth::cluster {

class DataDirLock {
 public:
  // Throws std::runtime_error naming the directory (and the holder's pid) when another daemon has it.
  explicit DataDirLock(const std::string& data_dir);
  ~DataDirLock();
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace hearth::cluster
