#include "cluster/model_library.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "runtime/format/gguf.h"
#include "runtime/model/model_config.h"
#include "runtime/model/model_spec_gguf.h"

namespace hearth::cluster {

namespace fs = std::filesystem;

LibraryModel read_library_model(const std::string& path) {
  LibraryModel m;
  m.path = path;
  m.id = fs::path(path).stem().string();
  m.name = m.id;
  std::error_code ec;
  m.file_bytes = fs::file_size(path, ec);
  try {
    const runtime::GgufFile file = runtime::GgufFile::open(path);
    m.arch = file.metadata().get_string_opt("general.architecture").value_or("");
    m.name = file.metadata().get_string_opt("general.name").value_or(m.id);
    const runtime::ModelConfig config = runtime::read_model_config(file);
    m.n_layers = config.n_layer;
    m.n_ctx_train = config.n_ctx_train;
    m.spec = runtime::model_spec_from_gguf(file, config);
    m.weight_type = m.spec->weight_type;
  } catch (const std::exception& e) {
    m.spec.reset();
    m.error = e.what();
  }
  return m;
}

ModelLibrary::ModelLibrary(std::vector<std::string> dirs) : dirs_(std::move(dirs)) {}

const std::vector<LibraryModel>& ModelLibrary::scan() {
  std::map<std::string, Seen> now;
  for (const std::string& dir : dirs_) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      if (entry.path().extension() != ".gguf") continue;
      const std::string path = fs::absolute(entry.path()).lexically_normal().string();
      struct stat st {};
      if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
      const auto size = static_cast<uint64_t>(st.st_size);
      const auto mtime = static_cast<int64_t>(st.st_mtime);
      auto old = seen_.find(path);
      if (old != seen_.end() && old->second.size == size && old->second.mtime == mtime) now[path] = std::move(old->second);
      else now[path] = Seen{size, mtime, read_library_model(path)};
    }
  }
  seen_ = std::move(now);
  models_.clear();
  for (const auto& [path, s] : seen_) models_.push_back(s.model);
  std::sort(models_.begin(), models_.end(), [](const LibraryModel& a, const LibraryModel& b) {
    return a.id != b.id ? a.id < b.id : a.path < b.path;
  });
  return models_;
}

const LibraryModel* ModelLibrary::find(const std::string& name) const {
  for (const LibraryModel& m : models_)
    if (m.id == name || m.path == name || fs::path(m.path).filename().string() == name) return &m;
  return nullptr;
}

}  // namespace hearth::cluster
