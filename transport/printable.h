// Strings that come from peers and clients (node ids, device names, messages) are escaped before
// they reach a log line or a terminal: a newline could forge a log line, an escape sequence
// could rewrite the operator's screen.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace hearth::transport {

// `text` with control characters (C0, DEL, C1) and bytes that are not UTF-8 written as \xNN,
// backslashes doubled, and cut to at most `max_bytes` of input (then "...").
std::string printable(std::string_view text, size_t max_bytes = 160);
// A node id: 1 to 64 of [A-Za-z0-9._-] (hearthd makes 16 hex digits).
bool valid_node_id(std::string_view id);
// A device name: 1 to 64 bytes of printable UTF-8 (no control characters).
bool valid_device_name(std::string_view name);

}  // namespace hearth::transport
