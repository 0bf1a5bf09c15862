#include "apps/hearth/reply_printer.h"

#include <unistd.h>

#include <cstdio>

namespace hearth::cli {

namespace {

constexpr std::string_view kDim = "\033[2m", kPlain = "\033[0m";

}  // namespace

ReplyPrinter::ReplyPrinter(bool show_reasoning) : tty_(::isatty(1) != 0), show_reasoning_(show_reasoning && tty_) {}

void ReplyPrinter::write(std::string_view text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

void ReplyPrinter::reasoning(std::string_view text) {
  if (!show_reasoning_ || text.empty()) return;
  if (!in_reasoning_) write(kDim);
  in_reasoning_ = true;
  write(text);
}

void ReplyPrinter::answer(std::string_view text) {
  if (text.empty()) return;
  if (in_reasoning_) {
    end();
    write("\n\n");  // the reply's filter dropped the blank lines around the reasoning
  }
  write(text);
}

void ReplyPrinter::end() {
  if (!in_reasoning_) return;
  in_reasoning_ = false;
  write(kPlain);
}

}  // namespace hearth::cli
