#include "gateway/error_status.h"

namespace hearth::http {

using transport::wire::ErrorCategory;

int http_status(ErrorCategory category) {
  switch (category) {
    case ErrorCategory::BAD_REQUEST: return 400;
    case ErrorCategory::UNAUTHORIZED: return 403;
    case ErrorCategory::NOT_FOUND: return 404;
    case ErrorCategory::CONFLICT: return 409;
    case ErrorCategory::TOO_LARGE: return 400;  // OpenAI's status for context_length_exceeded
    case ErrorCategory::INTERNAL: return 500;
    case ErrorCategory::VERSION_MISMATCH: return 502;
    case ErrorCategory::NO_CAPACITY:
    case ErrorCategory::LOST_DEVICE:
    case ErrorCategory::UNAVAILABLE: return 503;
  }
  return 500;
}

const char* error_code_name(ErrorCategory category) {
  switch (category) {
    case ErrorCategory::BAD_REQUEST: return "invalid_request";
    case ErrorCategory::TOO_LARGE: return "context_length_exceeded";
    case ErrorCategory::UNAVAILABLE: return "service_unavailable";
    case ErrorCategory::LOST_DEVICE: return "device_lost";
    case ErrorCategory::NO_CAPACITY: return "insufficient_capacity";
    case ErrorCategory::NOT_FOUND: return "not_found";
    case ErrorCategory::CONFLICT: return "conflict";
    case ErrorCategory::UNAUTHORIZED: return "unauthorized";
    case ErrorCategory::VERSION_MISMATCH: return "version_mismatch";
    case ErrorCategory::INTERNAL: return "generation_failed";
  }
  return "generation_failed";
}

}  // namespace hearth::http
