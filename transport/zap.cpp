#include "transport/zap.h"

#include <spdlog/spdlog.h>
#include <zmq.h>

#include <array>
#include <vector>

namespace hearth::transport {

ZapHandler::ZapHandler(zmq::context_t& context) {
  zmq::socket_t socket(context, zmq::socket_type::rep);
  socket.set(zmq::sockopt::linger, 0);
  socket.bind("inproc://zeromq.zap.01");  // bound here, so no CURVE socket of this context binds before it
  thread_ = std::thread([this, s = std::move(socket)]() mutable { loop(std::move(s)); });
}

ZapHandler::~ZapHandler() {
  stop_ = true;
  thread_.join();
}

void ZapHandler::allow(const std::string& public_key) {
  std::lock_guard lock(mutex_);
  allowed_.insert(public_key);
}

bool ZapHandler::allowed(const std::string& public_key) const {
  std::lock_guard lock(mutex_);
  return allowed_.count(public_key) > 0;
}

bool ZapHandler::admit(const std::string& domain, const std::string& mechanism, const std::string& key) const {
  if (mechanism != "CURVE" || key.empty()) return false;
  if (domain == kPairingDomain) return true;  // the pairing request itself proves the secret
  return domain == kMembersDomain && allowed(key);
}

void ZapHandler::loop(zmq::socket_t socket) {
  while (!stop_) {
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(100));
    if (!(item.revents & ZMQ_POLLIN)) continue;
    std::vector<zmq::message_t> parts;
    for (bool more = true; more;) {
      zmq::message_t m;
      if (!socket.recv(m, zmq::recv_flags::none)) break;
      more = m.more();
      parts.push_back(std::move(m));
    }
    // version, request id, domain, address, identity, mechanism, credentials...
    if (parts.size() < 6) continue;  // not a ZAP request; libzmq never sends one
    const std::string domain = parts[2].to_string(), address = parts[3].to_string(), mechanism = parts[5].to_string();
    std::string key;
    if (mechanism == "CURVE" && parts.size() >= 7 && parts[6].size() == 32) {
      std::array<char, 41> z85{};
      zmq_z85_encode(z85.data(), static_cast<const uint8_t*>(parts[6].data()), 32);
      key = z85.data();
    }
    const bool ok = admit(domain, mechanism, key);
    if (!ok) denied_++;
    // A refused peer reconnects every 100 ms or so: say it once per key (and keep the set small).
    if (!ok && warned_.size() < 1000 && warned_.insert(key).second) {
      spdlog::warn("refused a connection from {} ({}): its key {} is not paired with this cluster", address, domain,
                   key.empty() ? "(none)" : key);
    }
    const std::array<std::string, 6> reply{
        "1.0", parts[1].to_string(), ok ? "200" : "400", ok ? "OK" : "key not allowed", ok ? key : "", ""};
    for (size_t i = 0; i < reply.size(); ++i)
      socket.send(zmq::buffer(reply[i]), i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
}

}  // namespace hearth::transport
