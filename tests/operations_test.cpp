// Operations a home can trust: one daemon per data directory, sizes people write, and a device
// that cannot store its weights ends the launch at once instead of hanging it.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <limits>
#include <thread>

#include <csignal>
#include <nlohmann/json.hpp>

#include "cluster/data_dir_lock.h"
#include "cluster/stage_loader.h"
#include "gateway/http_client.h"
#include "profiles/profiler.h"
#include "gateway/http_server.h"
#include "tests/cluster_util.h"
#include "transport/curve.h"
#include "tests/test_util.h"

namespace hearth::cluster {

namespace wire = transport::wire;

TEST_CASE("operations: one daemon per data directory") {
  test::TempDir dir;
  {
    const DataDirLock first(dir.path().string());
    try {
      const DataDirLock second(dir.path().string());
      FAIL("a second lock on the same directory was granted");
    } catch (const std::runtime_error& e) {
      const std::string what = e.what();
      CHECK(what.find("another hearthd") != std::string::npos);
      CHECK(what.find(dir.path().string()) != std::string::npos);
      CHECK(what.find("--data-dir") != std::string::npos);
    }
  }
  const DataDirLock again(dir.path().string());  // released with its holder
}

TEST_CASE("operations: a second hearthd on a daemon's data directory stops with a clear error; sizes take suffixes") {
  test::TempDir dir;
  test::Cluster c(dir);
  c.start("head");
  c.start("a", {"--memory-limit", "300MiB"});
  const auto second = test::run_command(
      {HEARTH_DAEMON, "--name", "twin", "--data-dir", c.daemon("a").data_dir, "--listen", "127.0.0.1:0", "--no-discovery"});
  CAPTURE(second.err);
  CHECK(second.exit_code == 1);
  CHECK(second.err.find("another hearthd") != std::string::npos);
  // The first one is untouched and its limit was read as 300 x 2^20 bytes.
  const auto devices = c.cli({"devices", "--json"});
  REQUIRE(devices.exit_code == 0);
  bool seen = false;
  for (const auto& d : nlohmann::json::parse(devices.out))
    if (d["name"] == "a") {
      seen = true;
      CHECK(d["alive"] == true);
      CHECK(d["usable_memory_bytes"].get<double>() <= 300.0 * (1 << 20));
      CHECK(d["usable_memory_bytes"].get<double>() > 0);
    }
  CHECK(seen);
  const auto bad = test::run_command({HEARTH_DAEMON, "--memory-limit", "3 potatoes", "--data-dir", dir.file("x")});
  CHECK(bad.exit_code != 0);
}

namespace {

// Writes beyond `bytes` fail with EFBIG, as on a full disk, until the guard goes away.
struct FileSizeLimit {
  rlimit old{};
  explicit FileSizeLimit(rlim_t bytes) {
    ::signal(SIGXFSZ, SIG_IGN);
    ::getrlimit(RLIMIT_FSIZE, &old);
    rlimit l = old;
    l.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &l);
  }
  ~FileSizeLimit() { ::setrlimit(RLIMIT_FSIZE, &old); }
};

}  // namespace

namespace {

// A device's loader with a real (unloaded) runner, and what it sent the head.
struct LoaderRig {
  test::TempDir dir;
  zmq::context_t context;
  transport::SocketFactory sockets{context};
  runtime::ThreadPool pool{1};
  DropStats drops;
  StageRunner runner{sockets, pool, drops, "phone", "none", 0, {.to_head = [](capnp::MessageBuilder&) {}, .sampled = nullptr}};
  DaemonConfig config = [this] {
    DaemonConfig c;
    c.data_dir = dir.path().string();
    return c;
  }();
  std::vector<transport::Decoded> to_head;
  StageLoader loader{config, runner,
                     [this](capnp::MessageBuilder& m) { to_head.push_back(transport::decode(transport::encode(m))); },
                     [](const std::string&) {}};
};

}  // namespace

