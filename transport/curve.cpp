#include "transport/curve.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <random>
#include <stdexcept>
#include <zmq.h>

namespace fs = std::filesystem;

namespace hearth::transport {

namespace {

constexpr std::string_view kTokenPrefix = "hearth1-";
constexpr size_t kZ85KeyChars = 40;
constexpr size_t kKeyBytes = 32;

std::string to_hex(const uint8_t* p, size_t n) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) s += digits[p[i] >> 4], s += digits[p[i] & 15];
  return s;
}

bool from_hex(std::string_view hex, uint8_t* out, size_t n) {
  if (hex.size() != 2 * n) return false;
  const auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < n; ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

}  // namespace

bool curve_available() { return zmq_has("curve") != 0; }

CurveKeys generate_curve_keys() {
  std::array<char, kZ85KeyChars + 1> pub{}, sec{};
  if (zmq_curve_keypair(pub.data(), sec.data()) != 0)
    throw std::runtime_error("cannot make a CURVE key pair: this libzmq was built without CURVE");
  return {pub.data(), sec.data()};
}

bool is_z85_key(std::string_view key) {
  if (key.size() != kZ85KeyChars) return false;
  std::array<uint8_t, kKeyBytes> bin{};
  const std::string k(key);
  return zmq_z85_decode(bin.data(), k.c_str()) != nullptr;
}

void write_private_file(const fs::path& path, const std::string& content) {
  fs::create_directories(path.parent_path());
  ::chmod(path.parent_path().c_str(), 0700);
  const fs::path tmp = path.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot write " + tmp.string() + ": check the data directory's permissions");
  const bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error("cannot write " + path.string());
}

std::string read_first_line(const fs::path& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::optional<CurveKeys> load_keys(const fs::path& dir) {
  const fs::path path = dir / "node.key";
  std::ifstream in(path);
  if (!in) return std::nullopt;
  // As ssh does with its keys: a secret others can read is not used.
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw std::runtime_error(path.string() + " can be read or changed by other users (mode " + mode +
                             "): its secret key may be known. Run chmod 600 " + path.string() +
                             " (or delete it to make new keys)");
  }
  CurveKeys k;
  std::getline(in, k.public_key);
  std::getline(in, k.secret_key);
  if (!is_z85_key(k.public_key) || !is_z85_key(k.secret_key))
    throw std::runtime_error(path.string() + " is not a key file (two Z85 keys of 40 characters); move it away to make new keys");
  return k;
}

CurveKeys load_or_create_keys(const fs::path& dir) {
  if (auto k = load_keys(dir)) return *k;
  const CurveKeys k = generate_curve_keys();
  write_private_file(dir / "node.key", k.public_key + "\n" + k.secret_key + "\n");
  return k;
}

std::string format_join_token(const JoinToken& t) {
  std::array<uint8_t, kKeyBytes> bin{};
  if (!is_z85_key(t.head_public_key) || zmq_z85_decode(bin.data(), t.head_public_key.c_str()) == nullptr)
    throw std::invalid_argument("not a CURVE public key");
  return std::string(kTokenPrefix) + std::to_string(t.pairing_port) + "-" + to_hex(bin.data(), bin.size()) + "-" + t.secret;
}

JoinToken parse_join_token(std::string_view text) {
  const auto bad = [](const std::string& why) {
    return std::invalid_argument("not a join token (" + why +
                                 "): copy it again from the head's log or `hearth token` on the head");
  };
  if (text.substr(0, kTokenPrefix.size()) != kTokenPrefix) throw bad("it does not start with " + std::string(kTokenPrefix));
  text.remove_prefix(kTokenPrefix.size());
  const size_t d1 = text.find('-');
  const size_t d2 = d1 == std::string_view::npos ? d1 : text.find('-', d1 + 1);
  if (d2 == std::string_view::npos) throw bad("it has fewer than three parts");
  const std::string_view port = text.substr(0, d1), key = text.substr(d1 + 1, d2 - d1 - 1), secret = text.substr(d2 + 1);
  JoinToken t;
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string_view::npos) throw bad("bad port");
  t.pairing_port = std::stoi(std::string(port));
  if (t.pairing_port <= 0 || t.pairing_port > 65535) throw bad("bad port");
  std::array<uint8_t, kKeyBytes> bin{};
  if (!from_hex(key, bin.data(), bin.size())) throw bad("bad key");
  std::array<char, kZ85KeyChars + 1> z85{};
  zmq_z85_encode(z85.data(), bin.data(), bin.size());
  t.head_public_key = z85.data();
  std::array<uint8_t, 16> s{};
  if (!from_hex(secret, s.data(), s.size())) throw bad("bad secret");
  t.secret = to_hex(s.data(), s.size());
  return t;
}

std::string random_secret() {
  std::random_device rd;  // the kernel's CSPRNG on Linux
  std::array<uint8_t, 16> b{};
  for (auto& x : b) x = static_cast<uint8_t>(rd());
  return to_hex(b.data(), b.size());
}

bool secrets_equal(std::string_view a, std::string_view b) {
  // Over the longer of the two, so the time says nothing of where they differ (nor, beyond the
  // longer one's length, of how long the secret is).
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned char>((i < a.size() ? a[i] : 0) ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

}  // namespace hearth::transport
