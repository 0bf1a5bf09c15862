// Prints a chat reply to stdout as it streams in: the answer as it is, and a reasoning model's
// reasoning before it, dimmed, on a terminal only. A pipe gets only the answer (what a script
// wants of `hearth chat` or `hearth run --chat`), and --hide-reasoning hides it on a terminal too.
#pragma once

#include <string_view>

namespace hearth::cli {

class ReplyPrinter {
 public:
  // `show_reasoning`: the user did not ask to hide it; it is shown only if stdout is a terminal.
  explicit ReplyPrinter(bool show_reasoning);
  ReplyPrinter(const ReplyPrinter&) = delete;
  ReplyPrinter& operator=(const ReplyPrinter&) = delete;
  ~ReplyPrinter() { end(); }

  void answer(std::string_view text);
  void reasoning(std::string_view text);
  // Ends the reasoning's style if the reply stopped inside it.
  void end();

 private:
  void write(std::string_view text);

  bool tty_;
  bool show_reasoning_;
  bool in_reasoning_ = false;
};

}  // namespace hearth::cli
