// What of a model's reply the user is shown.
//
// Most chat models answer in plain text. gpt-oss answers in OpenAI's "harmony" format: messages on
// channels, each "<|channel|>NAME<|message|>TEXT" and ended by <|end|> (then "<|start|>assistant"
// and the next one) or by <|return|>, which ends the reply. The "analysis" channel is its chain of
// thought, "commentary" its tool calls, "final" the answer; only the final channel is the answer,
// and OpenAI's guidance is not to show the analysis to users. A reply that starts without a
// channel header (a model that skips the format) is shown as it is.
//
//   ReplyFilter f = ReplyFilter::for_chat(tmpl, vocab);
//   for each sampled token t: send(f.visible(t, tokenizer.piece(t)));
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

class ReplyFilter {
 public:
  // Shows every token (raw prompts, and every template but harmony).
  ReplyFilter() = default;
  // The filter for a reply to a conversation rendered with `tmpl`.
  static ReplyFilter for_chat(const ChatTemplate& tmpl, const Vocab& vocab);

  // The text of the next token of the reply to show: `piece` or "".
  std::string visible(int32_t token, std::string_view piece);

 private:
  enum class State { kStart, kRole, kChannel, kBody };
  bool harmony_ = false;
  int32_t start_ = -1, channel_ = -1, message_ = -1, end_ = -1;  // harmony's control tokens
  State state_ = State::kStart;
  std::string channel_name_;
  bool show_body_ = true;
};

}  // namespace hearth::runtime
