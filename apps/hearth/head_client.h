// The controller's connection to a head: a DEALER on the head's control socket, requests with
// ids, replies matched by id.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "transport/codec.h"

namespace hearth::cli {

// Where the head is, and whose identity to talk to it with.
struct HeadTarget {
  std::string head;      // HOST:PORT
  std::string data_dir;  // a hearthd data directory on this machine (the head's, or a paired
                         // device's): its keys/ authenticate us; without keys, plain sockets
};

class HeadClient {
 public:
  // Nothing is sent until the first request.
  explicit HeadClient(const HeadTarget& target);
  ~HeadClient();

  // Sends a request (the builder's Envelope; its request id is set here) and calls on_reply
  // for every reply with that id until it returns false. Throws std::runtime_error naming the
  // head when nothing arrives within `timeout` between two replies.
  void request(capnp::MessageBuilder& message, const std::function<bool(transport::wire::Envelope::Reader)>& on_reply,
               std::chrono::milliseconds timeout = std::chrono::seconds(10));

 private:
  // Waits until the connection is up (the first request is sent then); throws HeadError saying
  // which of "nothing listens there" and "the head refused our key" it is, within about a second.
  void send_when_connected(capnp::MessageBuilder& message, std::chrono::milliseconds timeout);

  std::string endpoint_;
  std::string data_dir_;
  bool has_keys_ = false;
  zmq::context_t context_;
  zmq::socket_t socket_;
  zmq::socket_t monitor_;  // the socket's connection events (ZMQ_EVENT_*)
  uint64_t next_id_;
};

// The head to talk to: --head, else $HEARTH_HEAD, else 127.0.0.1:47400.
std::string default_head();

}  // namespace hearth::cli
