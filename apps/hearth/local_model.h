// A model file opened for use on this device by the one-device commands (run, bench, tokenize).
#pragma once

#include <memory>
#include <string>

#include "runtime/format/gguf.h"
#include "runtime/model/model_config.h"
#include "runtime/model/stage.h"
#include "runtime/text/tokenizer.h"

namespace hearth::cli {

struct LocalModel {
  runtime::GgufFile file;
  runtime::ModelConfig config;
  std::shared_ptr<runtime::StageWeights> weights;  // the whole model as one stage
};

inline LocalModel open_local_model(const std::string& path) {
  runtime::GgufFile file = runtime::GgufFile::open(path);
  runtime::ModelConfig config = runtime::read_model_config(file);
  auto weights = std::make_shared<runtime::StageWeights>(file, config, runtime::StageSpec::whole(config.n_layer));
  return {std::move(file), std::move(config), std::move(weights)};
}

}  // namespace hearth::cli
