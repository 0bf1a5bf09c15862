// An error that knows its kind. The category is chosen where the error arises (a launch that
// cannot fit is NO_CAPACITY, a key that does not match is UNAUTHORIZED) and travels on the wire;
// only the edges turn it into something else: the gateway into an HTTP status, the CLI into an
// exit code. The categories are the wire schema's (transport/hearth.capnp, ErrorCategory).
#pragma once

#include <stdexcept>
#include <string>

#include "runtime/format/gguf.h"
#include "transport/codec.h"

namespace hearth::cluster {

using ErrorCategory = transport::wire::ErrorCategory;

class Failure : public std::runtime_error {
 public:
  Failure(ErrorCategory category, const std::string& message) : std::runtime_error(message), category_(category) {}
  ErrorCategory category() const { return category_; }

 private:
  ErrorCategory category_;
};

// The category of any exception: a Failure's own; invalid_argument is the request's fault;
// anything else is ours.
inline ErrorCategory category_of(const std::exception& e) {
  if (const auto* f = dynamic_cast<const Failure*>(&e)) return f->category();
  if (dynamic_cast<const std::invalid_argument*>(&e)) return ErrorCategory::BAD_REQUEST;
  // A truncated or malformed model file is the caller's input, not the head's fault.
  if (dynamic_cast<const runtime::GgufError*>(&e)) return ErrorCategory::BAD_REQUEST;
  return ErrorCategory::INTERNAL;
}

}  // namespace hearth::cluster
