// The one JSON view of the head's typed replies (PlanReport, StatusReply, DevicesReply): what `hearth status
// --json` and `hearth launch --json` print, what the HTTP gateway serves and /metrics reads.
// The wire carries SI units; this view keeps the documented display keys (`stage_time_ms`,
// `compute_s`, `bandwidth_mb_s`, ...), converted here and nowhere else.
#pragma once

#include <nlohmann/json.hpp>

#include "transport/codec.h"

namespace hearth::transport {

nlohmann::json plan_view(wire::PlanReport::Reader plan);
nlohmann::json status_view(wire::StatusReply::Reader status);
// The devices the head knows, one object each (`hearth devices --json`, GET /v1/cluster).
nlohmann::json devices_view(wire::DevicesReply::Reader devices);
// {"dirs": [...], "models": [{"id", "path", "name", "arch", "file_bytes", "weight_type", "n_layers",
// "loaded", "fits", "why", "devices", "predicted_tokens_per_s", "n_ctx", "streams"}]}
nlohmann::json models_view(wire::ModelsReply::Reader models);

}  // namespace hearth::transport
