#include "transport/printable.h"

#include <cstdio>

namespace hearth::transport {

namespace {

// Length of the UTF-8 sequence starting at `s[i]` if it is a valid one of a printable
// character, else 0.
size_t printable_sequence(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c >= 0x20 && c < 0x7f) return 1;
  size_t n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((b(i + k) & 0xc0) != 0x80) return 0;
  if (n == 2 && c == 0xc2 && b(i + 1) < 0xa0) return 0;  // C1 controls U+0080-U+009F
  if (n == 3 && c == 0xe0 && b(i + 1) < 0xa0) return 0;  // overlong
  if (n == 4 && c == 0xf0 && b(i + 1) < 0x90) return 0;  // overlong
  if (n == 4 && c == 0xf4 && b(i + 1) > 0x8f) return 0;  // beyond U+10FFFF
  if (n == 3 && c == 0xed && b(i + 1) > 0x9f) return 0;  // surrogates
  return n;
}

}  // namespace

std::string printable(std::string_view text, size_t max_bytes) {
  std::string out;
  const size_t end = std::min(text.size(), max_bytes);
  for (size_t i = 0; i < end;) {
    if (text[i] == '\\') {
      out += "\\\\";
      ++i;
      continue;
    }
    if (const size_t n = printable_sequence(text, i); n > 0) {
      out.append(text.substr(i, n));
      i += n;
      continue;
    }
    char hex[5];
    std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(text[i]));
    out += hex;
    ++i;
  }
  if (text.size() > max_bytes) out += "...";
  return out;
}

bool valid_node_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
      return false;
  return true;
}

bool valid_device_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (size_t i = 0; i < name.size();) {
    const size_t n = printable_sequence(name, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

}  // namespace hearth::transport