TEST_CASE("operations: a device that cannot store its weights fails the launch at once") {
  LoaderRig rig;
  auto& [dir, context, sockets, pool, drops, runner, config, to_head, loader] = rig;

  capnp::MallocMessageBuilder b;
  auto a = b.initRoot<wire::Envelope>().initAssignment();
  a.setPlanId(42);
  a.setModelHash(0x1234);
  a.setFirstLayer(0);
  a.setLastLayer(1);
  a.setStageFileBytes(16u << 20);
  a.setStageFileHash(0x5678);
  a.setNextEndpoint("127.0.0.1:1");
  a.setNCtx(64);
  a.setKvType(wire::KvType::F16);
  a.setMaxBatch(16);
  a.setMaxSequences(1);
  loader.on_assignment(a.asReader());
  REQUIRE_FALSE(to_head.empty());
  const auto request = to_head.front().envelope();
  REQUIRE(request.isWeightRequest());
  const uint64_t offset = request.getWeightRequest().getOffset();
  zmq::message_t chunk(request.getWeightRequest().getLength());
  std::memset(chunk.data(), 7, chunk.size());

  capnp::MallocMessageBuilder cb;
  auto c = cb.initRoot<wire::Envelope>().initWeightChunk();
  c.setPlanId(42);
  c.setOffset(offset);
  c.setChecksum(XXH3_64bits(chunk.data(), chunk.size()));
  {
    const FileSizeLimit full(1);
    loader.on_weight_chunk(c.asReader(), &chunk, drops);
  }
  const auto last = to_head.back().envelope();
  REQUIRE(last.isLoadStatus());
  CHECK(last.getLoadStatus().getPlanId() == 42);
  CHECK(last.getLoadStatus().getState() == wire::LoadStatus::State::FAILED);
  CHECK(std::string(last.getLoadStatus().getMessage().cStr()).find("cannot store") != std::string::npos);
  // Later chunks of that launch are out of plan, not a crash.
  const size_t sent = to_head.size();
  loader.on_weight_chunk(c.asReader(), &chunk, drops);
  CHECK(to_head.size() == sent);
  CHECK(drops.out_of_plan == 1);
}

TEST_CASE("operations: an assignment whose step plan is no plan is refused, and nothing is requested") {
  LoaderRig rig;
  auto& [dir, context, sockets, pool, drops, runner, config, to_head, loader] = rig;
  const auto assign = [&](const std::vector<std::pair<double, double>>& points) {
    capnp::MallocMessageBuilder b;
    auto a = b.initRoot<wire::Envelope>().initAssignment();
    a.setPlanId(9);
    a.setModelHash(0x1234);
    a.setFirstLayer(0);
    a.setLastLayer(1);
    a.setStageFileBytes(1000);
    a.setStageFileHash(9);
    a.setNextEndpoint("127.0.0.1:1");
    a.setNCtx(64);
    a.setKvType(wire::KvType::F16);
    a.setMaxBatch(16);
    a.setMaxSequences(1);
    auto plan = a.initStepPlan(static_cast<unsigned>(points.size()));
    for (unsigned i = 0; i < points.size(); ++i) plan[i].setRows(points[i].first), plan[i].setMs(points[i].second);
    loader.on_assignment(a.asReader());
  };
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  std::vector<std::pair<double, double>> many;
  for (int i = 1; i <= 17; ++i) many.emplace_back(i, i);
  const std::vector<std::pair<std::string, std::vector<std::pair<double, double>>>> bad{
      {"not from one row", {{2, 1}}},
      {"rows not ascending", {{1, 1}, {1, 2}}},
      {"a negative time", {{1, 1}, {5, -1}}},
      {"no number", {{1, nan}}},
      {"no rows", {{1, 1}, {nan, 2}}},
      {"an endless time", {{1, inf}}},
      {"endless rows", {{1, 1}, {inf, 2}}},
      {"more than 16 points", many},
      {"a step of hours", {{1, 1e8}}},
      // Each point within bounds, but the last piece reaches 1e10 ms by max_batch's 16 rows.
      {"a last piece that runs away", {{1, 0}, {1.000001, 1e3}}}};
  for (const auto& [why, points] : bad) {
    CAPTURE(why);
    CHECK_THROWS_AS(assign(points), std::invalid_argument);
  }
  CHECK(to_head.empty());
  assign({{1, 1.5}, {5, 2}, {10, 4}});  // a plan: the weights are requested
  REQUIRE_FALSE(to_head.empty());
  CHECK(to_head.front().envelope().isWeightRequest());
  to_head.clear();
  assign({});  // none, from a head older than step plans: nothing planned, loaded all the same
  CHECK_FALSE(to_head.empty());
}

