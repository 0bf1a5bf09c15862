#pragma once
// One network path between two devices, and the time to push a message over it.

namespace hearth::partitioner {

struct Link {
  double bandwidth_bytes_per_s = 0;  // bytes/s, effective bulk throughput
  double latency_s = 0;              // seconds, one way (RTT / 2 of a small message)
};

// Assumed for any pair of devices with no measured link: a busy home Wi-Fi path
// (100 Mbit/s effective, 5 ms one way). Named so the CLI can print it.
inline constexpr Link kDefaultLink{100e6 / 8, 0.005};

// Assumed access link of a device whose profile gives none: half of kDefaultLink's
// latency each way, so two such devices talk over exactly kDefaultLink.
inline constexpr Link kDefaultAccessLink{kDefaultLink.bandwidth_bytes_per_s, kDefaultLink.latency_s / 2};

// Seconds to deliver `bytes` over `link`: latency plus serialisation (§4.3).
inline double transfer_time(const Link& link, double bytes) { return link.latency_s + bytes / link.bandwidth_bytes_per_s; }

}  // namespace hearth::partitioner
