// Where one HTTP response goes: what a Completion needs of its connection, whole or streamed.
// HttpConnection is the real one; a test records what is written, with no socket.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace hearth::http {

using Headers = std::vector<std::pair<std::string, std::string>>;

class ResponseSink {
 public:
  virtual ~ResponseSink() = default;

  virtual std::string peer() const = 0;  // who asked, for logs
  virtual void respond(int status, const std::string& content_type, std::string body, const Headers& extra) = 0;
  virtual void respond_error(int status, const std::string& message, const std::string& code, const std::string& param) = 0;
  // A chunked response: headers now, then chunks, then the end.
  virtual void start_stream(int status, const std::string& content_type, const Headers& extra) = 0;
  virtual void send_chunk(const std::string& data) = 0;
  virtual void end_stream() = 0;
};

}  // namespace hearth::http