TEST_CASE("operations: the memory a device offers, what it holds back, and why") {
  profiles::SystemInfo sys;
  sys.available_memory_bytes = 16'000'000'000;
  auto b = profiles::memory_budget(sys, 0);
  CHECK(b.basis == "available memory");
  CHECK(b.held_back_bytes == 1'280'000'000);  // 8%
  CHECK(b.usable_bytes == b.basis_bytes - b.held_back_bytes);
  CHECK(b.held_back_why.find("8%") != std::string::npos);
  sys.cgroup_limit_bytes = 2'000'000'000;
  b = profiles::memory_budget(sys, 0);
  CHECK(b.basis == "the cgroup's limit");
  CHECK(b.held_back_bytes == 256ull << 20);  // at least 256 MiB
  b = profiles::memory_budget(sys, 3'000'000'000);  // a limit above the cgroup's: the cgroup's holds
  CHECK(b.basis == "the cgroup's limit");
  b = profiles::memory_budget(sys, 60'000'000);
  CHECK(b.basis == "--memory-limit");
  CHECK(b.held_back_bytes == (32ull << 20) + 3'000'000);
  CHECK(b.usable_bytes == 60'000'000 - b.held_back_bytes);
  b = profiles::memory_budget(sys, 1'000'000);  // less than the margin: nothing usable, no underflow
  CHECK(b.usable_bytes == 0);
}

TEST_CASE("operations: a staged assignment gathers weights beside the serving stage and loads only on its commit") {
  LoaderRig rig;
  auto& [dir, context, sockets, pool, drops, runner, config, to_head, loader] = rig;
  const auto assign = [&](uint64_t plan) {
    capnp::MallocMessageBuilder b;
    auto a = b.initRoot<wire::Envelope>().initAssignment();
    a.setPlanId(plan);
    a.setModelHash(0x1234);
    a.setFirstLayer(0);
    a.setLastLayer(1);
    a.setStageFileBytes(1000);
    a.setStageFileHash(plan);
    a.setNextEndpoint("127.0.0.1:1");
    a.setNCtx(64);
    a.setKvType(wire::KvType::F16);
    a.setMaxBatch(16);
    a.setMaxSequences(1);
    a.setStaged(true);
    loader.on_assignment(a.asReader());
  };
  const auto send_all = [&](uint64_t plan) {
    zmq::message_t chunk(1000);
    std::memset(chunk.data(), 7, chunk.size());
    capnp::MallocMessageBuilder cb;
    auto c = cb.initRoot<wire::Envelope>().initWeightChunk();
    c.setPlanId(plan);
    c.setOffset(0);
    c.setChecksum(XXH3_64bits(chunk.data(), chunk.size()));
    loader.on_weight_chunk(c.asReader(), &chunk, drops);
  };
  const auto last_state = [&] { return to_head.back().envelope().getLoadStatus().getState(); };
  assign(7);
  REQUIRE(to_head.back().envelope().isWeightRequest());
  send_all(7);
  CHECK(last_state() == wire::LoadStatus::State::STAGED);  // not LOADING: nothing was unloaded or loaded
  // A commit for another plan is refused; a stop for this one drops what it staged.
  loader.on_commit(8);
  CHECK(last_state() == wire::LoadStatus::State::FAILED);
  loader.on_stop(7);
  loader.on_commit(7);
  CHECK(last_state() == wire::LoadStatus::State::FAILED);
  CHECK(to_head.back().envelope().getLoadStatus().getPlanId() == 7);
  // Staged again (the weights are in the cache now): the commit loads them. These bytes are no
  // GGUF, so the load fails, which is what shows that the commit, and only it, loads.
  assign(7);
  CHECK(last_state() == wire::LoadStatus::State::STAGED);
  loader.on_commit(7);
  CHECK(last_state() == wire::LoadStatus::State::FAILED);
  bool loading = false;
  for (const auto& m : to_head)
    loading |= m.envelope().isLoadStatus() && m.envelope().getLoadStatus().getState() == wire::LoadStatus::State::LOADING;
  CHECK(loading);
}

}  // namespace hearth::cluster

namespace hearth::http {

namespace {

double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0) (void)::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  return fd;
}

}  // namespace

