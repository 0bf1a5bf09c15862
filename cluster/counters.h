// A daemon's counters: what it refused, and what its stage computed and sent. Written by the
// loop thread, read by the heartbeat thread (hence atomic); snapshots are plain structs
// (cluster/host.h) that status and heartbeats carry.
#pragma once

#include <atomic>
#include <cstdint>

#include "cluster/host.h"

namespace hearth::cluster {

// Messages the node refused, by reason.
struct DropStats {
  std::atomic<uint64_t> malformed{0};    // not a valid envelope, or a field out of range
  std::atomic<uint64_t> out_of_plan{0};  // for another plan, or a stage this node does not run
  std::atomic<uint64_t> unexpected{0};   // a message this role never receives
  std::atomic<uint64_t> bad_payload{0};  // wrong size, NaN/Inf
  DropCounts snapshot() const { return {malformed, out_of_plan, unexpected, bad_payload}; }
};

// What this node's stage computed and sent since the daemon started.
struct WorkStats {
  std::atomic<uint64_t> batches{0};
  std::atomic<uint64_t> tokens{0};
  std::atomic<uint64_t> compute_ns{0};
  std::atomic<uint64_t> bytes_out{0};  // activations pushed to the next stage
  // Of the batches, the decode steps of one token of one stream and their compute time.
  std::atomic<uint64_t> decode_steps{0};
  std::atomic<uint64_t> decode_ns{0};
  // A paging stage's reads (runtime/model/layer_pager.h), summed over the stages it loaded.
  std::atomic<uint64_t> paged_read_bytes{0};
  std::atomic<uint64_t> paged_read_ns{0};
  std::atomic<uint64_t> paged_wait_ns{0};
  // Of the batches, the decode steps of more than one row: their rows and compute time.
  std::atomic<uint64_t> batched_steps{0};
  std::atomic<uint64_t> batched_rows{0};
  std::atomic<uint64_t> batched_ns{0};
  // The plan's time for the decode steps and for the batched ones.
  std::atomic<uint64_t> decode_planned_ns{0};
  std::atomic<uint64_t> batched_planned_ns{0};
  StageCounters snapshot() const {
    return {batches,       tokens,        compute_ns,    bytes_out,    decode_steps, decode_ns,         paged_read_bytes,
            paged_read_ns, paged_wait_ns, batched_steps, batched_rows, batched_ns,   decode_planned_ns, batched_planned_ns};
  }
};

}  // namespace hearth::cluster
