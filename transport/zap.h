// The ZAP handler (ZeroMQ RFC 27): decides, during the CURVE handshake, which client keys a
// daemon's sockets admit.
//
// Without a ZAP handler a CURVE server admits any client that knows its public key, and public
// keys are not secrets. So every daemon runs one: sockets bound in the domain kMembersDomain admit
// only keys on the allowlist (the head: its paired devices; a device: the head and the members the
// head told it of); sockets in kPairingDomain admit anyone, for the head's pairing socket, whose
// only message is a pairing request that must carry the join token's secret.
//
// An admitted connection's messages carry the client's public key as their "User-Id" property
// (zmq::message_t::gets), so the receiver knows which key sent what.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <zmq.hpp>

namespace hearth::transport {

inline constexpr const char* kMembersDomain = "hearth";
inline constexpr const char* kPairingDomain = "hearth-pairing";

class ZapHandler {
 public:
  // Binds the context's ZAP endpoint; one handler per context, made before any CURVE socket binds.
  explicit ZapHandler(zmq::context_t& context);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  // Thread-safe: the allowlist of kMembersDomain, Z85 public keys.
  void allow(const std::string& public_key);
  bool allowed(const std::string& public_key) const;
  // Handshakes refused so far (a stranger, or a device not yet paired).
  uint64_t denied() const { return denied_; }

 private:
  void loop(zmq::socket_t socket);
  bool admit(const std::string& domain, const std::string& mechanism, const std::string& key) const;

  mutable std::mutex mutex_;
  std::set<std::string> allowed_;
  std::atomic<uint64_t> denied_{0};
  std::set<std::string> warned_;  // keys already logged (handler thread only)
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace hearth::transport
