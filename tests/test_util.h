// Helpers shared by the tests: temporary files, small generated models, the shared reference
// data and running the CLI.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/model/model_maker.h"

namespace hearth::test {

// A directory removed with everything in it when the object goes away.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// ../shared (or $HEARTH_SHARED_DIR) if it exists; tests that need it skip when it does not.
std::optional<std::filesystem::path> shared_dir();
// Path of a file under shared/, or nullopt with a MESSAGE saying the test is skipped.
std::optional<std::string> shared_file(const std::string& relative);

// Writes a small random llama model (default: the "tiny" preset) and returns its path.
std::string make_model(const TempDir& dir, const std::string& name, runtime::MakeModelOptions options);
// A small model of type t whose every matrix row divides into 256-element super-blocks (the
// K-quants' and IQ4_XS's), with enough signal that every layer matters to the logits.
runtime::MakeModelOptions superblock_model(runtime::TensorType t, int n_layer = 4);

std::vector<uint8_t> read_bytes(const std::string& path);
void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes);
std::vector<float> read_f32(const std::string& path);

struct CommandResult {
  int exit_code;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs the built `hearth` CLI with the given arguments (no shell involved).
CommandResult run_cli(const std::vector<std::string>& args);
// Runs a program (command[0], a path) with arguments, waiting for it to end.
CommandResult run_command(const std::vector<std::string>& command);

}  // namespace hearth::test

#include "runtime/format/gguf.h"
#include "runtime/model/model_config.h"
#include "runtime/model/weights.h"

namespace hearth::test {

// Copies GGUF `src` to `dst`, letting `mutate` change the metadata and the tensor list first
// (drop a tensor, change a shape or type...). Tensor bytes are copied from the source by name;
// a tensor whose size changed is filled with zeros.
void rewrite_gguf(const std::string& src, const std::string& dst,
                  const std::function<void(runtime::GgufMetadata&, std::vector<runtime::GgufTensorInfo>&)>& mutate);

// A model file opened whole: its config and the weights of one stage holding every layer.
struct WholeModel {
  runtime::GgufFile file;
  runtime::ModelConfig config;
  std::shared_ptr<runtime::StageWeights> weights;
};
WholeModel open_whole_model(const std::string& path);

}  // namespace hearth::test
