// `hearth tokenize`: print a text's token ids as a JSON array.
#include <nlohmann/json.hpp>

#include <iostream>
#include <memory>

#include "apps/hearth/commands.h"
#include "runtime/format/gguf.h"
#include "runtime/text/tokenizer.h"

namespace hearth::cli {

void add_tokenize_command(CLI::App& app) {
  struct Args {
    std::string model, text;
    bool no_bos = false, parse_special = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of a text as a JSON array");
  cmd->add_option("-m,--model", a->model, "GGUF model (or vocabulary-only) file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--text", a->text, "Text to tokenize")->required();
  cmd->add_flag("--no-bos", a->no_bos, "Do not add BOS even if the model asks for it");
  cmd->add_flag("--special", a->parse_special, "Recognise control tokens such as <s> in the text");
  cmd->callback([a] {
    const runtime::GgufFile file = runtime::GgufFile::open(a->model);
    const runtime::Tokenizer tok(runtime::load_vocab(file.metadata()));
    const auto ids = tok.encode(a->text, {.add_bos = !a->no_bos, .parse_special = a->parse_special});
    std::cout << nlohmann::json(ids).dump() << "\n";
  });
}

}  // namespace hearth::cli
