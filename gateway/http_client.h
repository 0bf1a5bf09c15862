// A small blocking HTTP/1.1 client (Boost.Beast) for `hearth chat` and the tests: the same
// HTTP API every other client uses, one connection per request.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace hearth::http {

struct HttpResponse {
  int status = 0;
  std::string content_type;
  std::string body;  // for a streamed request: only when the status is not 2xx
};

class HttpClient {
 public:
  // `base_url` is http://HOST:PORT (https is not supported); `api_key` is sent as a Bearer
  // token when not empty. Throws std::invalid_argument for a malformed URL.
  HttpClient(const std::string& base_url, std::string api_key);

  HttpResponse get(const std::string& path) const;
  HttpResponse post(const std::string& path, const std::string& json_body) const;
  // POST, then on_data for every piece of a 2xx body as it arrives; on_data returns false to
  // stop reading (the connection is closed, which makes the server cancel). `keep_going` is
  // asked when a read or write is interrupted by a signal: false stops too (status 0 if no
  // answer had come yet).
  HttpResponse post_stream(const std::string& path, const std::string& json_body,
                           const std::function<bool(std::string_view)>& on_data,
                           const std::function<bool()>& keep_going = {}) const;

  const std::string& base_url() const { return base_url_; }

 private:
  std::string base_url_, host_, port_, api_key_;
};

}  // namespace hearth::http
