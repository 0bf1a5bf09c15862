#include "apps/hearth/head_client.h"

#include "apps/hearth/head_error.h"

#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <thread>

#include "transport/curve.h"
#include "transport/sockets.h"

namespace hearth::cli {

std::string default_head() {
  if (const char* h = std::getenv("HEARTH_HEAD")) return h;
  return "127.0.0.1:47400";
}

namespace {

// The data directory's identity, if it has one: its key pair and the head's public key.
std::optional<transport::CurveKeys> cli_keys(const std::string& data_dir, std::string& head_key) {
  const std::string dir = data_dir + "/keys";
  auto keys = transport::load_keys(dir);
  head_key = transport::read_first_line(dir + "/head.pub");
  if (!keys || !transport::is_z85_key(head_key)) return std::nullopt;
  return keys;
}

// Not yet connected: the monitor must be attached first (see SocketFactory::dealer).
zmq::socket_t dealer(zmq::context_t& context, const std::string& endpoint, const HeadTarget& t) {
  std::string head_key;
  auto keys = cli_keys(t.data_dir, head_key);
  return transport::SocketFactory(context, keys)
      .dealer(endpoint, "cli-" + std::to_string(std::random_device{}()),
              {.max_message_bytes = 64 << 20, .server_key = head_key});
}

// A PAIR socket that receives `socket`'s connection events.
zmq::socket_t monitor(zmq::context_t& context, zmq::socket_t& socket) {
  const std::string address = "inproc://cli-monitor-" + std::to_string(std::random_device{}());
  const int events = ZMQ_EVENT_CONNECT_RETRIED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                     ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL;
  if (zmq_socket_monitor(socket.handle(), address.c_str(), events) != 0) throw zmq::error_t();
  zmq::socket_t pair(context, zmq::socket_type::pair);
  pair.connect(address);
  return pair;
}

// The next event on a monitor socket, or 0 when none is waiting.
uint16_t next_event(zmq::socket_t& monitor) {
  zmq::message_t event, address;
  if (!monitor.recv(event, zmq::recv_flags::dontwait)) return 0;
  if (event.more()) (void)monitor.recv(address);
  uint16_t id = 0;
  if (event.size() >= sizeof id) std::memcpy(&id, event.data(), sizeof id);
  return id;
}

}  // namespace

HeadClient::HeadClient(const HeadTarget& target)
    : endpoint_(transport::tcp_endpoint(target.head)),
      data_dir_(target.data_dir),
      socket_(dealer(context_, endpoint_, target)),
      monitor_(monitor(context_, socket_)),
      next_id_(std::random_device{}()) {
  socket_.connect(endpoint_);
  std::string head_key;
  has_keys_ = cli_keys(data_dir_, head_key).has_value();
}

HeadClient::~HeadClient() = default;

void HeadClient::request(capnp::MessageBuilder& message, const std::function<bool(transport::wire::Envelope::Reader)>& on_reply,
                         std::chrono::milliseconds timeout) {
  const uint64_t id = ++next_id_;
  message.getRoot<transport::wire::Envelope>().setRequestId(id);
  send_when_connected(message, timeout);
  for (;;) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, timeout);
    if (!(item.revents & ZMQ_POLLIN)) throw std::runtime_error("the head at " + endpoint_ + " did not answer in time");
    const auto parts = transport::receive_multipart(socket_);  // a reply has no payload frame: any is dropped
    if (parts.empty()) continue;
    const transport::Decoded d = transport::decode(parts[0]);
    const auto env = d.envelope();
    if (env.isError() && (env.getRequestId() == 0 || env.getRequestId() == id))
      throw HeadError(env.getError().getCategory(), std::string("head: ") + env.getError().getMessage().cStr());
    if (env.getRequestId() != id) continue;
    if (!on_reply(env)) return;
  }
}

void HeadClient::send_when_connected(capnp::MessageBuilder& message, std::chrono::milliseconds timeout) {
  using transport::wire::ErrorCategory;
  // ZMQ_IMMEDIATE holds the message until the connection is up. Meanwhile the monitor says why
  // it is not: refused connections (nothing listens) or a handshake the head refused.
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + timeout;
  bool retried = false, handshake = false;
  const std::string keys = data_dir_ + "/keys";
  while (!socket_.send(transport::encode(message), zmq::send_flags::dontwait)) {
    for (uint16_t e; (e = next_event(monitor_)) != 0;) {
      if (e == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) handshake = true;
      if (e == ZMQ_EVENT_CONNECT_RETRIED) retried = true;
      if (e == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
        throw HeadError(ErrorCategory::UNAUTHORIZED, "the head at " + endpoint_ + " refused this CLI's key (" + keys +
                                                         "): pass --data-dir of the head, or of a device paired with it");
      if (e == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL || e == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        throw HeadError(ErrorCategory::UNAUTHORIZED,
                        has_keys_
                            ? "the head at " + endpoint_ + " does not speak CURVE (--insecure?) with this CLI's keys in " + keys
                            : "the head at " + endpoint_ + " encrypts (CURVE) and this CLI has no keys in " + keys +
                                  ": pass --data-dir of the head, or of a device paired with it");
    }
    const auto now = std::chrono::steady_clock::now();
    if ((retried && !handshake && now - start > std::chrono::seconds(1)) || now > deadline)
      throw HeadError(ErrorCategory::UNAVAILABLE,
                      "cannot reach the head at " + endpoint_ + ": " + (retried ? "nothing listens there" : "no answer") +
                          " (is hearthd --head running there? --head HOST:PORT or $HEARTH_HEAD say where)");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace hearth::cli
