#include "transport/discovery.h"

#include <spdlog/spdlog.h>

#include <sstream>

#include "transport/printable.h"

namespace hearth::transport {

namespace asio = boost::asio;
using asio::ip::udp;

std::string encode_beacon(const Beacon& b) {
  return "hearth/1 " + b.node_id + " " + std::to_string(b.control_port) + (b.is_head ? " head" : " node");
}

std::optional<Beacon> decode_beacon(std::string_view packet) {
  if (packet.size() > 128) return std::nullopt;
  std::istringstream in{std::string(packet)};
  std::string magic, id, port, role, extra;
  if (!(in >> magic >> id >> port >> role) || (in >> extra)) return std::nullopt;
  if (magic != "hearth/1" || !valid_node_id(id) || (role != "head" && role != "node")) return std::nullopt;
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  const int p = std::stoi(port);
  if (p <= 0 || p > 65535) return std::nullopt;
  return Beacon{id, p, role == "head"};
}

Discovery::Discovery(asio::io_context& io, DiscoveryOptions options, Beacon self, Callback on_beacon)
    : options_(std::move(options)),
      self_(std::move(self)),
      on_beacon_(std::move(on_beacon)),
      send_socket_(io),
      receive_socket_(io),
      timer_(io) {}

void Discovery::start() {
  send_socket_.open(udp::v4());
  send_socket_.set_option(asio::socket_base::broadcast(true));
  receive_socket_.open(udp::v4());
  // Several daemons on one machine all listen on the beacon port.
  receive_socket_.set_option(asio::socket_base::reuse_address(true));
  const int listen = options_.listen_port > 0 ? options_.listen_port : options_.port;
  receive_socket_.bind(udp::endpoint(asio::ip::address_v4::any(), static_cast<unsigned short>(listen)));
  receive();
  send_beacon();
}

void Discovery::stop() {
  timer_.cancel();
  boost::system::error_code ec;
  send_socket_.close(ec);
  receive_socket_.close(ec);
}

void Discovery::send_beacon() {
  const std::string packet = encode_beacon(self_);
  boost::system::error_code ec;
  const udp::endpoint to(asio::ip::make_address(options_.send_to, ec), static_cast<unsigned short>(options_.port));
  if (!ec) send_socket_.send_to(asio::buffer(packet), to, 0, ec);
  if (ec) spdlog::debug("discovery: beacon not sent: {}", ec.message());
  timer_.expires_after(options_.interval);
  timer_.async_wait([this](const boost::system::error_code& e) {
    if (!e) send_beacon();
  });
}

void Discovery::receive() {
  receive_socket_.async_receive_from(asio::buffer(buffer_), sender_, [this](const boost::system::error_code& ec, size_t n) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) {
      const auto b = decode_beacon(std::string_view(buffer_.data(), n));
      if (b && b->node_id != self_.node_id) on_beacon_(*b, sender_.address().to_string());
    }
    receive();
  });
}

}  // namespace hearth::transport