TEST_CASE("operations: out of file descriptors, the HTTP server backs off instead of spinning, and recovers") {
  net::io_context io;
  const HttpConnection::Handler handler = [](const std::shared_ptr<HttpConnection>& c) { c->respond(200, "text/plain", "ok"); };
  const HttpConnection::Observer observer = [](const std::string&, int) {};
  HttpServer server(io, "127.0.0.1:0", handler, observer);
  server.start();
  const std::string address = server.address();
  const int port = std::stoi(address.substr(address.rfind(':') + 1));

  // Connections wait in the backlog while the server's loop is not running yet; then no
  // descriptor is left for accept() to take: it fails with EMFILE for as long as they wait.
  std::vector<int> clients;
  for (int i = 0; i < 4; ++i)
    if (const int fd = connect_to(port); fd >= 0) clients.push_back(fd);
  REQUIRE(clients.size() == 4);
  // The server's thread starts now and runs its loop only once the limit is set: nothing but
  // accept() should meet the limit (a sanitizer's thread start does not take it well).
  std::atomic<bool> go{false};
  std::thread loop([&] {
    while (!go) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    io.run();
  });
  rlimit old{};
  ::getrlimit(RLIMIT_NOFILE, &old);
  int open_now = 0;
  for (int fd = 0; fd < 65536; ++fd)
    if (::fcntl(fd, F_GETFD) != -1) open_now = fd + 1;
  rlimit tight = old;
  tight.rlim_cur = static_cast<rlim_t>(open_now);
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &tight) == 0);
  std::vector<int> holes;  // free numbers below the limit, taken so that accept() finds none
  for (int fd; (fd = ::open("/dev/null", O_RDONLY)) >= 0;) holes.push_back(fd);
  go = true;
  const double cpu0 = cpu_seconds();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const double busy = cpu_seconds() - cpu0;
  ::setrlimit(RLIMIT_NOFILE, &old);
  for (int fd : holes) ::close(fd);
  MESSAGE("CPU time while accept() fails: " << busy << " s in 1 s");
  CHECK(busy < 0.3);  // a loop that accepts again at once takes the whole second
  for (int fd : clients) ::close(fd);
  // Descriptors are back: the server answers again (within its longest backoff, 1 s).
  const HttpClient client("http://" + address, "");
  CHECK(client.get("/").status == 200);
  io.stop();
  loop.join();
}

}  // namespace hearth::http

namespace hearth::cluster {

namespace {

// A plain TCP client that speaks just enough ZMTP 3.0 to announce one frame of `announced` bytes
// in the CURVE handshake, then sends `sent` bytes of it (or until the daemon hangs up).
void announce_large_frame(int port, uint64_t announced, size_t sent) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  std::string greeting(64, '\0');
  greeting[0] = '\xff';
  greeting[9] = '\x7f';
  greeting[10] = 3;  // ZMTP 3.0
  greeting.replace(12, 5, "CURVE");
  std::string header(9, '\0');
  header[0] = 0x06;  // a long command frame
  for (int i = 0; i < 8; ++i) header[1 + i] = static_cast<char>((announced >> (8 * (7 - i))) & 0xff);
  const std::string junk(1 << 20, 'x');
  std::string first = greeting + header;
  (void)::send(fd, first.data(), first.size(), MSG_NOSIGNAL);
  for (size_t done = 0; done < sent; done += junk.size())
    if (::send(fd, junk.data(), junk.size(), MSG_NOSIGNAL) <= 0) break;  // hung up: as it should
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ::close(fd);
}

}  // namespace

