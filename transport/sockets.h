// The one place where ZeroMQ sockets are made, so that every socket gets the project's options,
// CURVE keys and ZAP domain in the same way.
//
// A factory made with keys makes CURVE sockets: bound sockets are servers with this daemon's key
// (the context's ZapHandler decides whom they admit, by `zap_domain`), connecting sockets are
// clients that must be told the server's public key (`server_key`) and refuse to connect
// without it. A factory made without keys (--insecure) makes plain sockets.
//
// Roles: every daemon binds a ROUTER (control: requests, registration, weights) and a PULL (data:
// activations in); it connects DEALERs to other daemons' ROUTERs and a PUSH to the next stage's
// PULL. A socket belongs to the thread that made it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "transport/curve.h"
#include "transport/zap.h"

namespace hearth::transport {

struct SocketOptions {
  int64_t max_message_bytes = -1;  // ZMQ_MAXMSGSIZE on receiving sockets; -1 = unlimited
  int send_hwm = 1000;             // messages queued before send blocks or drops
  int receive_hwm = 1000;
  std::string server_key;                   // connecting sockets: the peer's CURVE public key (Z85)
  const char* zap_domain = kMembersDomain;  // bound sockets: whom the ZAP handler admits
};

class SocketFactory {
 public:
  // Without keys: plain sockets (no encryption, anyone may connect). With keys, sockets that
  // bind need `zap`, the handler running in `context` (connect-only users pass none).
  explicit SocketFactory(zmq::context_t& context, std::optional<CurveKeys> keys = std::nullopt, const ZapHandler* zap = nullptr)
      : context_(context), keys_(std::move(keys)), zap_(zap) {}

  zmq::socket_t bind_router(const std::string& endpoint, const SocketOptions& options) const;
  zmq::socket_t bind_pull(const std::string& endpoint, const SocketOptions& options) const;
  zmq::socket_t connect_dealer(const std::string& endpoint, const std::string& identity, const SocketOptions& options) const;
  // connect_dealer's socket before its connect(), for a caller that must watch the connection
  // from its first event: a monitor attached after connect() can miss a failed handshake, and
  // libzmq never retries one, so the caller would wait for an answer that cannot come.
  zmq::socket_t dealer(const std::string& endpoint, const std::string& identity, const SocketOptions& options) const;
  zmq::socket_t connect_push(const std::string& endpoint, const SocketOptions& options) const;
  zmq::context_t& context() const { return context_; }
  bool secure() const { return keys_.has_value(); }
  const std::optional<CurveKeys>& keys() const { return keys_; }

 private:
  void apply_common(zmq::socket_t& s, const SocketOptions& options) const;
  void make_server(zmq::socket_t& s, const SocketOptions& options) const;
  void make_client(zmq::socket_t& s, const std::string& endpoint, const SocketOptions& options) const;
  zmq::context_t& context_;
  std::optional<CurveKeys> keys_;
  const ZapHandler* zap_;
};

// A metadata property of a received message ("Peer-Address", "User-Id" = the CURVE key ZAP
// admitted), or nullptr if the connection has none (cppzmq's gets() throws instead).
const char* message_property(zmq::message_t& message, const char* name);

// One multipart message, without blocking; empty when none is waiting.
std::vector<zmq::message_t> receive_multipart(zmq::socket_t& socket);
// Reads and drops whatever is waiting (at most `limit` messages, so a flood cannot hold the caller).
void drain(zmq::socket_t& socket, int limit = 1024);

// "HOST:PORT" (or "tcp://HOST:PORT"), split at the last colon; nullopt when there is none or the
// port is not a number from 0 to 65535. An IPv6 host keeps its brackets ("[::1]"), as ZeroMQ
// wants them; `unbracketed` drops them for resolvers that do not.
struct HostPort {
  std::string host;
  int port = 0;
};
std::optional<HostPort> split_host_port(const std::string& text);
std::string unbracketed(const std::string& host);

// "host:port" or "tcp://host:port" -> "tcp://host:port"; throws std::invalid_argument if it is
// neither.
std::string tcp_endpoint(const std::string& host_port);
// The port of "tcp://host:port" (0 if none).
int endpoint_port(const std::string& endpoint);
// The host of "tcp://host:port" or "host:port" ("" if none).
std::string endpoint_host(const std::string& endpoint);
// Same host, another port.
std::string with_port(const std::string& endpoint, int port);
// Same port, another host: "tcp://host:port".
std::string with_host(const std::string& endpoint, const std::string& host);

}  // namespace hearth::transport
