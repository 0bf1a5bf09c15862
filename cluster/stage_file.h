// The GGUF file a device receives for its stage: the source model's metadata and only the
// tensors of its layers (plus embedding/output head when it holds them), laid out afresh.
//
// The head never builds this file: it serves byte ranges of it on request, reading the tensor
// bytes from the source model with pread, so it holds no more than the chunk being sent.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "runtime/format/gguf.h"
#include "runtime/model/model_config.h"
#include "runtime/model/weights.h"

namespace hearth::cluster {

class StageFile {
 public:
  StageFile(const runtime::GgufFile& source, const runtime::ModelConfig& config, const runtime::StageSpec& spec);
  ~StageFile();
  StageFile(const StageFile&) = delete;
  StageFile& operator=(const StageFile&) = delete;

  uint64_t size() const { return size_; }
  uint64_t header_hash() const { return header_hash_; }  // XXH3-64 of the header bytes
  // Copies bytes [offset, offset + out.size()) of the stage file. Throws std::out_of_range past
  // the end and std::runtime_error when the source cannot be read.
  void read(uint64_t offset, std::span<uint8_t> out) const;

 private:
  struct Segment {
    uint64_t offset;  // in the stage file
    uint64_t size;
    uint64_t source_offset;  // in the source file
  };
  int fd_ = -1;
  std::string source_path_;
  std::vector<uint8_t> header_;
  std::vector<Segment> segments_;  // sorted by offset; gaps between them are zero padding
  uint64_t size_ = 0;
  uint64_t header_hash_ = 0;
};

// XXH3-64 of a whole file, read in large blocks (names a model: the cache key of its stages).
uint64_t hash_file(const std::string& path);

}  // namespace hearth::cluster
