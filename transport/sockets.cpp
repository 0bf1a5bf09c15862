#include "transport/sockets.h"

#include <iterator>
#include <stdexcept>
#include <zmq_addon.hpp>

namespace hearth::transport {

void SocketFactory::apply_common(zmq::socket_t& s, const SocketOptions& o) const {
  s.set(zmq::sockopt::linger, 0);  // never hang at exit on unsent messages
  s.set(zmq::sockopt::sndhwm, o.send_hwm);
  s.set(zmq::sockopt::rcvhwm, o.receive_hwm);
  if (o.max_message_bytes > 0) s.set(zmq::sockopt::maxmsgsize, o.max_message_bytes);
  // ZMTP heartbeats drop dead TCP peers even when the application is busy computing.
  s.set(zmq::sockopt::heartbeat_ivl, 1000);
  s.set(zmq::sockopt::heartbeat_timeout, 3000);
  s.set(zmq::sockopt::heartbeat_ttl, 3000);
}

void SocketFactory::make_server(zmq::socket_t& s, const SocketOptions& o) const {
  if (!keys_) return;
  // Without a ZAP handler in the context CURVE would admit anyone who knows our public key.
  if (zap_ == nullptr) throw std::logic_error("a CURVE server socket needs the context's ZapHandler");
  s.set(zmq::sockopt::curve_server, true);
  s.set(zmq::sockopt::curve_secretkey, keys_->secret_key);
  s.set(zmq::sockopt::zap_domain, o.zap_domain);
}

void SocketFactory::make_client(zmq::socket_t& s, const std::string& endpoint, const SocketOptions& o) const {
  if (!keys_) return;
  if (!is_z85_key(o.server_key))
    throw std::invalid_argument("no CURVE key known for " + endpoint +
                                ": this cluster is encrypted and the peer was never introduced");
  s.set(zmq::sockopt::curve_serverkey, o.server_key);
  s.set(zmq::sockopt::curve_publickey, keys_->public_key);
  s.set(zmq::sockopt::curve_secretkey, keys_->secret_key);
}

zmq::socket_t SocketFactory::bind_router(const std::string& endpoint, const SocketOptions& o) const {
  zmq::socket_t s(context_, zmq::socket_type::router);
  apply_common(s, o);
  // A reply to a peer that has gone fails loudly instead of vanishing.
  s.set(zmq::sockopt::router_mandatory, true);
  make_server(s, o);
  s.bind(endpoint);
  return s;
}

zmq::socket_t SocketFactory::bind_pull(const std::string& endpoint, const SocketOptions& o) const {
  zmq::socket_t s(context_, zmq::socket_type::pull);
  apply_common(s, o);
  make_server(s, o);
  s.bind(endpoint);
  return s;
}

zmq::socket_t SocketFactory::dealer(const std::string& endpoint, const std::string& identity,
                                    const SocketOptions& o) const {
  zmq::socket_t s(context_, zmq::socket_type::dealer);
  apply_common(s, o);
  if (!identity.empty()) s.set(zmq::sockopt::routing_id, identity);
  s.set(zmq::sockopt::immediate, true);  // queue nothing for a peer that is not connected
  make_client(s, endpoint, o);
  return s;
}

zmq::socket_t SocketFactory::connect_dealer(const std::string& endpoint, const std::string& identity,
                                            const SocketOptions& o) const {
  zmq::socket_t s = dealer(endpoint, identity, o);
  s.connect(endpoint);
  return s;
}

zmq::socket_t SocketFactory::connect_push(const std::string& endpoint, const SocketOptions& o) const {
  zmq::socket_t s(context_, zmq::socket_type::push);
  apply_common(s, o);
  // Blocking on a full queue is the pipeline's backpressure, but a stage that has died must not
  // hang the sender forever: give up after a while and let the caller report it.
  s.set(zmq::sockopt::sndtimeo, 5000);
  make_client(s, endpoint, o);
  s.connect(endpoint);
  return s;
}

const char* message_property(zmq::message_t& message, const char* name) { return zmq_msg_gets(message.handle(), name); }

std::vector<zmq::message_t> receive_multipart(zmq::socket_t& socket) {
  std::vector<zmq::message_t> parts;
  if (!zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait)) parts.clear();
  return parts;
}

void drain(zmq::socket_t& socket, int limit) {
  for (int i = 0; i < limit && !receive_multipart(socket).empty(); ++i) {
  }
}

std::optional<HostPort> split_host_port(const std::string& text) {
  const std::string hp = text.rfind("tcp://", 0) == 0 ? text.substr(6) : text;
  const size_t colon = hp.rfind(':');
  if (colon == std::string::npos) return std::nullopt;
  const std::string port = hp.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  const int number = std::stoi(port);
  if (number > 65535) return std::nullopt;
  return HostPort{hp.substr(0, colon), number};
}

std::string unbracketed(const std::string& host) {
  return host.size() >= 2 && host.front() == '[' && host.back() == ']' ? host.substr(1, host.size() - 2) : host;
}

std::string tcp_endpoint(const std::string& host_port) {
  const auto hp = split_host_port(host_port);
  if (!hp || hp->host.empty()) throw std::invalid_argument("'" + host_port + "' is not HOST:PORT (a port from 0 to 65535)");
  return "tcp://" + hp->host + ":" + std::to_string(hp->port);
}

int endpoint_port(const std::string& endpoint) {
  const auto hp = split_host_port(endpoint);
  return hp ? hp->port : 0;
}

std::string endpoint_host(const std::string& endpoint) {
  const auto hp = split_host_port(endpoint);
  return hp ? hp->host : "";
}

std::string with_host(const std::string& endpoint, const std::string& host) {
  return "tcp://" + host + ":" + std::to_string(endpoint_port(endpoint));
}

std::string with_port(const std::string& endpoint, int port) {
  return "tcp://" + endpoint_host(endpoint) + ":" + std::to_string(port);
}

}  // namespace hearth::transport
