// What of a model's reply the user is shown, and as what: the answer, or the model's reasoning.
//
// Most chat models answer in plain text. Reasoning models think first, and say where:
// - gpt-oss answers in OpenAI's "harmony" format: messages on channels, each
//   "<|channel|>NAME<|message|>TEXT" and ended by <|end|> (then "<|start|>assistant" and the next
//   one) or by <|return|>, which ends the reply. "analysis" is its chain of thought, "commentary"
//   its tool calls, "final" the answer. A reply that starts without a channel header (a model that
//   skips the format) is all answer.
// - Qwen 3 / 3.5, QwQ and DeepSeek R1 write their reasoning between <think> and </think> tokens
//   before the answer; their templates may open the block in the generation prompt already
//   (ChatTemplate::think), so the reply starts inside it.
// The reasoning is returned as such, for the API's `reasoning_content` (as llama.cpp's server and
// vLLM return it), never mixed into the answer; tool calls (commentary) are not shown, as hearth
// has no tools. The markers themselves are never shown, nor the blank lines the models write
// around them (a part's leading whitespace, and the reasoning's trailing whitespace).
//
//   ReplyFilter f = ReplyFilter::for_chat(tmpl, vocab);
//   for each sampled token t: ReplyPiece p = f.next(t, tokenizer.piece(t)); send(p.text, p.part);
//
// The filter is a small value (its state is a few fields), so a conversation carried to another
// pipeline takes its filter along and goes on where it was.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "runtime/text/chat_template.h"
#include "runtime/text/vocab.h"

namespace hearth::runtime {

enum class ReplyPart { kAnswer, kReasoning };

struct ReplyPiece {
  std::string text;  // what to show of this token: its piece, part of it, whitespace held back before it, or ""
  ReplyPart part = ReplyPart::kAnswer;
};

class ReplyFilter {
 public:
  // Shows every token as the answer (raw prompts, and models that do not reason).
  ReplyFilter() = default;
  // The filter for a reply to a conversation rendered with `tmpl` and `options`.
  static ReplyFilter for_chat(const ChatTemplate& tmpl, const Vocab& vocab, const ChatRenderOptions& options = {});

  // What to show of the reply's next token, and of which part.
  ReplyPiece next(int32_t token, std::string_view piece);

 private:
  enum class Mode { kPlain, kHarmony, kThink };
  enum class State { kStart, kRole, kChannel, kBody };
  enum class Channel { kAnswer, kReasoning, kHidden };

  ReplyPiece harmony(int32_t token, std::string_view piece);
  ReplyPiece think(int32_t token, std::string_view piece);
  // The piece of a part that is being shown, with its leading (and, for reasoning, trailing)
  // whitespace dealt with.
  ReplyPiece shown(std::string_view piece, ReplyPart part);
  void enter(ReplyPart part);

  Mode mode_ = Mode::kPlain;
  // harmony's control tokens
  int32_t start_ = -1, channel_ = -1, message_ = -1, end_ = -1;
  State state_ = State::kStart;
  std::string channel_name_;
  Channel body_ = Channel::kAnswer;
  // <think> ... </think>
  int32_t think_open_ = -1, think_close_ = -1;
  ReplyPart part_ = ReplyPart::kAnswer;
  bool shown_any_ = false;     // some text of the current part was shown
  bool trim_leading_ = false;  // nothing of the current part shown yet: drop its leading whitespace
  std::string held_;           // trailing whitespace of the reasoning, shown only if more follows
};

}  // namespace hearth::runtime
