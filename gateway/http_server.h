// HTTP/1.1 on Boost.Beast: an acceptor and its connections, all on one Asio thread (the
// gateway's). A connection reads one request at a time and hands it to the handler, which
// answers at once or later (a generation), whole or as a chunked stream.
//
// While a request waits for the head, the connection keeps a read pending on the socket: that is
// how a client that goes away is noticed even before anything is written to it, so its
// generation can be cancelled. Such responses close the connection when they end.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>  // before Asio: Boost 1.74 uses std::exchange without including it
#include <vector>

// GCC 12 with -O3 and the sanitizers sees a false "maybe uninitialized" optional in Beast's parser.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#pragma GCC diagnostic pop

#include "gateway/response_sink.h"

namespace hearth::http {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using Request = boost::beast::http::request<boost::beast::http::string_body>;

// Largest request body accepted; a larger one gets 413.
constexpr size_t kMaxRequestBody = 8u << 20;

class HttpConnection : public ResponseSink, public std::enable_shared_from_this<HttpConnection> {
 public:
  using Handler = std::function<void(const std::shared_ptr<HttpConnection>&)>;
  // Told of every response status, with the route label the handler set (for /metrics).
  using Observer = std::function<void(const std::string& route, int status)>;

  HttpConnection(tcp::socket socket, const Handler& handler, const Observer& observer);
  void start();

  const Request& request() const { return *request_; }
  // A short name of the route for metrics ("/v1/chat/completions", "other"...).
  void set_route(std::string route) { route_ = std::move(route); }
  std::string peer() const override { return peer_; }
  bool open() const { return open_; }

  // A whole response. Keeps the connection alive when the client allows it and no disconnect
  // watch was started.
  void respond(int status, const std::string& content_type, std::string body, const Headers& extra = {}) override;
  void respond_error(int status, const std::string& message, const std::string& code, const std::string& param = "") override;
  // A chunked response: headers now, then chunks, then the end. The connection closes after it.
  void start_stream(int status, const std::string& content_type, const Headers& extra = {}) override;
  void send_chunk(const std::string& data) override;
  void end_stream() override;
  // Calls on_gone (once) if the client closes the connection before the response has ended.
  void watch_disconnect(std::function<void()> on_gone);

 private:
  void read_request();
  void read_body();
  void on_request(boost::beast::error_code ec);
  void watch();
  void queue(std::string bytes, bool last);
  void write_next();
  void gone();
  void close();
  std::string status_line_and_headers(int status, const std::string& content_type, const Headers& extra, bool keep_alive,
                                      std::optional<size_t> content_length) const;

  boost::beast::tcp_stream stream_;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  std::optional<Request> request_;
  const Handler& handler_;
  const Observer& observer_;
  std::string peer_;
  std::string route_ = "other";
  std::deque<std::string> out_;
  bool writing_ = false;
  bool close_after_write_ = false;  // the last queued bytes end the connection
  bool keep_alive_after_write_ = false;
  bool watching_ = false;
  bool responded_ = false;
  bool open_ = true;
  std::function<void()> on_gone_;
  char watch_byte_ = 0;
};

class HttpServer {
 public:
  // Binds HOST:PORT (PORT 0: any free port); throws std::runtime_error with an actionable
  // message when it cannot.
  HttpServer(net::io_context& io, const std::string& host_port, HttpConnection::Handler handler,
             HttpConnection::Observer observer);
  void start();
  void stop();
  // HOST:PORT actually bound.
  std::string address() const;

 private:
  void accept();
  // After a failed accept (out of file descriptors, say): accept again later, not at once,
  // so the loop neither spins on the error nor floods the log with it.
  void accept_later(const boost::beast::error_code& ec);

  net::io_context& io_;
  tcp::acceptor acceptor_;
  net::steady_timer backoff_;
  std::chrono::milliseconds backoff_delay_{0};
  uint64_t failed_accepts_ = 0;
  HttpConnection::Handler handler_;
  HttpConnection::Observer observer_;
};

}  // namespace hearth::http
