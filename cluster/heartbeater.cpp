#include "cluster/heartbeater.h"

#include <chrono>

#include "profiles/process_memory.h"
#include "transport/codec.h"

namespace hearth::cluster {

namespace wire = transport::wire;
using Steady = std::chrono::steady_clock;

Heartbeater::Heartbeater(const transport::SocketFactory& sockets, std::string head_endpoint, std::string head_key,
                         std::string node_id, uint64_t incarnation, const DropStats& drops, const WorkStats& work,
                         const std::atomic<uint64_t>& plan_id, const transport::ZapHandler* zap)
    : drops_(drops),
      work_(work),
      plan_id_(plan_id),
      zap_(zap),
      incarnation_(incarnation),
      thread_([this, &sockets, e = std::move(head_endpoint), k = std::move(head_key), id = std::move(node_id)] {
        loop(sockets, e, k, id);
      }) {}

Heartbeater::~Heartbeater() {
  stop_ = true;
  thread_.join();
}

void Heartbeater::loop(const transport::SocketFactory& sockets, std::string endpoint, std::string head_key, std::string node_id) {
  zmq::socket_t s = sockets.connect_dealer(endpoint, node_id + "/hb", {.send_hwm = 4, .server_key = head_key});
  auto next = Steady::now();
  while (!stop_) {
    if (Steady::now() >= next) {
      capnp::MallocMessageBuilder b;
      auto hb = b.initRoot<wire::Envelope>().initHeartbeat();
      hb.setNodeId(node_id);
      hb.setPlanId(plan_id_);
      hb.setDropped(drops_.snapshot().total());
      hb.setResidentBytes(profiles::resident_bytes());
      const StageCounters w = work_.snapshot();
      hb.setBatches(w.batches);
      hb.setTokens(w.tokens);
      hb.setComputeNs(w.compute_ns);
      hb.setDecodeSteps(w.decode_steps);
      hb.setDecodeNs(w.decode_ns);
      hb.setBytesOut(w.bytes_out);
      hb.setPagedReadBytes(w.paged_read_bytes);
      hb.setPagedReadNs(w.paged_read_ns);
      hb.setPagedWaitNs(w.paged_wait_ns);
      hb.setBatchedSteps(w.batched_steps);
      hb.setBatchedRows(w.batched_rows);
      hb.setBatchedNs(w.batched_ns);
      hb.setDecodePlannedNs(w.decode_planned_ns);
      hb.setBatchedPlannedNs(w.batched_planned_ns);
      hb.setRefusedHandshakes(zap_ ? zap_->denied() : 0);
      hb.setIncarnation(incarnation_);
      s.send(transport::encode(b), zmq::send_flags::dontwait);
      next += std::chrono::milliseconds(400);
    }
    transport::drain(s);  // the head does not answer heartbeats today
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace hearth::cluster
