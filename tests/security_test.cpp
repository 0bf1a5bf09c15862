// CurveZMQ + ZAP: who may talk to a cluster. Unit checks of keys, tokens and the ZAP handler, and
// real daemons on loopback: a paired device works, strangers cannot register, push activations,
// or read a generation.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <capnp/message.h>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>
#include <zmq.hpp>

#include "tests/cluster_util.h"
#include "transport/codec.h"
#include "transport/curve.h"
#include "transport/discovery.h"
#include "transport/sockets.h"
#include "transport/zap.h"

namespace {

using hearth::test::Cluster;
using hearth::test::TempDir;
namespace transport = hearth::transport;
namespace wire = hearth::transport::wire;

// Sends one status request on `s` and says whether any reply came within `wait`.
bool answers(zmq::socket_t& s, std::chrono::milliseconds wait) {
  capnp::MallocMessageBuilder b;
  b.initRoot<wire::Envelope>().initStatusRequest();
  s.set(zmq::sockopt::sndtimeo, static_cast<int>(wait.count()));
  if (!s.send(transport::encode(b), zmq::send_flags::none)) return false;  // the handshake never completed
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  zmq::poll(&item, 1, wait);
  return (item.revents & ZMQ_POLLIN) != 0;
}

// A ROUTER that echoes one message back, for the ZAP unit tests.
bool echo_once(zmq::socket_t& server, std::chrono::milliseconds wait) {
  zmq::pollitem_t item{server.handle(), 0, ZMQ_POLLIN, 0};
  zmq::poll(&item, 1, wait);
  if (!(item.revents & ZMQ_POLLIN)) return false;
  zmq::message_t id, body;
  (void)server.recv(id);
  (void)server.recv(body);
  server.send(id, zmq::send_flags::sndmore);
  server.send(body, zmq::send_flags::none);
  return true;
}

bool round_trip(zmq::socket_t& server, zmq::socket_t& client) {
  client.set(zmq::sockopt::sndtimeo, 1500);
  if (!client.send(zmq::str_buffer("ping"), zmq::send_flags::none)) return false;
  if (!echo_once(server, std::chrono::milliseconds(1500))) return false;
  zmq::pollitem_t item{client.handle(), 0, ZMQ_POLLIN, 0};
  zmq::poll(&item, 1, std::chrono::milliseconds(1500));
  return (item.revents & ZMQ_POLLIN) != 0;
}

}  // namespace

TEST_CASE("join tokens round-trip and malformed ones are refused with a reason") {
  const transport::CurveKeys k = transport::generate_curve_keys();
  const transport::JoinToken t{k.public_key, 47402, transport::random_secret()};
  const std::string text = transport::format_join_token(t);
  const transport::JoinToken back = transport::parse_join_token(text);
  CHECK(back.head_public_key == t.head_public_key);
  CHECK(back.pairing_port == 47402);
  CHECK(back.secret == t.secret);
  CHECK(text.find(k.secret_key) == std::string::npos);
  for (const std::string& bad : std::vector<std::string>{"", "hearth1-", "hearth2-47402-00-00",
                                                         "hearth1-0-" + std::string(64, 'a') + "-" + std::string(32, 'b'),
                                                         "hearth1-47402-" + std::string(63, 'a') + "-" + std::string(32, 'b'),
                                                         "hearth1-47402-" + std::string(64, 'a') + "-" + std::string(31, 'b'),
                                                         "hearth1-47402-" + std::string(64, 'g') + "-" + std::string(32, 'b')})
    CHECK_THROWS_AS(transport::parse_join_token(bad), std::invalid_argument);
  CHECK(transport::secrets_equal("abc", "abc"));
  CHECK_FALSE(transport::secrets_equal("abc", "abd"));
  CHECK_FALSE(transport::secrets_equal("abc", "abcd"));
}

