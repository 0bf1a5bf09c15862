#include "cluster/link_prober.h"

#include <algorithm>
#include <chrono>
#include <random>

#include "transport/codec.h"

namespace hearth::cluster {

namespace wire = transport::wire;
using Steady = std::chrono::steady_clock;

// The longest wait for a bulk ping's answer: 256 KiB at 0.5 Mbit/s.
constexpr std::chrono::milliseconds kBulkWait{5000};

LinkProber::LinkProber(const transport::SocketFactory& sockets, std::string node_id, std::string device_name)
    : sockets_(sockets), node_id_(std::move(node_id)), device_name_(std::move(device_name)) {}

LinkProber::~LinkProber() {
  if (thread_.joinable()) thread_.join();
}

void LinkProber::probe(std::vector<Target> targets, std::string head_endpoint, std::string head_key) {
  if (thread_.joinable()) thread_.join();
  thread_ = std::thread([this, t = std::move(targets), e = std::move(head_endpoint), k = std::move(head_key)]() mutable {
    run(std::move(t), e, k);
  });
}

void LinkProber::run(std::vector<Target> targets, const std::string& head_endpoint, const std::string& head_key) {
  const std::string suffix = std::to_string(std::random_device{}());
  capnp::MallocMessageBuilder report;
  auto links = report.initRoot<wire::Envelope>().initLinkReport().initLinks(static_cast<unsigned>(targets.size()));
  for (unsigned i = 0; i < targets.size(); ++i) {
    // A fresh identity per probe: a ROUTER refuses a second connection under an identity it
    // still holds.
    zmq::socket_t s = sockets_.connect_dealer(targets[i].control_endpoint, node_id_ + "/probe-" + suffix,
                                              {.server_key = targets[i].public_key});
    s.set(zmq::sockopt::rcvtimeo, 1000);
    const auto round_trip = [&](size_t padding) {
      capnp::MallocMessageBuilder b;
      b.initRoot<wire::Envelope>().initPing().setSentNs(0);
      const auto t0 = Steady::now();
      if (padding == 0) {
        s.send(transport::encode(b), zmq::send_flags::none);
      } else {
        s.send(transport::encode(b), zmq::send_flags::sndmore);
        s.send(zmq::message_t(padding), zmq::send_flags::none);
      }
      zmq::message_t reply;
      if (!s.recv(reply)) return -1.0;
      return std::chrono::duration<double>(Steady::now() - t0).count();
    };
    std::vector<double> rtts;
    for (int k = 0; k < 9 && rtts.size() + 3 > static_cast<size_t>(k); ++k)  // give up after 3 misses
      if (double r = round_trip(0); r > 0) rtts.push_back(r);
    links[i].setFrom(device_name_);
    links[i].setTo(targets[i].node_id);
    if (rtts.empty()) {  // unreachable: report nothing measurable rather than a made-up figure
      links[i].setLatencyS(-1);
      continue;
    }
    std::sort(rtts.begin(), rtts.end());
    const double latency = rtts[rtts.size() / 2] / 2;
    // Bandwidth: a bulk ping's time less the round trip. 256 KiB first, which a slow link (Wi-Fi
    // through walls: 10 Mbit/s and less) carries within the wait; then, where that was quick,
    // 4 MiB, for a figure a fast link's latency does not dominate. (A single 4 MiB ping with a
    // one-second wait measured nothing below 33 Mbit/s, and the planner then assumed 100.)
    const auto bandwidth = [&](size_t bulk) {
      const double t = round_trip(bulk);
      return t > 0 ? bulk / std::max(1e-6, t - 2 * latency) : 0.0;
    };
    s.set(zmq::sockopt::rcvtimeo, static_cast<int>(kBulkWait.count()));
    double bytes_per_s = bandwidth(256u << 10);
    if (bytes_per_s > 0 && (4u << 20) / bytes_per_s < 1.0)
      if (const double finer = bandwidth(4u << 20); finer > 0) bytes_per_s = finer;
    links[i].setLatencyS(latency);
    links[i].setBandwidthBytesPerS(bytes_per_s);
  }
  if (head_endpoint.empty()) return;
  zmq::socket_t to_head = sockets_.connect_dealer(head_endpoint, node_id_ + "/links-" + suffix, {.server_key = head_key});
  to_head.set(zmq::sockopt::sndtimeo, 2000);
  to_head.set(zmq::sockopt::linger, 2000);  // let the report leave before the socket closes
  to_head.send(transport::encode(report), zmq::send_flags::none);
}

}  // namespace hearth::cluster
