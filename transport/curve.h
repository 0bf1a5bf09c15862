// CurveZMQ identities and the join token.
//
// Every daemon has a long-term CURVE key pair, made at its first start and kept in
// DATA_DIR/keys/ with 0600 permissions. The head's public key and a pairing secret make the join
// token it prints; `hearthd --join HOST:PORT --token TOKEN` uses it once to pair a new device: the
// device connects to the head's pairing socket (encrypted to the head's key, so only the real
// head reads the secret) and the head adds the device's public key to its allowlist. From then
// on the device's data directory holds the head's public key and no token is needed.
//
// Files in DATA_DIR/keys/:
//   node.key        this daemon's public and secret key (Z85, one per line)
//   head.pub        the head's public key (on the head: its own)
//   allowed         (head) paired public keys, one per line with the device's node id
//   pairing.secret  (head) the secret of the join token
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace hearth::transport {

// A CURVE key pair in Z85 text (40 characters each).
struct CurveKeys {
  std::string public_key;
  std::string secret_key;
};

// What a join token carries.
struct JoinToken {
  std::string head_public_key;  // Z85
  int pairing_port = 0;         // the head's pairing socket, on the host --join names
  std::string secret;           // 32 hex digits
};

// True if libzmq was built with CURVE (Debian's is).
bool curve_available();
CurveKeys generate_curve_keys();
bool is_z85_key(std::string_view key);

// DIR/node.key, made (0600) if it does not exist. Throws with the path when it is unreadable or
// malformed, or when DIR cannot be written.
CurveKeys load_or_create_keys(const std::filesystem::path& dir);
// DIR/node.key if it exists.
std::optional<CurveKeys> load_keys(const std::filesystem::path& dir);

// A small text file only its owner may read or write (0600), replaced atomically.
void write_private_file(const std::filesystem::path& path, const std::string& content);
// The first line of a file, or "" if it does not exist.
std::string read_first_line(const std::filesystem::path& path);

// "hearth1-PORT-KEYHEX-SECRET": the key in hex, since Z85 uses '-' and ':'.
std::string format_join_token(const JoinToken& token);
// Throws std::invalid_argument with what is wrong.
JoinToken parse_join_token(std::string_view text);
// 16 random bytes as 32 hex digits.
std::string random_secret();
// Constant time: a wrong guess learns nothing from how long the comparison took.
bool secrets_equal(std::string_view a, std::string_view b);

}  // namespace hearth::transport
