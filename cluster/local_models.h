// GGUF files a device already has (downloaded by its owner): when the head assigns layers of a
// model whose hash matches one of them, the device maps its layers from that file instead of
// receiving them. Files are hashed (XXH3-64 of the whole file, as the head does) once; the hashes
// are kept with each file's size and modification time, so a later start hashes nothing.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace hearth::cluster {

class LocalModels {
 public:
  // `dirs`: folders searched for *.gguf (missing ones are skipped); `cache`: the hash file.
  LocalModels(std::vector<std::string> dirs, std::string cache);
  // The path of a local GGUF whose hash is `hash`, hashing files not seen before.
  std::optional<std::string> find(uint64_t hash);

 private:
  struct Entry {
    uint64_t size = 0;
    int64_t mtime = 0;
    uint64_t hash = 0;
  };
  void load_cache();
  void save_cache() const;

  std::vector<std::string> dirs_;
  std::string cache_;
  std::map<std::string, Entry> known_;  // by path
};

}  // namespace hearth::cluster
