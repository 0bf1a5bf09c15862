// Server-Sent Events: the framing of streamed OpenAI responses. Each event is "data: TEXT"
// followed by a blank line; the stream ends with "data: [DONE]".
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace hearth::http {

// One event carrying `data` (a line break inside it becomes another "data:" line, as the
// format requires).
std::string sse_event(std::string_view data);

// Splits a byte stream into events, whatever the chunking of the bytes; the client side.
class SseParser {
 public:
  // Calls on_event with the data of every event completed by these bytes (the "data:" lines of
  // one event joined by '\n'; comments and other fields are skipped).
  void push(std::string_view bytes, const std::function<void(const std::string& data)>& on_event);

 private:
  std::string line_;  // the incomplete line so far
  std::string data_;  // the event's data so far
  bool has_data_ = false;
};

}  // namespace hearth::http
