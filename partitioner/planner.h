#pragma once
// Entry point of the partitioner: which devices take part, in which order, and
// which contiguous blocks each one runs.
//
//   std::vector<DeviceProfile> devices = ...;   // devices[0] is the head
//   LinkTable links = link_table_from_access_links(devices);
//   PartitionOptions options;                    // latency objective, exact DP
//   PlanResult r = plan_partition(spec, devices, links, options);
//   if (!r.ok()) report(r.error.message);
//   else for (const auto& line : describe_plan(*r.plan)) ...
//
// Pure: no I/O, clock, threads or randomness; the same inputs give the same plan
// (ties break towards lower device indices). Safe to call from several threads.

#include <span>

#include "partitioner/device_profile.h"
#include "partitioner/link_table.h"
#include "partitioner/model_spec.h"
#include "partitioner/options.h"
#include "partitioner/plan.h"

namespace hearth::partitioner {

// devices[0] is the head: it is pinned as the first stage (embedding, tokenizer,
// sampling output) and may hold no blocks. The last stage holds the LM head.
// Returns Infeasible for invalid inputs, plans that cannot fit, and exhaustive
// instances that are too large.
PlanResult plan_partition(const ModelSpec& spec, std::span<const DeviceProfile> devices, const LinkTable& links,
                          const PartitionOptions& options);

}  // namespace hearth::partitioner
