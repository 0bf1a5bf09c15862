// The link emulator's relay (tools/link_relay.h) on loopback: bytes arrive intact and in order,
// each direction pays the configured delay, and jitter and loss stay within their bounds.
#include <doctest/doctest.h>

#include <chrono>
#include <random>
#include <thread>

#include "tools/link_relay.h"

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using hearth::tools::LinkRelay;
using hearth::tools::LinkShape;
using Clock = std::chrono::steady_clock;

namespace {

// A relay running on its own thread, in front of a target listening on loopback.
struct RelayFixture {
  explicit RelayFixture(LinkShape shape)
      : relay(io, shape), target(target_io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    port = relay.add_route({"127.0.0.1", 0}, {"127.0.0.1", target.local_endpoint().port()});
    thread = std::thread([this] { io.run(); });
  }
  ~RelayFixture() {
    io.stop();
    thread.join();
  }
  tcp::socket connect() {
    tcp::socket s(client_io);
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    s.set_option(tcp::no_delay(true));
    return s;
  }
  tcp::socket accept() {
    tcp::socket s(target_io);
    target.accept(s);
    s.set_option(tcp::no_delay(true));
    return s;
  }

  asio::io_context io, target_io, client_io;
  LinkRelay relay;
  tcp::acceptor target;
  uint16_t port = 0;
  std::thread thread;
};

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

}  // namespace

TEST_SUITE("link_emulator") {
  TEST_CASE("forwards 8 MB each way intact and in order, and passes the close on") {
    RelayFixture f({.delay_s = 0.002, .jitter_s = 0.001, .loss = 0.01, .loss_penalty_s = 0.003});
    tcp::socket client = f.connect();
    tcp::socket server = f.accept();
    std::vector<uint8_t> up(8u << 20), down(8u << 20);
    std::mt19937 rng(42);
    for (auto& b : up) b = static_cast<uint8_t>(rng());
    for (auto& b : down) b = static_cast<uint8_t>(rng());

    // Both directions at once, in small writes, so chunks of many sizes cross the delay line.
    std::vector<uint8_t> got_up(up.size()), got_down(down.size());
    std::thread server_thread([&] {
      std::thread reader([&] { asio::read(server, asio::buffer(got_up)); });
      for (size_t off = 0; off < down.size(); off += 100000)
        asio::write(server, asio::buffer(down.data() + off, std::min<size_t>(100000, down.size() - off)));
      reader.join();
    });
    std::thread reader([&] { asio::read(client, asio::buffer(got_down)); });
    for (size_t off = 0; off < up.size(); off += 77777)
      asio::write(client, asio::buffer(up.data() + off, std::min<size_t>(77777, up.size() - off)));
    reader.join();
    server_thread.join();
    CHECK(got_up == up);
    CHECK(got_down == down);

    // The client closes its side: the target reads end of stream after the last byte.
    client.shutdown(tcp::socket::shutdown_send);
    uint8_t byte = 0;
    boost::system::error_code ec;
    CHECK(server.read_some(asio::buffer(&byte, 1), ec) == 0);
    CHECK(ec == asio::error::eof);

    const auto s = f.relay.stats();
    CHECK(s.connections == 1);
    CHECK(s.bytes == up.size() + down.size());
    CHECK(s.lost_chunks > 0);  // 1% of ~11600 segments
  }

  TEST_CASE("adds the configured one-way delay in each direction") {
    const double delay_ms = 40;
    RelayFixture f({.delay_s = delay_ms / 1e3});
    tcp::socket client = f.connect();
    tcp::socket server = f.accept();
    for (int i = 0; i < 5; ++i) {
      const char ping[] = "ping";
      char buf[4];
      const auto t0 = Clock::now();
      asio::write(client, asio::buffer(ping, 4));
      asio::read(server, asio::buffer(buf, 4));
      const double one_way = ms_since(t0);
      asio::write(server, asio::buffer(buf, 4));
      asio::read(client, asio::buffer(buf, 4));
      const double round_trip = ms_since(t0);
      CHECK(std::string(buf, 4) == "ping");
      CHECK(one_way >= delay_ms - 1);  // timers may fire up to a clock tick early
      CHECK(one_way < delay_ms + 25);  // a loaded machine may run late, never this late
      CHECK(round_trip >= 2 * delay_ms - 1);
      CHECK(round_trip < 2 * delay_ms + 50);
    }
    // Bandwidth is not the relay's job (tc shapes it): a delay line of 40 ms still moves a few MB
    // in little more than the delay.
    std::vector<uint8_t> big(4u << 20, 7), got(big.size());
    const auto t0 = Clock::now();
    std::thread reader([&] { asio::read(server, asio::buffer(got)); });
    asio::write(client, asio::buffer(big));
    reader.join();
    CHECK(got == big);
    CHECK(ms_since(t0) < delay_ms + 1000);
  }

  TEST_CASE("jitter stays within its bounds; loss adds the penalty at the configured rate") {
    asio::io_context io;
    LinkRelay jittery(io, {.delay_s = 0.010, .jitter_s = 0.004, .seed = 3});
    double lo = 1, hi = 0, sum = 0;
    for (int i = 0; i < 2000; ++i) {
      const double d = jittery.draw_delay(100);
      lo = std::min(lo, d), hi = std::max(hi, d), sum += d;
    }
    CHECK(lo >= 0.006);
    CHECK(hi <= 0.014);
    CHECK(sum / 2000 == doctest::Approx(0.010).epsilon(0.05));

    // One-segment chunks are lost with probability `loss`; a 10-segment chunk with 1-(1-p)^10.
    LinkRelay lossy(io, {.delay_s = 0.001, .loss = 0.05, .loss_penalty_s = 0.02, .seed = 4});
    int lost1 = 0, lost10 = 0, wrong_delay = 0;
    for (int i = 0; i < 20000; ++i) {
      bool lost = false;
      const double d = lossy.draw_delay(1000, &lost);
      wrong_delay += std::abs(d - (lost ? 0.021 : 0.001)) > 1e-12;
      lost1 += lost;
      lossy.draw_delay(14480, &lost);
      lost10 += lost;
    }
    CHECK(wrong_delay == 0);
    CHECK(lost1 / 20000.0 == doctest::Approx(0.05).epsilon(0.15));
    CHECK(lost10 / 20000.0 == doctest::Approx(1 - std::pow(0.95, 10)).epsilon(0.1));

    CHECK_THROWS_AS(LinkRelay(io, {.loss = 1.5}), std::invalid_argument);
    CHECK_THROWS_AS(hearth::tools::parse_endpoint("nohost"), std::invalid_argument);
    CHECK(hearth::tools::parse_endpoint("10.0.0.1:47400").port == 47400);
  }

}  // TEST_SUITE
