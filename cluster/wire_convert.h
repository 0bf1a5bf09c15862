// Conversions between wire messages and the runtime's and partitioner's plain structs. This is
// the glue that keeps transport/ ignorant of models and runtime/ ignorant of networks.
#pragma once

#include "partitioner/device_profile.h"
#include "profiles/profiler.h"
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

}  // namespace hearth::cluster
