#include "gateway/http_client.h"

#include "transport/sockets.h"

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <utility>  // before Asio: Boost 1.74 uses std::exchange without including it

// GCC 12 with -O3 and the sanitizers sees a false "maybe uninitialized" optional in Beast's parser.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#pragma GCC diagnostic pop

namespace hearth::http {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;

namespace {

bhttp::request<bhttp::string_body> make_request(bhttp::verb verb, const std::string& host, const std::string& path,
                                                const std::string& body, const std::string& api_key) {
  bhttp::request<bhttp::string_body> r{verb, path, 11};
  r.set(bhttp::field::host, host);
  r.set(bhttp::field::user_agent, "hearth-cli");
  if (!api_key.empty()) r.set(bhttp::field::authorization, "Bearer " + api_key);
  if (verb == bhttp::verb::post) {
    r.set(bhttp::field::content_type, "application/json");
    r.body() = body;
    r.prepare_payload();
  }
  r.keep_alive(false);
  return r;
}

class Connection {
 public:
  Connection(const std::string& base, const std::string& host, const std::string& port) : socket_(io_) {
    beast::error_code ec;
    tcp::resolver resolver(io_);
    const auto results = resolver.resolve(host, port, ec);
    if (!ec) net::connect(socket_, results, ec);
    if (ec)
      throw std::runtime_error("cannot reach " + base + ": " + ec.message() + " (is hearthd --head running there with --http?)");
  }
  ~Connection() {
    beast::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
  }
  tcp::socket& socket() { return socket_; }

 private:
  net::io_context io_;
  tcp::socket socket_;
};

HttpResponse simple(const std::string& base, const std::string& host, const std::string& port,
                    bhttp::request<bhttp::string_body> req) {
  Connection c(base, host, port);
  bhttp::write(c.socket(), req);
  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(64u << 20);
  bhttp::read(c.socket(), buffer, parser);
  const auto& res = parser.get();
  return {static_cast<int>(res.result_int()), std::string(res[bhttp::field::content_type]), res.body()};
}

}  // namespace

HttpClient::HttpClient(const std::string& base_url, std::string api_key) : api_key_(std::move(api_key)) {
  std::string rest = base_url;
  if (rest.rfind("https://", 0) == 0)
    throw std::invalid_argument("'" + base_url + "': https is not supported; use http://HOST:PORT");
  if (rest.rfind("http://", 0) == 0) rest = rest.substr(7);
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.find('/') != std::string::npos)
    throw std::invalid_argument("'" + base_url + "' has a path: give only http://HOST:PORT");
  const auto hp = transport::split_host_port(rest);
  const bool bare_host = !hp && !rest.empty() && rest.back() != ']' && rest.find(':') == std::string::npos;
  if ((!hp && !bare_host) || (hp && hp->host.empty())) throw std::invalid_argument("'" + base_url + "' is not http://HOST:PORT");
  host_ = transport::unbracketed(hp ? hp->host : rest);
  port_ = hp ? std::to_string(hp->port) : "80";
  base_url_ = "http://" + rest;
}

HttpResponse HttpClient::get(const std::string& path) const {
  return simple(base_url_, host_, port_, make_request(bhttp::verb::get, host_, path, "", api_key_));
}

HttpResponse HttpClient::post(const std::string& path, const std::string& json_body) const {
  return simple(base_url_, host_, port_, make_request(bhttp::verb::post, host_, path, json_body, api_key_));
}

HttpResponse HttpClient::post_stream(const std::string& path, const std::string& json_body,
                                     const std::function<bool(std::string_view)>& on_data,
                                     const std::function<bool()>& keep_going) const {
  Connection c(base_url_, host_, port_);
  // A signal (Ctrl-C) interrupts a blocking call: go on if keep_going says so, else give up
  // quietly (status 0 if nothing came yet); closing the connection cancels the generation.
  const auto retry = [&](const beast::error_code& ec) { return ec == net::error::interrupted && keep_going && keep_going(); };
  const auto stopped = [&](const beast::error_code& ec) { return ec == net::error::interrupted; };
  beast::error_code ec;
  auto request = make_request(bhttp::verb::post, host_, path, json_body, api_key_);
  bhttp::request_serializer<bhttp::string_body> serializer(request);
  do {
    bhttp::write(c.socket(), serializer, ec);
  } while (retry(ec));
  if (stopped(ec)) return {};
  if (ec) throw beast::system_error(ec);
  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::buffer_body> parser;
  // Not boost::none: Boost 1.74 compares a Content-Length with an empty optional as "over the limit".
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  do {
    bhttp::read_header(c.socket(), buffer, parser, ec);
  } while (retry(ec));
  if (stopped(ec)) return {};
  if (ec) throw beast::system_error(ec);
  HttpResponse out;
  out.status = static_cast<int>(parser.get().result_int());
  out.content_type = std::string(parser.get()[bhttp::field::content_type]);
  const bool ok = out.status >= 200 && out.status < 300;
  char chunk[4096];
  while (!parser.is_done()) {
    parser.get().body().data = chunk;
    parser.get().body().size = sizeof chunk;
    bhttp::read_some(c.socket(), buffer, parser, ec);
    if (ec == bhttp::error::need_buffer) ec = {};
    if (retry(ec)) continue;
    if (stopped(ec)) return out;
    if (ec) throw beast::system_error(ec);
    const size_t n = sizeof chunk - parser.get().body().size;
    if (n == 0) continue;
    if (!ok) out.body.append(chunk, n);
    else if (!on_data(std::string_view(chunk, n))) return out;
  }
  return out;
}

}  // namespace hearth::http
