// The wire: envelopes survive a round trip and any byte offset; malformed frames are refused with
// a reason; beacons parse strictly.
#include <doctest/doctest.h>

#include <capnp/message.h>
#include <cstring>
#include <random>
#include <thread>

#include "transport/codec.h"
#include "transport/discovery.h"
#include "transport/sockets.h"

using namespace hearth::transport;

namespace {

zmq::message_t sample() {
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<wire::Envelope>();
  env.setRequestId(42);
  auto f = env.initForward();
  f.setPlanId(7);
  f.setNEmbd(64);
  auto ch = f.initChunks(2);
  ch[0].setSeq(1);
  ch[1].setSeq(2);
  ch[1].setNTokens(3);
  return encode(b);
}

std::string error_of(const zmq::message_t& m) {
  try {
    decode(m);
    return "";
  } catch (const DecodeError& e) {
    return e.what();
  }
}

}  // namespace

TEST_SUITE("transport") {
  TEST_CASE("an envelope round-trips, even from a misaligned buffer") {
    const zmq::message_t m = sample();
    for (size_t offset = 0; offset < 8; ++offset) {
      // A frame whose bytes start at any offset, as ZeroMQ may hand them out.
      std::vector<uint8_t> storage(m.size() + 8);
      std::memcpy(storage.data() + offset, m.data(), m.size());
      const zmq::message_t framed(storage.data() + offset, m.size());
      const Decoded d = decode(framed);
      const auto env = d.envelope();
      CHECK(env.getRequestId() == 42);
      REQUIRE(env.isForward());
      CHECK(env.getForward().getPlanId() == 7);
      CHECK(env.getForward().getChunks()[1].getNTokens() == 3);
      CHECK(std::string(kind_name(env)) == "forward");
    }
  }

  TEST_CASE("malformed frames are refused with a reason") {
    CHECK(error_of(zmq::message_t()).find("empty") != std::string::npos);
    CHECK(error_of(zmq::message_t("1234567", 7)).find("whole number of words") != std::string::npos);
    CHECK(!error_of(zmq::message_t(std::string(16, '\xff').data(), 16)).empty());
    std::vector<uint8_t> big(kMaxEnvelopeBytes + 8);
    CHECK(error_of(zmq::message_t(big.data(), big.size())).find("exceeds") != std::string::npos);
    // Truncated and extended versions of a valid message.
    const zmq::message_t m = sample();
    for (size_t n = 8; n < m.size(); n += 8) CHECK(!error_of(zmq::message_t(m.data(), n)).empty());
    std::vector<uint8_t> longer(m.size() + 8, 0);
    std::memcpy(longer.data(), m.data(), m.size());
    CHECK(error_of(zmq::message_t(longer.data(), longer.size())).find("segment table") != std::string::npos);
    // Random corruption never crashes (the sanitizer build checks the reads).
    std::vector<uint8_t> bytes(static_cast<const uint8_t*>(m.data()), static_cast<const uint8_t*>(m.data()) + m.size());
    for (size_t at = 0; at < bytes.size(); ++at) {
      auto copy = bytes;
      copy[at] ^= 0xA5;
      try {
        const Decoded d = decode(zmq::message_t(copy.data(), copy.size()));
        const auto env = d.envelope();
        if (env.isForward())
          for (auto c : env.getForward().getChunks()) (void)c.getSeq();
      } catch (const DecodeError&) {
      } catch (const kj::Exception&) {  // a field read of a damaged message; handlers catch this too
      }
    }
  }

  TEST_CASE("beacons parse strictly and carry no secret") {
    const Beacon b{"node-1.a_b", 47400, true};
    const std::string text = encode_beacon(b);
    CHECK(text == "hearth/1 node-1.a_b 47400 head");
    const auto back = decode_beacon(text);
    REQUIRE(back);
    CHECK(back->node_id == b.node_id);
    CHECK(back->control_port == 47400);
    CHECK(back->is_head);
    for (const char* bad : {"", "hearth/1", "hearth/2 a 1 head", "hearth/1 a 0 head", "hearth/1 a 70000 node",
                            "hearth/1 a 1 boss", "hearth/1 a;rm 1 node", "hearth/1 a 1 node extra", "hearth/1 a -1 node"})
      CHECK_MESSAGE(!decode_beacon(bad), bad);
  }

  TEST_CASE("discovery hears a beacon sent to loopback") {
    // On a LAN every daemon hears the broadcast on one port; on loopback a datagram reaches one
    // socket only, so here each side listens on its own port and sends to the other's.
    boost::asio::io_context io;
    const int port = 47000 + static_cast<int>(std::random_device{}() % 2000), other = port + 2000;
    std::string heard;
    Discovery listener(io,
                       {.port = other, .listen_port = port, .send_to = "127.0.0.1", .interval = std::chrono::milliseconds(50)},
                       {"listener", 1, false}, [&](const Beacon& b, const std::string& ip) {
                         if (b.node_id == "speaker") {
                           heard = ip + ":" + std::to_string(b.control_port);
                           io.stop();
                         }
                       });
    Discovery speaker(io, {.port = port, .listen_port = other, .send_to = "127.0.0.1", .interval = std::chrono::milliseconds(50)},
                      {"speaker", 47400, true}, [](const Beacon&, const std::string&) {});
    listener.start();
    speaker.start();
    boost::asio::steady_timer timeout(io, std::chrono::seconds(3));
    timeout.async_wait([&](const boost::system::error_code&) { io.stop(); });
    io.run();
    CHECK(heard == "127.0.0.1:47400");
  }

  TEST_CASE("endpoints") {
    CHECK(tcp_endpoint("127.0.0.1:5") == "tcp://127.0.0.1:5");
    CHECK(tcp_endpoint("tcp://h:80") == "tcp://h:80");
    CHECK_THROWS_AS(tcp_endpoint("nohost"), std::invalid_argument);
    CHECK_THROWS_AS(tcp_endpoint("h:99999"), std::invalid_argument);
    CHECK_THROWS_AS(tcp_endpoint("h:8x"), std::invalid_argument);
    CHECK(endpoint_port("tcp://h:47400") == 47400);
  }

}  // TEST_SUITE
