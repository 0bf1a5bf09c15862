// A user-space link emulator: a TCP relay that delays every chunk it forwards by a one-way
// latency with jitter, and charges a retransmission penalty for packet loss. It exists because
// the kernel here has tc's tbf and htb (bandwidth) but not netem (delay, jitter, loss):
// scripts/home-cluster shapes bandwidth with tc and puts one relay in each emulated device's
// network namespace, so every byte a device sends or receives pays that device's latency.
//
// Loss cannot drop bytes from a TCP stream (the stream must stay intact), so a "lost" chunk is
// delivered late instead, as TCP would after a retransmission: each 1448-byte segment of a chunk
// is lost with probability `loss`, and a chunk with a lost segment waits `loss_penalty_s` more.
// Later chunks wait behind it (head-of-line blocking, as in TCP): delivery times never go back.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <utility>  // before Asio: Boost 1.74 uses std::exchange without including it
#include <boost/asio.hpp>
#include <vector>

namespace hearth::tools {

struct LinkShape {
  double delay_s = 0;         // one way, added to every chunk in both directions
  double jitter_s = 0;        // each chunk's delay is delay_s + uniform(-jitter_s, +jitter_s), at least 0
  double loss = 0;            // probability that one 1448-byte TCP segment is lost
  double loss_penalty_s = 0;  // extra delay of a chunk that lost a segment (a retransmission)
  uint64_t seed = 1;
};

struct RelayEndpoint {
  std::string host;
  uint16_t port = 0;
};
// "HOST:PORT"; throws std::invalid_argument.
RelayEndpoint parse_endpoint(const std::string& text);

struct RelayStats {
  uint64_t connections = 0;
  uint64_t bytes = 0;  // both directions
  uint64_t chunks = 0;
  uint64_t lost_chunks = 0;
  double delay_sum_s = 0;  // of the delays drawn (before head-of-line waiting)
};

class LinkRelay {
 public:
  LinkRelay(boost::asio::io_context& io, LinkShape shape);
  ~LinkRelay();
  LinkRelay(const LinkRelay&) = delete;
  LinkRelay& operator=(const LinkRelay&) = delete;

  // Listens on `listen` (port 0: any free port) and forwards each accepted connection to
  // `target`. Returns the port it listens on. Call before io.run() or from the io thread.
  uint16_t add_route(const RelayEndpoint& listen, const RelayEndpoint& target);
  // Closes the listeners; open connections end when their peers close.
  void close();

  // Safe from any thread.
  RelayStats stats() const;

  // The delay of one chunk of `bytes` (drawn from the shape). Exposed for tests.
  double draw_delay(size_t bytes, bool* lost = nullptr);

 private:
  struct Listener;
  class Session;
  void accept(const std::shared_ptr<Listener>& l);

  boost::asio::io_context& io_;
  LinkShape shape_;
  std::mt19937_64 rng_;
  std::vector<std::shared_ptr<Listener>> listeners_;
  std::atomic<uint64_t> connections_{0}, bytes_{0}, chunks_{0}, lost_{0};
  std::atomic<uint64_t> delay_sum_us_{0};
};

}  // namespace hearth::tools
