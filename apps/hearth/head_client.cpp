#include "apps/hearth/head_client.h"

#include "apps/hearth/head_error.h"

#include <cstdlib>
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

zmq::socket_t connect(zmq::context_t& context, const std::string& endpoint, const HeadTarget& t) {
  std::string head_key;
  auto keys = cli_keys(t.data_dir, head_key);
  return transport::SocketFactory(context, keys)
      .connect_dealer(endpoint, "cli-" + std::to_string(std::random_device{}()),
                      {.max_message_bytes = 64 << 20, .server_key = head_key});
}

}  // namespace

HeadClient::HeadClient(const HeadTarget& target)
    : endpoint_(transport::tcp_endpoint(target.head)),
      data_dir_(target.data_dir),
      socket_(connect(context_, endpoint_, target)),
      next_id_(std::random_device{}()) {}

HeadClient::~HeadClient() = default;

void HeadClient::request(capnp::MessageBuilder& message, const std::function<bool(transport::wire::Envelope::Reader)>& on_reply,
                         std::chrono::milliseconds timeout) {
  const uint64_t id = ++next_id_;
  message.getRoot<transport::wire::Envelope>().setRequestId(id);
  // ZMQ_IMMEDIATE holds the message until the connection is up; wait for that up to the timeout.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!socket_.send(transport::encode(message), zmq::send_flags::dontwait)) {
    if (std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error("cannot reach the head at " + endpoint_ +
                               " (is hearthd --head running there? This CLI authenticates with the keys in " + data_dir_ +
                               "/keys: pass --data-dir of the head or of a paired device)");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (;;) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, timeout);
    if (!(item.revents & ZMQ_POLLIN)) throw std::runtime_error("the head at " + endpoint_ + " did not answer in time");
    zmq::message_t frame;
    if (!socket_.recv(frame)) continue;
    while (frame.more()) {  // a reply never has a payload frame; drain anything unexpected
      zmq::message_t extra;
      (void)socket_.recv(extra);
      if (!extra.more()) break;
    }
    const transport::Decoded d = transport::decode(frame);
    const auto env = d.envelope();
    if (env.isError() && (env.getRequestId() == 0 || env.getRequestId() == id))
      throw HeadError(env.getError().getCategory(), std::string("head: ") + env.getError().getMessage().cStr());
    if (env.getRequestId() != id) continue;
    if (!on_reply(env)) return;
  }
}

}  // namespace hearth::cli
