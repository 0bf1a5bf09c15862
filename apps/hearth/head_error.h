// An error the head reported, with its category: the CLI's edge turns it into an exit code
// (apps/hearth/main.cpp), so scripts can tell "the devices cannot hold it" from "not running".
#pragma once

#include <stdexcept>
#include <string>

#include "transport/codec.h"

namespace hearth::cli {

class HeadError : public std::runtime_error {
 public:
  HeadError(transport::wire::ErrorCategory category, const std::string& message)
      : std::runtime_error(message), category_(category) {}
  transport::wire::ErrorCategory category() const { return category_; }

 private:
  transport::wire::ErrorCategory category_;
};

// 1: internal or unknown; 2: a bad request; 3: not found; 4: no capacity; 5: unavailable or a
// device lost; 6: unauthorized or another protocol version; 7: a conflict (e.g. a launch in progress).
inline int exit_code(transport::wire::ErrorCategory category) {
  using C = transport::wire::ErrorCategory;
  switch (category) {
    case C::BAD_REQUEST:
    case C::TOO_LARGE: return 2;
    case C::NOT_FOUND: return 3;
    case C::NO_CAPACITY: return 4;
    case C::UNAVAILABLE:
    case C::LOST_DEVICE: return 5;
    case C::UNAUTHORIZED:
    case C::VERSION_MISMATCH: return 6;
    case C::CONFLICT: return 7;
    case C::INTERNAL: return 1;
  }
  return 1;
}

}  // namespace hearth::cli
