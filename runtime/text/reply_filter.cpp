#include "runtime/text/reply_filter.h"

namespace hearth::runtime {

namespace {

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

}  // namespace

ReplyFilter ReplyFilter::for_chat(const ChatTemplate& tmpl, const Vocab& vocab, const ChatRenderOptions& options) {
  ReplyFilter f;
  if (tmpl.family == ChatFamily::HARMONY) {
    f.start_ = vocab.find("<|start|>");
    f.channel_ = vocab.find("<|channel|>");
    f.message_ = vocab.find("<|message|>");
    f.end_ = vocab.find("<|end|>");
    // Without its control tokens the vocabulary cannot speak harmony: all is answer.
    if (f.start_ >= 0 && f.channel_ >= 0 && f.message_ >= 0 && f.end_ >= 0) f.mode_ = Mode::kHarmony;
    return f;
  }
  // The reasoning models' vocabularies have both markers as tokens; a model that cannot write
  // them has nothing to separate.
  f.think_open_ = vocab.find("<think>");
  f.think_close_ = vocab.find("</think>");
  if (f.think_open_ < 0 || f.think_close_ < 0) return f;
  f.mode_ = Mode::kThink;
  if (opens_think_block(tmpl, options)) f.enter(ReplyPart::kReasoning);
  return f;
}

ReplyPiece ReplyFilter::next(int32_t token, std::string_view piece) {
  switch (mode_) {
    case Mode::kPlain: return {std::string(piece), ReplyPart::kAnswer};
    case Mode::kHarmony: return harmony(token, piece);
    case Mode::kThink: return think(token, piece);
  }
  return {};
}

void ReplyFilter::enter(ReplyPart part) {
  // A second message of the same part (harmony) is a new paragraph, if anything follows.
  held_ = part == part_ && shown_any_ ? "\n\n" : "";
  if (part != part_) shown_any_ = false;
  part_ = part;
  trim_leading_ = true;
}

ReplyPiece ReplyFilter::shown(std::string_view piece, ReplyPart part) {
  if (trim_leading_) {
    size_t b = 0;
    while (b < piece.size() && is_space(piece[b])) ++b;
    piece.remove_prefix(b);
    if (piece.empty()) return {{}, part};
    trim_leading_ = false;
  }
  std::string text = std::move(held_);
  held_.clear();
  if (part == ReplyPart::kReasoning) {
    // Its trailing whitespace waits for more reasoning: the blank line before </think> is not shown.
    size_t e = piece.size();
    while (e > 0 && is_space(piece[e - 1])) --e;
    held_ = piece.substr(e);
    piece = piece.substr(0, e);
    if (piece.empty()) {
      held_ = text + held_;
      return {{}, part};
    }
  }
  text += piece;
  shown_any_ = shown_any_ || !text.empty();
  return {std::move(text), part};
}

ReplyPiece ReplyFilter::think(int32_t token, std::string_view piece) {
  // A marker that changes nothing (a second </think>) is hidden all the same.
  if (token == think_open_) {
    if (part_ != ReplyPart::kReasoning) enter(ReplyPart::kReasoning);
    return {{}, part_};
  }
  if (token == think_close_) {
    if (part_ != ReplyPart::kAnswer) {
      held_.clear();
      enter(ReplyPart::kAnswer);
    }
    return {{}, part_};
  }
  return shown(piece, part_);
}

ReplyPiece ReplyFilter::harmony(int32_t token, std::string_view piece) {
  switch (state_) {
    case State::kStart:  // the prompt ended with "<|start|>assistant"
      if (token == channel_) {
        state_ = State::kChannel;
        channel_name_.clear();
        return {};
      }
      state_ = State::kBody;  // no header: plain text, all answer, shown as it is (an <|end|> still ends it)
      body_ = Channel::kAnswer;
      return harmony(token, piece);
    case State::kRole:  // after <|start|>: "assistant", then a header
      if (token == channel_) {
        state_ = State::kChannel;
        channel_name_.clear();
      }
      return {};
    case State::kChannel:  // "final", "analysis", "commentary" (a constraint may follow)
      if (token == message_) {
        const size_t b = channel_name_.find_first_not_of(' ');
        const std::string_view name = b == std::string::npos ? "" : std::string_view(channel_name_).substr(b);
        body_ = name.starts_with("final")      ? Channel::kAnswer
                : name.starts_with("analysis") ? Channel::kReasoning
                                               : Channel::kHidden;
        if (body_ != Channel::kHidden) enter(body_ == Channel::kAnswer ? ReplyPart::kAnswer : ReplyPart::kReasoning);
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
      if (token == start_ || token == channel_ || token == message_ || body_ == Channel::kHidden) return {};
      return shown(piece, part_);
  }
  return {};
}

}  // namespace hearth::runtime
