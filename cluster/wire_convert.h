// Conversions between wire messages and the runtime's and partitioner's plain structs. This is
// the glue that keeps transport/ ignorant of models and runtime/ ignorant of networks.
#pragma once

#include <optional>
#include <string_view>

#include "partitioner/device_profile.h"
#include "profiles/profiler.h"
#include "runtime/format/tensor_type.h"
#include "runtime/model/sampler.h"
#include "transport/codec.h"

namespace hearth::cluster {

namespace wire = transport::wire;

void to_wire(const profiles::Profile& p, wire::DeviceProfile::Builder out);
// What a device holds back from its memory, and why (`hearth devices` shows it).
profiles::MemoryBudget memory_from_wire(transport::wire::DeviceProfile::Reader in);
partitioner::DeviceProfile from_wire(wire::DeviceProfile::Reader in);

void to_wire(const runtime::SamplingParams& p, wire::SamplingParams::Builder out);
runtime::SamplingParams from_wire(wire::SamplingParams::Reader in);

// A KV cache type (F32, F16 or Q8_0) and back; `unset` reads as nullopt.
wire::KvType kv_type_to_wire(runtime::TensorType t);
std::optional<runtime::TensorType> kv_type_from_wire(wire::KvType t);

// A launch's wire type by name: "f32", "f16", "q8_0" or "auto" (cluster/wire_choice.h); nullopt
// for anything else.
std::optional<wire::WireType> wire_choice_from_name(std::string_view name);

}  // namespace hearth::cluster
