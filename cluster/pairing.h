// Pairing: how a device's key gets onto the head's allowlist (see transport/curve.h).
//
// The head keeps a PairingRegistry: the join token's secret and the paired keys, both in its
// data directory, so a restarted head still knows its devices. A new device runs
// pair_with_head() once, with the token; afterwards its data directory holds the head's key.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <string>

#include "transport/curve.h"
#include "transport/sockets.h"

namespace hearth::cluster {

class PairingRegistry {
 public:
  // Loads (or makes) DIR/pairing.secret and DIR/allowed.
  explicit PairingRegistry(std::filesystem::path keys_dir);

  const std::string& secret() const { return secret_; }
  // Paired keys -> node ids.
  const std::map<std::string, std::string>& paired() const { return paired_; }
  // Checks the secret (in constant time); on success records the key (persisted) and returns "".
  // Otherwise returns why it refused.
  std::string pair(const std::string& public_key, const std::string& node_id, const std::string& secret);

 private:
  void save() const;
  std::filesystem::path dir_;
  std::string secret_;
  std::map<std::string, std::string> paired_;
};

// Pairs this device with the head whose pairing socket is at `endpoint`, proving the token's
// secret. Returns when the head has recorded our key; throws std::runtime_error when the head
// refuses (wrong token) or does not answer within `timeout`.
void pair_with_head(const transport::SocketFactory& sockets, const std::string& endpoint, const transport::JoinToken& token,
                    const std::string& node_id, std::chrono::milliseconds timeout);

}  // namespace hearth::cluster
