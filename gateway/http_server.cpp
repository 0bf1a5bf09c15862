#include "gateway/http_server.h"

#include "transport/sockets.h"

#include <spdlog/spdlog.h>

#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/read.hpp>
#include <algorithm>
#include <cstdio>

#include "gateway/openai_api.h"

namespace hearth::http {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

namespace {

// How long an idle keep-alive connection, or a slow client sending its request, may take.
constexpr auto kRequestTimeout = std::chrono::seconds(60);

const Headers kCors = {{"Access-Control-Allow-Origin", "*"},
                       {"Access-Control-Allow-Headers", "Authorization, Content-Type"},
                       {"Access-Control-Allow-Methods", "GET, POST, OPTIONS"}};

std::pair<std::string, std::string> listen_address(const std::string& host_port) {
  const auto hp = transport::split_host_port(host_port);
  if (!hp) throw std::invalid_argument("--http '" + host_port + "' is not HOST:PORT (e.g. 0.0.0.0:8080)");
  const std::string host = transport::unbracketed(hp->host);
  return {host.empty() ? "0.0.0.0" : host, std::to_string(hp->port)};
}

}  // namespace

HttpConnection::HttpConnection(tcp::socket socket, const Handler& handler, const Observer& observer)
    : stream_(std::move(socket)), handler_(handler), observer_(observer) {
  beast::error_code ec;
  const auto ep = stream_.socket().remote_endpoint(ec);
  peer_ = ec ? "?" : ep.address().to_string() + ":" + std::to_string(ep.port());
}

void HttpConnection::start() { read_request(); }

void HttpConnection::read_request() {
  parser_.emplace();
  parser_->body_limit(kMaxRequestBody);
  request_.reset();
  route_ = "other";
  responded_ = false;
  watching_ = false;
  on_gone_ = nullptr;
  stream_.expires_after(kRequestTimeout);
  bhttp::async_read_header(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
    if (ec || self->parser_->is_done()) return self->on_request(ec);
    // curl and others wait (a second) for "100 Continue" before sending a larger body.
    const auto& req = self->parser_->get();
    const auto expect = req.find(bhttp::field::expect);
    if (expect != req.end() && beast::iequals(expect->value(), "100-continue")) {
      auto interim = std::make_shared<std::string>("HTTP/1.1 100 Continue\r\n\r\n");
      net::async_write(self->stream_.socket(), net::buffer(*interim), [self, interim](beast::error_code wec, size_t) {
        if (wec) return self->on_request(wec);
        self->read_body();
      });
      return;
    }
    self->read_body();
  });
}

void HttpConnection::read_body() {
  bhttp::async_read(stream_, buffer_, *parser_,
                    [self = shared_from_this()](beast::error_code ec, size_t) { self->on_request(ec); });
}

void HttpConnection::on_request(beast::error_code ec) {
  if (!open_) return;
  if (ec == bhttp::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset ||
      ec == beast::error::timeout || ec == net::error::operation_aborted) {
    close();
    return;
  }
  if (ec) {
    // Nothing more can be read reliably after a framing error: answer and close.
    const int status = ec == bhttp::error::body_limit ? 413 : 400;
    const std::string message = status == 413 ? "the request body is larger than " + std::to_string(kMaxRequestBody >> 20) + " MB"
                                              : "malformed HTTP request: " + ec.message();
    responded_ = true;
    const std::string body = error_body(status, message, status == 413 ? "request_too_large" : "bad_request");
    queue(status_line_and_headers(status, "application/json", kCors, false, body.size()) + body, true);
    observer_(route_, status);
    return;
  }
  stream_.expires_never();
  request_.emplace(parser_->release());
  if (request_->method() == bhttp::verb::options) {  // a browser's CORS preflight
    Headers h = kCors;
    h.emplace_back("Access-Control-Max-Age", "86400");
    respond(204, "text/plain", "", h);
    return;
  }
  handler_(shared_from_this());
}

void HttpConnection::watch_disconnect(std::function<void()> on_gone) {
  on_gone_ = std::move(on_gone);
  if (watching_ || !open_) return;
  watching_ = true;
  watch();
}

void HttpConnection::watch() {
  // A client waiting for its response sends nothing, so this completes only when it closes (or
  // pipelines another request, which this connection will not serve: its response closes it).
  stream_.socket().async_read_some(net::buffer(&watch_byte_, 1), [self = shared_from_this()](beast::error_code ec, size_t) {
    if (!self->open_) return;
    if (ec) {
      self->gone();
      return;
    }
    self->watch();
  });
}

void HttpConnection::gone() {
  if (!open_) return;
  auto on_gone = std::move(on_gone_);
  on_gone_ = nullptr;
  close();
  if (on_gone) on_gone();
}

std::string HttpConnection::status_line_and_headers(int status, const std::string& content_type, const Headers& extra,
                                                    bool keep_alive, std::optional<size_t> content_length) const {
  std::string h = "HTTP/1.1 " + std::to_string(status) + " " +
                  std::string(bhttp::obsolete_reason(static_cast<bhttp::status>(status))) + "\r\n";
  h += "Server: hearth\r\n";
  if (!content_type.empty()) h += "Content-Type: " + content_type + "\r\n";
  if (content_length) h += "Content-Length: " + std::to_string(*content_length) + "\r\n";
  else h += "Transfer-Encoding: chunked\r\n";
  h += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  bool has_cors = false;
  for (const auto& [k, v] : extra) {
    h += k + ": " + v + "\r\n";
    if (k == "Access-Control-Allow-Origin") has_cors = true;
  }
  if (!has_cors) h += "Access-Control-Allow-Origin: *\r\n";
  h += "\r\n";
  return h;
}

