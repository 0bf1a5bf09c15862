// The edge where an error's category (chosen where the error arose, carried on the wire) becomes
// an HTTP status and OpenAI's error code. Nothing else in the gateway picks a status for the head's
// errors.
#pragma once

#include "transport/codec.h"

namespace hearth::http {

int http_status(transport::wire::ErrorCategory category);
// The `error.code` of an OpenAI error body: context_length_exceeded, service_unavailable, ...
const char* error_code_name(transport::wire::ErrorCategory category);

}  // namespace hearth::http
