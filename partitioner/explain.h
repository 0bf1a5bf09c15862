#pragma once
// Text for people: why a device was left out, why no plan fits, and a plan as
// lines of a table. Pure: returns strings, prints nothing.

#include <span>
#include <string>
#include <vector>

#include "partitioner/cost_model.h"
#include "partitioner/plan.h"

namespace hearth::partitioner {

std::string format_bytes(double bytes);  // "9.1 GB" (decimal units, like disk and RAM sizes)
std::string format_ms(double seconds);   // "12.3 ms"

// Why no plan fits, with the bytes missing and where, e.g. "model needs 9.1 GB, the
// 3 devices offer 7.4 GB usable: 1.7 GB missing".
Infeasible diagnose_infeasible(const CostModel& cm);

// One entry per stage that does not fit its device, saying by how much; `what`
// names the split in the message ("memory split"). Empty when all stages fit.
std::vector<Infeasible> memory_overflows(const CostModel& cm, std::span<const StageRange> ranges, std::string_view what);

// One line per device holding no stage, saying why leaving it out is right.
std::vector<std::string> left_out_reasons(const CostModel& cm, std::span<const StageRange> ranges);

// The plan as text lines: one per stage (device, blocks, memory, times), then the
// prediction and any left-out devices.
std::vector<std::string> describe_plan(const PartitionPlan& plan);

}  // namespace hearth::partitioner