void HttpConnection::respond(int status, const std::string& content_type, std::string body, const Headers& extra) {
  if (!open_ || responded_) return;
  responded_ = true;
  const bool keep_alive = request_ && request_->keep_alive() && !watching_;
  const bool head = request_ && request_->method() == bhttp::verb::head;
  std::string bytes = status_line_and_headers(status, content_type, extra, keep_alive, body.size());
  if (!head) bytes += body;
  observer_(route_, status);
  keep_alive_after_write_ = keep_alive;
  queue(std::move(bytes), !keep_alive);
}

void HttpConnection::respond_error(int status, const std::string& message, const std::string& code, const std::string& param) {
  respond(status, "application/json", error_body(status, message, code, param));
}

void HttpConnection::start_stream(int status, const std::string& content_type, const Headers& extra) {
  if (!open_ || responded_) return;
  responded_ = true;
  Headers h = extra;
  h.emplace_back("Cache-Control", "no-cache");
  h.emplace_back("X-Accel-Buffering", "no");  // a reverse proxy must not hold the tokens back
  observer_(route_, status);
  queue(status_line_and_headers(status, content_type, h, false, std::nullopt), false);
}

void HttpConnection::send_chunk(const std::string& data) {
  if (!open_ || data.empty()) return;
  char size[20];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  queue(size + data + "\r\n", false);
}

void HttpConnection::end_stream() {
  if (!open_) return;
  on_gone_ = nullptr;
  queue("0\r\n\r\n", true);
}

void HttpConnection::queue(std::string bytes, bool last) {
  if (close_after_write_) return;
  out_.push_back(std::move(bytes));
  if (last) close_after_write_ = true;
  if (!writing_) write_next();
}

void HttpConnection::write_next() {
  if (out_.empty()) {
    writing_ = false;
    if (close_after_write_) {
      close();
    } else if (keep_alive_after_write_) {
      keep_alive_after_write_ = false;
      read_request();
    }
    return;
  }
  writing_ = true;
  net::async_write(stream_.socket(), net::buffer(out_.front()), [self = shared_from_this()](beast::error_code ec, size_t) {
    if (!self->open_) return;
    if (ec) {
      self->gone();
      return;
    }
    self->out_.pop_front();
    self->write_next();
  });
}

void HttpConnection::close() {
  if (!open_) return;
  open_ = false;
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
  stream_.socket().close(ec);
}

HttpServer::HttpServer(net::io_context& io, const std::string& host_port, HttpConnection::Handler handler,
                       HttpConnection::Observer observer)
    : io_(io), acceptor_(io), backoff_(io), handler_(std::move(handler)), observer_(std::move(observer)) {
  const auto [host, port] = listen_address(host_port);
  beast::error_code ec;
  tcp::resolver resolver(io);
  const auto results = resolver.resolve(host, port, tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || results.empty()) throw std::runtime_error("--http " + host_port + ": cannot resolve '" + host + "': " + ec.message());
  const tcp::endpoint ep = *results.begin();
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    throw std::runtime_error(
        "cannot serve HTTP on " + host_port + ": " + ec.message() +
        (ec == net::error::address_in_use ? " (another program uses the port: pick another with --http HOST:PORT)" : ""));
}

std::string HttpServer::address() const {
  const auto ep = acceptor_.local_endpoint();
  const std::string host = ep.address().to_string();
  return (ep.address().is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(ep.port());
}

void HttpServer::start() { accept(); }

void HttpServer::stop() {
  beast::error_code ec;
  acceptor_.close(ec);
  backoff_.cancel();
}

void HttpServer::accept() {
  acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
    if (ec) return accept_later(ec);
    backoff_delay_ = std::chrono::milliseconds(0);
    beast::error_code nd;
    socket.set_option(tcp::no_delay(true), nd);  // one token per write: do not wait to coalesce
    std::make_shared<HttpConnection>(std::move(socket), handler_, observer_)->start();
    accept();
  });
}

void HttpServer::accept_later(const beast::error_code& ec) {
  // 10 ms doubling to 1 s: the connections open now finish and give back their descriptors.
  backoff_delay_ = std::min(std::chrono::milliseconds(1000), std::max(std::chrono::milliseconds(10), backoff_delay_ * 2));
  // Logged on the first failure of a run and then every 100th, not a million times a second.
  if (failed_accepts_++ % 100 == 0)
    spdlog::warn("http: cannot accept connections: {} (retrying in {} ms; {} failed so far)", ec.message(),
                 backoff_delay_.count(), failed_accepts_);
  backoff_.expires_after(backoff_delay_);
  backoff_.async_wait([this](const beast::error_code& wait) {
    if (!wait && acceptor_.is_open()) accept();
  });
}

}  // namespace hearth::http
