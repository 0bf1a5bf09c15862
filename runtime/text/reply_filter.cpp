#include "runtime/text/reply_filter.h"

namespace hearth::runtime {

ReplyFilter ReplyFilter::for_chat(const ChatTemplate& tmpl, const Vocab& vocab) {
  ReplyFilter f;
  if (tmpl.family != ChatFamily::HARMONY) return f;
  f.start_ = vocab.find("<|start|>");
  f.channel_ = vocab.find("<|channel|>");
  f.message_ = vocab.find("<|message|>");
  f.end_ = vocab.find("<|end|>");
  // Without its control tokens the vocabulary cannot speak harmony: show everything.
  f.harmony_ = f.start_ >= 0 && f.channel_ >= 0 && f.message_ >= 0 && f.end_ >= 0;
  return f;
}

std::string ReplyFilter::visible(int32_t token, std::string_view piece) {
  if (!harmony_) return std::string(piece);
  switch (state_) {
    case State::kStart:  // the prompt ended with "<|start|>assistant"
      if (token == channel_) {
        state_ = State::kChannel;
        channel_name_.clear();
        return {};
      }
      state_ = State::kBody;  // no header: plain text, shown
      show_body_ = true;
      return visible(token, piece);
    case State::kRole:  // after <|start|>: "assistant", then a header
      if (token == channel_) {
        state_ = State::kChannel;
        channel_name_.clear();
      }
      return {};
    case State::kChannel:  // "final", "analysis", "commentary" (a constraint may follow)
      if (token == message_) {
        const size_t b = channel_name_.find_first_not_of(' ');
        show_body_ = b != std::string::npos && channel_name_.compare(b, 5, "final") == 0;
        state_ = State::kBody;
      } else {
        channel_name_ += piece;
      }
      return {};
    case State::kBody:
      if (token == end_) {
        state_ = State::kRole;
        return {};
      }
      if (token == start_ || token == channel_ || token == message_) return {};
      return show_body_ ? std::string(piece) : std::string();
  }
  return {};
}

}  // namespace hearth::runtime
