// libFuzzer target: a GGUF file's bytes. The reader must refuse anything malformed with GgufError
// and never read out of bounds; what it accepts then goes through what the runtime reads from a
// file before trusting it (model config, planner spec, vocabulary, tokenizer, chat template).
// Nothing is written anywhere: GgufFile::parse reads from memory.
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <string>

#include "runtime/text/chat_template.h"
#include "runtime/format/gguf.h"
#include "runtime/model/model_config.h"
#include "runtime/model/model_spec_gguf.h"
#include "runtime/text/tokenizer.h"
#include "runtime/text/vocab.h"

using namespace hearth::runtime;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  GgufFile f;
  try {
    f = GgufFile::parse(data, size, "fuzz.gguf");
  } catch (const GgufError&) {
    return 0;
  }
  // What the reader accepted must be consistent: every tensor lies inside the buffer, after the
  // directory, aligned.
  check(f.data_offset() <= size || f.tensors().empty());
  for (const auto& t : f.tensors()) {
    check(t.offset >= f.data_offset() && t.offset <= size && t.n_bytes <= size - t.offset);
    check((t.offset - f.data_offset()) % f.alignment() == 0);
    check(f.find_tensor(t.name) == &t);
  }

  try {
    const ModelConfig config = read_model_config(f);
    (void)model_spec_from_gguf(f, config);
  } catch (const std::exception&) {
  }
  try {
    const Tokenizer tok(load_vocab(f.metadata()));
    const auto ids = tok.encode("Hello world! 123 <s> \xe2\x96\x81\xc3", {.add_bos = true, .parse_special = true});
    // Every id the tokenizer emits indexes the embedding table: it must be inside the vocabulary.
    for (int32_t id : ids) check(id >= 0 && id < tok.vocab().size());
    (void)tok.decode(ids);
  } catch (const std::exception&) {
  }
  try {
    if (auto tmpl = f.metadata().get_string_opt("tokenizer.chat_template")) {
      const ChatTemplate t = detect_chat_template(*tmpl);
      const ChatMessage msgs[] = {{"system", "s"}, {"user", "u"}};
      (void)render_chat(t, msgs);
    }
  } catch (const GgufError&) {  // not a string
  }
  return 0;
}