TEST_CASE("operations: a stranger announcing a large frame cannot make a daemon hold it") {
  test::TempDir dir;
  test::Cluster c(dir);
  const auto& head = c.start("head");
  const int control = transport::endpoint_port(c.head());
  const uint64_t before = test::process_rss(head.pid);
  announce_large_frame(control, 400ull << 20, 48u << 20);      // on the control socket
  announce_large_frame(control + 1, 400ull << 20, 48u << 20);  // and on the data socket
  const uint64_t after = test::process_rss(head.pid);
  MESSAGE("head RSS " << before / 1e6 << " MB -> " << after / 1e6 << " MB after two strangers sent 48 MB each");
  CHECK(after < before + (24u << 20));
  CHECK(c.cli({"devices"}).exit_code == 0);  // and it still serves
}

}  // namespace hearth::cluster

namespace hearth::cluster {

TEST_CASE("operations: the CLI tells 'cannot reach' from 'not authorised' within seconds") {
  test::TempDir dir;
  test::Cluster c(dir);
  c.start("head");
  const std::string head = c.head().substr(std::string("tcp://").size());
  const auto timed = [](const std::vector<std::string>& args) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = test::run_cli(args);
    return std::make_pair(r, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  };
  // No keys at all.
  std::filesystem::create_directories(dir.file("empty"));
  auto [no_keys, t1] = timed({"--head", head, "--data-dir", dir.file("empty"), "devices"});
  CAPTURE(no_keys.err);
  CHECK(no_keys.exit_code == 6);
  CHECK(no_keys.err.find("has no keys") != std::string::npos);
  CHECK(t1 < 5);
  // Keys the head never paired, and the head's public key (no secret).
  const auto head_keys = transport::load_keys(c.daemon("head").data_dir + "/keys");
  REQUIRE(head_keys);
  (void)transport::load_or_create_keys(dir.file("stranger") + "/keys");
  transport::write_private_file(dir.file("stranger") + "/keys/head.pub", head_keys->public_key + "\n");
  auto [stranger, t2] = timed({"--head", head, "--data-dir", dir.file("stranger"), "devices"});
  CAPTURE(stranger.err);
  CHECK(stranger.exit_code == 6);
  CHECK(stranger.err.find("refused this CLI's key") != std::string::npos);
  CHECK(t2 < 5);
  // Nothing listening.
  auto [nobody, t3] = timed({"--head", "127.0.0.1:1", "--data-dir", dir.file("stranger"), "devices"});
  CHECK(nobody.exit_code == 5);
  CHECK(nobody.err.find("nothing listens there") != std::string::npos);
  CHECK(t3 < 5);
}

}  // namespace hearth::cluster

namespace hearth::cluster {

TEST_CASE(
    "operations: files people get wrong: a directory as the model, loose key permissions, a data directory under umask 000") {
  test::TempDir dir;
  const auto run = test::run_cli({"run", "--model", dir.path().string(), "--prompt", "x", "-n", "1"});
  CHECK(run.exit_code != 0);
  CHECK(run.err.find("is actually a directory") != std::string::npos);  // CLI11's check, before any file is read

  const std::string keys = dir.file("keys");
  (void)transport::load_or_create_keys(keys);
  ::chmod((keys + "/node.key").c_str(), 0644);
  CHECK_THROWS_WITH(transport::load_keys(keys), doctest::Contains("chmod 600"));
  ::chmod((keys + "/node.key").c_str(), 0600);
  CHECK(transport::load_keys(keys).has_value());

  // A daemon that stops early (its --listen is wrong) still leaves a private data directory and
  // whole files behind.
  const std::string data = dir.file("fresh");
  const mode_t old = ::umask(0);
  const auto r = test::run_command({HEARTH_DAEMON, "--data-dir", data, "--listen", "nohost", "--no-discovery", "--insecure"});
  ::umask(old);
  CHECK(r.exit_code == 1);
  struct stat st {};
  REQUIRE(::stat(data.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  REQUIRE(::stat((data + "/node_id").c_str(), &st) == 0);
  CHECK(st.st_size == 17);
  CHECK((st.st_mode & 077) == 0);
}

}  // namespace hearth::cluster
