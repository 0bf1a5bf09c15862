// The GGUF files the head can launch: those in its models directories (hearthd --models, default
// DATA_DIR/models, the same folders a device maps layers from). Each file's header is read once
// and again only when its size or modification time changes, so listing a library of
// multi-gigabyte files costs a directory scan.
//
//   ModelLibrary lib({"/srv/models"});
//   for (const LibraryModel& m : lib.scan()) ...   // sorted by id
//   const LibraryModel* m = lib.find("qwen3-8b-q4_k_m");
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "partitioner/model_spec.h"

namespace hearth::cluster {

struct LibraryModel {
  std::string id;    // the file's stem: what clients name it by (the API's model id)
  std::string path;  // absolute
  std::string name;  // general.name, or the id
  std::string arch;  // general.architecture
  uint64_t file_bytes = 0;
  std::string weight_type;  // of most of the layers' bytes ("q4_0", ...)
  int n_layers = 0;
  int n_ctx_train = 0;
  std::optional<partitioner::ModelSpec> spec;  // what the planner needs; absent when unusable
  std::string error;                           // why the file cannot be launched ("" when it can)
};

class ModelLibrary {
 public:
  explicit ModelLibrary(std::vector<std::string> dirs);

  // Every *.gguf file directly in the directories (missing ones are skipped), sorted by id; a file
  // that cannot be read is listed with its error. Files unchanged since the last scan are not read.
  const std::vector<LibraryModel>& scan();
  // The model named `name` (its id, file name or path) as of the last scan; nullptr if none.
  const LibraryModel* find(const std::string& name) const;
  const std::vector<std::string>& dirs() const { return dirs_; }

 private:
  struct Seen {
    uint64_t size = 0;
    int64_t mtime = 0;
    LibraryModel model;
  };
  std::vector<std::string> dirs_;
  std::map<std::string, Seen> seen_;  // by path
  std::vector<LibraryModel> models_;
};

// Reads one file's header (what scan() does per new file); never throws.
LibraryModel read_library_model(const std::string& path);

}  // namespace hearth::cluster
