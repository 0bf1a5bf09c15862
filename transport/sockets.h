// The one place where ZeroMQ sockets are made, so that every socket gets the project's options
// (and, when security arrives, CURVE keys and the ZAP domain) in the same way.
//
// Roles: every daemon binds a ROUTER (control: requests, registration, weights) and a PULL (data:
// activations in); it connects DEALERs to other daemons' ROUTERs and a PUSH to the next stage's
// PULL. A socket belongs to the thread that made it.
#pragma once

#include <cstdint>
#include <string>
#include <zmq.hpp>

namespace hearth::transport {

struct SocketOptions {
  int64_t max_message_bytes = -1;  // ZMQ_MAXMSGSIZE on receiving sockets; -1 = unlimited
  int send_hwm = 1000;             // messages queued before send blocks or drops
  int receive_hwm = 1000;
};

class SocketFactory {
 public:
  explicit SocketFactory(zmq::context_t& context) : context_(context) {}

  zmq::socket_t bind_router(const std::string& endpoint, const SocketOptions& options) const;
  zmq::socket_t bind_pull(const std::string& endpoint, const SocketOptions& options) const;
  zmq::socket_t connect_dealer(const std::string& endpoint, const std::string& identity, const SocketOptions& options) const;
  zmq::socket_t connect_push(const std::string& endpoint, const SocketOptions& options) const;
  zmq::context_t& context() const { return context_; }

 private:
  void apply_common(zmq::socket_t& s, const SocketOptions& options) const;
  zmq::context_t& context_;
};

// "host:port" or "tcp://host:port" -> "tcp://host:port"; throws std::invalid_argument if it is
// neither.
std::string tcp_endpoint(const std::string& host_port);
// The port of "tcp://host:port" (0 if none).
int endpoint_port(const std::string& endpoint);
// Same host, another port.
std::string with_port(const std::string& endpoint, int port);

}  // namespace hearth::transport
