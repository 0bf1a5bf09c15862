#include "cluster/local_models.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "cluster/stage_file.h"

namespace hearth::cluster {

namespace fs = std::filesystem;

LocalModels::LocalModels(std::vector<std::string> dirs, std::string cache) : dirs_(std::move(dirs)), cache_(std::move(cache)) {
  load_cache();
}

void LocalModels::load_cache() {
  std::ifstream in(cache_);
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    Entry e;
    std::string path;
    if (!(f >> std::hex >> e.hash >> std::dec >> e.size >> e.mtime)) continue;
    std::getline(f >> std::ws, path);
    if (!path.empty()) known_[path] = e;
  }
}

void LocalModels::save_cache() const {
  std::ofstream out(cache_ + ".tmp");
  for (const auto& [path, e] : known_)
    out << std::hex << e.hash << std::dec << " " << e.size << " " << e.mtime << " " << path << "\n";
  out.close();
  std::error_code ec;
  fs::rename(cache_ + ".tmp", cache_, ec);
}

std::optional<std::string> LocalModels::find(uint64_t hash) {
  bool changed = false;
  std::optional<std::string> found;
  for (const auto& dir : dirs_) {
    std::error_code ec;
    for (const auto& f : fs::directory_iterator(dir, ec)) {
      if (f.path().extension() != ".gguf") continue;
      struct stat st {};
      if (::stat(f.path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
      const std::string path = f.path().string();
      auto it = known_.find(path);
      if (it == known_.end() || it->second.size != static_cast<uint64_t>(st.st_size) || it->second.mtime != st.st_mtime) {
        spdlog::info("hashing {} ({:.1f} GB), once", path, static_cast<double>(st.st_size) / 1e9);
        try {
          known_[path] = {static_cast<uint64_t>(st.st_size), st.st_mtime, hash_file(path)};
          changed = true;
        } catch (const std::exception& e) {
          spdlog::warn("cannot hash {}: {}", path, e.what());
          continue;
        }
      }
      if (known_.at(path).hash == hash) {
        found = path;
        break;
      }
    }
    if (found) break;
  }
  if (changed) save_cache();
  return found;
}

}  // namespace hearth::cluster
