// OpenAI's `stop` strings: the generated text is cut before the first occurrence of any of them.
// Text arrives token by token and a stop string can straddle tokens, so the tail that could
// still grow into a stop string is held back until the next piece decides it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace hearth::http {

class StopMatcher {
 public:
  // Empty strings are ignored.
  explicit StopMatcher(std::vector<std::string> stops);

  // Appends generated text (whole UTF-8 characters); returns what can be shown now. Once a stop
  // string is found, stopped() is true and nothing more is released.
  std::string push(std::string_view text);
  // At the end of the generation: the held-back tail (empty after a stop).
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace hearth::http
