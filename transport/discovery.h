// LAN discovery: each daemon broadcasts a small UDP beacon (who it is, where its control socket
// listens, whether it is a head) and listens for the beacons of others. A beacon carries no
// secret: it only says where to connect, and joining is authenticated elsewhere.
//
// Runs on a Boost.Asio io_context owned by the caller; callbacks run on that context's thread.
#pragma once

#include <utility>  // before Asio: Boost 1.74 uses std::exchange without including it
#include <boost/asio.hpp>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace hearth::transport {

struct Beacon {
  std::string node_id;   // [A-Za-z0-9._-], at most 64 characters
  int control_port = 0;  // the sender's address comes from the UDP packet itself
  bool is_head = false;
};

// "hearth/1 <node_id> <port> head|node": text, so a packet capture reads plainly.
std::string encode_beacon(const Beacon& b);
// nullopt for anything that is not exactly a valid beacon.
std::optional<Beacon> decode_beacon(std::string_view packet);

struct DiscoveryOptions {
  int port = 47470;                         // UDP port beacons are sent to
  int listen_port = 0;                      // port beacons are heard on; 0 = `port`
  std::string send_to = "255.255.255.255";  // broadcast address (tests use 127.0.0.1)
  std::chrono::milliseconds interval{2000};
};

class Discovery {
 public:
  // on_beacon(beacon, sender_ip) for every valid beacon heard that is not our own.
  using Callback = std::function<void(const Beacon&, const std::string& sender_ip)>;
  Discovery(boost::asio::io_context& io, DiscoveryOptions options, Beacon self, Callback on_beacon);
  void start();
  void stop();

 private:
  void send_beacon();
  void receive();

  DiscoveryOptions options_;
  Beacon self_;
  Callback on_beacon_;
  boost::asio::ip::udp::socket send_socket_;
  boost::asio::ip::udp::socket receive_socket_;
  boost::asio::steady_timer timer_;
  boost::asio::ip::udp::endpoint sender_;
  std::array<char, 512> buffer_{};
};

}  // namespace hearth::transport