TEST_CASE("keys persist in the data directory, readable by their owner only") {
  TempDir dir;
  const auto keys_dir = std::filesystem::path(dir.file("keys"));
  const transport::CurveKeys a = transport::load_or_create_keys(keys_dir);
  const transport::CurveKeys b = transport::load_or_create_keys(keys_dir);
  CHECK(a.public_key == b.public_key);
  CHECK(a.secret_key == b.secret_key);
  CHECK(transport::is_z85_key(a.public_key));
  struct stat st {};
  REQUIRE(::stat((keys_dir / "node.key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  REQUIRE(::stat(keys_dir.c_str(), &st) == 0);
  CHECK((st.st_mode & 077) == 0);
  transport::write_private_file(keys_dir / "node.key", "not a key\n");
  CHECK_THROWS_WITH_AS(transport::load_keys(keys_dir), doctest::Contains("not a key file"), std::runtime_error);
}

TEST_CASE("the ZAP handler admits allowlisted keys only; without one, CURVE admits anyone") {
  const transport::CurveKeys server = transport::generate_curve_keys(), member = transport::generate_curve_keys(),
                             stranger = transport::generate_curve_keys();
  SUBCASE("with our ZAP handler") {
    zmq::context_t ctx;
    transport::ZapHandler zap(ctx);
    zap.allow(member.public_key);
    const transport::SocketFactory f(ctx, server, &zap);
    zmq::socket_t router = f.bind_router("tcp://127.0.0.1:*", {});
    const std::string endpoint = router.get(zmq::sockopt::last_endpoint);
    zmq::socket_t ok = transport::SocketFactory(ctx, member).connect_dealer(endpoint, "m", {.server_key = server.public_key});
    CHECK(round_trip(router, ok));
    zmq::socket_t bad = transport::SocketFactory(ctx, stranger).connect_dealer(endpoint, "s", {.server_key = server.public_key});
    CHECK_FALSE(round_trip(router, bad));
    CHECK(zap.denied() >= 1);
    // A plain (non-CURVE) client gets nowhere either.
    zmq::socket_t plain = transport::SocketFactory(ctx).connect_dealer(endpoint, "p", {});
    CHECK_FALSE(round_trip(router, plain));
    // The pairing domain admits any key (the request itself must prove the secret).
    zmq::socket_t pairing = f.bind_router("tcp://127.0.0.1:*", {.zap_domain = transport::kPairingDomain});
    zmq::socket_t newcomer =
        transport::SocketFactory(ctx, stranger)
            .connect_dealer(pairing.get(zmq::sockopt::last_endpoint), "n", {.server_key = server.public_key});
    CHECK(round_trip(pairing, newcomer));
  }
  SUBCASE("libzmq without a ZAP handler admits a stranger that knows the server key: why every daemon runs one") {
    zmq::context_t ctx;
    zmq::socket_t router(ctx, zmq::socket_type::router);
    router.set(zmq::sockopt::linger, 0);
    router.set(zmq::sockopt::curve_server, true);
    router.set(zmq::sockopt::curve_secretkey, server.secret_key);
    router.bind("tcp://127.0.0.1:*");
    zmq::socket_t bad = transport::SocketFactory(ctx, stranger)
                            .connect_dealer(router.get(zmq::sockopt::last_endpoint), "s", {.server_key = server.public_key});
    CHECK(round_trip(router, bad));
    // Our factory refuses to make such a socket.
    CHECK_THROWS_AS(transport::SocketFactory(ctx, server).bind_router("tcp://127.0.0.1:*", {}), std::logic_error);
  }
  SUBCASE("a CURVE client needs the server's key") {
    zmq::context_t ctx;
    CHECK_THROWS_WITH_AS(transport::SocketFactory(ctx, member).connect_dealer("tcp://127.0.0.1:1", "x", {}),
                         doctest::Contains("no CURVE key known"), std::invalid_argument);
  }
}

TEST_CASE("a paired cluster generates; strangers cannot register, push activations or read the stream") {
  auto model = hearth::test::shared_file("models/stories260K/stories260K.gguf");
  if (!model) return;
  TempDir dir;
  Cluster c(dir);
  c.start("head");
  c.start("a");  // paired with the head's join token
  REQUIRE(c.cli({"launch", "--model", *model, "--split", "head:2,a:3"}).exit_code == 0);
  const auto reference = c.cli({"generate", "--prompt", "Once upon a time", "-n", "24", "--temp", "0"});
  REQUIRE(reference.exit_code == 0);
  CHECK(reference.out.rfind(", there was a little girl named Lily.", 0) == 0);

  const auto head_keys = transport::load_keys(c.daemon("head").data_dir + "/keys");
  const auto a_keys = transport::load_keys(c.daemon("a").data_dir + "/keys");
  REQUIRE((head_keys && a_keys));
  const std::string secret = transport::read_first_line(c.daemon("head").data_dir + "/keys/pairing.secret");
  REQUIRE(secret.size() >= 32);

  SUBCASE("a device with another key cannot register, even with the head's public key") {
    // Its data directory claims to be paired (it holds the head's public key, which is no secret),
    // but the head never paired its key.
    const std::string stranger_dir = dir.file("node-stranger");
    std::filesystem::create_directories(stranger_dir + "/keys");
    transport::write_private_file(stranger_dir + "/keys/head.pub", head_keys->public_key + "\n");
    c.set_start_timeout(std::chrono::seconds(4));
    CHECK_THROWS_WITH(c.start("stranger"), doctest::Contains("did not register"));
    const auto devices = c.cli({"devices", "--json"});
    CHECK(devices.out.find("stranger") == std::string::npos);
    const auto s = nlohmann::json::parse(c.cli({"status", "--json"}).out);
    CHECK(s["security"] == "curve");
    CHECK(s["refused_handshakes"].get<int>() >= 1);
  }
  SUBCASE("a wrong token is refused and the daemon says why") {
    const auto token = transport::parse_join_token(transport::read_first_line(c.daemon("head").data_dir + "/keys/join-token"));
    const std::string forged =
        transport::format_join_token({token.head_public_key, token.pairing_port, transport::random_secret()});
    const auto r = hearth::test::run_command({HEARTH_DAEMON, "--name", "forger", "--listen", "127.0.0.1:0", "--no-discovery",
                                              "--data-dir", dir.file("node-forger"), "--join", c.head(), "--token", forged});
    CHECK(r.exit_code != 0);
    CHECK(r.err.find("wrong join token") != std::string::npos);
  }
  SUBCASE("a stranger's socket cannot read the stream or push activations") {
    zmq::context_t ctx;
    const transport::CurveKeys stranger = transport::generate_curve_keys();
    const transport::SocketFactory strange(ctx, stranger), member(ctx, head_keys);
    zmq::socket_t spy = strange.connect_dealer(c.head(), "spy", {.server_key = head_keys->public_key});
    CHECK_FALSE(answers(spy, std::chrono::milliseconds(1500)));
    zmq::socket_t friendly = member.connect_dealer(c.head(), "friend", {.server_key = head_keys->public_key});
    CHECK(answers(friendly, std::chrono::milliseconds(3000)));  // the same request from a member is answered

    std::string a_data;
    for (const auto& d : nlohmann::json::parse(c.cli({"devices", "--json"}).out))
      if (d["name"] == "a") a_data = d["data_endpoint"];
    REQUIRE(!a_data.empty());
    // Garbage that a's decoder would count as malformed, if it ever got that far.
    zmq::socket_t push = strange.connect_push(a_data, {.server_key = a_keys->public_key});
    (void)push.send(zmq::str_buffer("activations from a stranger"), zmq::send_flags::dontwait);
    std::this_thread::sleep_for(std::chrono::milliseconds(900));  // a heartbeat carries a's counters
    const auto s = nlohmann::json::parse(c.cli({"status", "--json"}).out);
    for (const auto& st : s["plan"]["stages"])
      if (st["device"] == "a") {
        CHECK(st["refused_handshakes"].get<int>() >= 1);
        CHECK(st["dropped"].get<int>() == 0);  // nothing got as far as the message decoder
      }
    const auto again = c.cli({"generate", "--prompt", "Once upon a time", "-n", "24", "--temp", "0"});
    CHECK(again.out == reference.out);
  }
  SUBCASE("the discovery beacon holds only its four public fields: no key, no secret") {
    // hearthd builds its beacon from exactly these (apps/hearthd/main.cpp); the encoding adds nothing.
    const std::string beacon = transport::encode_beacon({"0123456789abcdef", 47400, true});
    CHECK(beacon == "hearth/1 0123456789abcdef 47400 head");
    CHECK(beacon.find(head_keys->public_key) == std::string::npos);
    CHECK(beacon.find(secret) == std::string::npos);
  }
}
