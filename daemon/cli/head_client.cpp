#include "daemon/cli/head_client.h"

#include <cstdlib>
#include <random>
#include <stdexcept>
#include <thread>

#include "transport/sockets.h"

namespace hearth::cli {

std::string default_head() {
  if (const char* h = std::getenv("HEARTH_HEAD")) return h;
  return "127.0.0.1:47400";
}

HeadClient::HeadClient(const std::string& head)
    : endpoint_(transport::tcp_endpoint(head)),
      socket_(transport::SocketFactory(context_).connect_dealer(endpoint_, "cli-" + std::to_string(std::random_device{}()),
                                                                {.max_message_bytes = 64 << 20})),
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
      throw std::runtime_error("cannot reach the head at " + endpoint_ + " (is hearthd --head running there?)");
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
    if (env.isError() && env.getRequestId() == 0) throw std::runtime_error(std::string("head: ") + env.getError().getMessage().cStr());
    if (env.getRequestId() != id) continue;
    if (env.isError()) throw std::runtime_error(std::string("head: ") + env.getError().getMessage().cStr());
    if (!on_reply(env)) return;
  }
}

}  // namespace hearth::cli
