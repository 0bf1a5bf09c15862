// The head's decisions, in-process: the Head runs against fakes of the interfaces it owns
// (cluster/host.h: an outbox, its local stage, its host, a clock), so registration, launches,
// recovery and their failures are checked without sockets or processes.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "cluster/head.h"
#include "cluster/wire_convert.h"
#include "transport/printable.h"
#include "transport/status_view.h"
#include "tests/test_util.h"

namespace hearth::cluster {
namespace {

namespace wire = transport::wire;

// Everything the head sent, decoded, by recipient.
struct FakeOutbox final : Outbox {
  struct Sent {
    std::string to;
    transport::Decoded message;
  };
  std::vector<Sent> sent;
  std::set<std::string> gone;  // identities whose sends fail

  bool send(const std::string& identity, capnp::MessageBuilder& m) override {
    if (gone.count(identity)) return false;
    sent.push_back({identity, transport::decode(transport::encode(m))});
    return true;
  }
  bool send(const std::string& identity, capnp::MessageBuilder& m, zmq::message_t&&) override { return send(identity, m); }

  // The messages of one kind sent to `to`, oldest first.
  std::vector<wire::Envelope::Reader> to(const std::string& identity, wire::Envelope::Which kind) const {
    std::vector<wire::Envelope::Reader> out;
    for (const auto& s : sent)
      if (s.to == identity && s.message.envelope().which() == kind) out.push_back(s.message.envelope());
    return out;
  }
};

// The head's own stage: a one-stage plan samples token 65 after every chunk that wants one.
struct FakeStage final : LocalStage {
  bool is_loaded = false;
  runtime::StageSpec spec;
  uint64_t plan_id = 0;
  int loads = 0, forwards = 0;
  std::chrono::milliseconds compute_time{0};  // each batch takes this long (a busy device)
  std::chrono::milliseconds row_time{0};      // and this long for each of its tokens
  // The batches computed, for a test to answer as the pipeline's last stage would.
  struct Computed {
    std::vector<uint64_t> seqs;
    int rows = 0, drafts = 0;  // drafts: of a batch of one chunk
    bool decodes = false;      // no prompt in it
    int32_t last_token = -1;
  };
  std::vector<Computed> computed;
  StepTime planned;  // what the plan expects of its steps
  StageCounters work;
  void load(uint64_t id, const std::string&, const runtime::StageSpec& s, const runtime::StageOptions&, const NextHop&,
            const StepTime& p) override {
    is_loaded = true, spec = s, plan_id = id, planned = p, ++loads;
  }
  void unload() override { is_loaded = false; }
  bool loaded() const override { return is_loaded; }
  int max_batch() const override { return 256; }
  bool has_output() const override { return spec.has_output; }
  StageOutput compute(const Batch& batch) override {
    std::this_thread::sleep_for(compute_time + row_time * batch.n_tokens());
    work.batches++;
    Computed& c = computed.emplace_back();
    for (const auto& chunk : batch.chunks) c.seqs.push_back(chunk.seq);
    c.rows = batch.n_tokens();
    c.drafts = batch.chunks.size() == 1 ? batch.chunks[0].drafts : 0;
    c.decodes = std::none_of(batch.chunks.begin(), batch.chunks.end(), [](const BatchChunk& b) { return b.is_prompt; });
    c.last_token = batch.tokens.empty() ? -1 : batch.tokens.back();
    const auto planned_ns = static_cast<uint64_t>(planned.at(c.rows) * 1e6);
    if (batch.n_tokens() == 1) {
      work.decode_steps++;
      work.decode_ns += static_cast<uint64_t>(std::chrono::nanoseconds(compute_time).count());
      work.decode_planned_ns += planned_ns;
    } else if (c.decodes) {  // as StageRunner counts a decode step of several rows
      work.batched_steps++;
      work.batched_rows += static_cast<uint64_t>(c.rows);
      work.batched_ns += static_cast<uint64_t>(std::chrono::nanoseconds(compute_time + row_time * c.rows).count());
      work.batched_planned_ns += planned_ns;
    }
    StageOutput out;
    for (const auto& c : batch.chunks)
      if (c.want_token && spec.has_output) out.sampled.push_back({c.seq, 65});
    return out;
  }
  bool push_forward(const Batch&, const std::vector<float>&) override { return ++forwards, true; }
  void release(const std::vector<uint64_t>&) override {}
  StageCounters counters() const override { return work; }
};

struct FakeHost final : Host {
  std::vector<std::string> admitted;
  void admit(const std::string& key) override { admitted.push_back(key); }
  void count_out_of_plan() override {}
  void count_unexpected() override {}
  DropCounts drops() const override { return {}; }
  uint64_t refused_handshakes() const override { return 0; }
  uint64_t resident_bytes() const override { return 0; }
};

struct FakeClock final : Clock {
  time_point t = std::chrono::steady_clock::now();
  time_point now() const override { return t; }
  void advance(std::chrono::milliseconds d) { t += d; }
};

profiles::Profile device_profile(const std::string& name, double memory_bytes, double bandwidth = 20e9) {
  profiles::Profile p;
  p.device.name = name;
  p.device.usable_memory_bytes = memory_bytes;
  p.device.memory_bandwidth_bytes_per_s = bandwidth;
  p.device.prefill_flop_s = 100e9;
  p.system.cores = 4;
  return p;
}

// A head with fakes around it, and helpers that send it what devices and clients would.
struct Harness {
  FakeOutbox outbox;
  FakeStage stage;
  FakeHost host;
  FakeClock clock;
  Head head;
  std::map<std::string, uint64_t> incarnations;

  // `keys_dir`: where pairing keeps its secret (empty: an --insecure head, which pairs nobody).
  explicit Harness(double head_memory = 8e9, std::string keys_dir = "", double head_bandwidth = 20e9)
      : head({.node_id = "head-id",
              .control_endpoint = "tcp://127.0.0.1:5000",
              .data_endpoint = "tcp://127.0.0.1:5001",
              .profile = device_profile("head", head_memory, head_bandwidth),
              .public_key = keys_dir.empty() ? "" : transport::generate_curve_keys().public_key,
              .keys_dir = keys_dir,
              .recovery_wait_s = 30},
             {outbox, stage, host, clock}) {}

  void deliver(const std::string& from, capnp::MallocMessageBuilder& b, const char* key = nullptr) {
    const transport::Decoded d = transport::decode(transport::encode(b));
    head.on_control(from, "127.0.0.1", key, d, nullptr);
  }
  void hello(const std::string& id, const std::string& name, const char* key, double memory = 8e9,
             uint16_t version = wire::PROTOCOL_VERSION, uint64_t incarnation = 7) {
    hello(id, device_profile(name, memory), key, version, incarnation);
  }
  void hello(const std::string& id, const profiles::Profile& profile, const char* key, uint16_t version = wire::PROTOCOL_VERSION,
             uint64_t incarnation = 7) {
    capnp::MallocMessageBuilder b;
    auto h = b.initRoot<wire::Envelope>().initHello();
    h.setProtocolVersion(version);
    h.setNodeId(id);
    h.setControlEndpoint("tcp://127.0.0.1:6000");
    h.setDataEndpoint("tcp://127.0.0.1:6001");
    h.setIncarnation(incarnations[id] = incarnation);
    to_wire(profile, h.initProfile());
    deliver(id, b, key);
  }
  void heartbeat(const std::string& id) {
    capnp::MallocMessageBuilder b;
    auto h = b.initRoot<wire::Envelope>().initHeartbeat();
    h.setNodeId(id);
    h.setIncarnation(incarnations[id]);
    deliver(id + "/hb", b);
  }
  void launch(const std::string& model, const std::string& split = "", uint32_t ctx = 64, const std::string& draft = "") {
    capnp::MallocMessageBuilder b;
    auto env = b.initRoot<wire::Envelope>();
    env.setRequestId(1);
    auto r = env.initLaunchRequest();
    r.setModelPath(model);
    r.setSplit(split);
    r.setCtx(ctx);
    r.setDraft(draft);
    deliver("cli", b);
  }
  void load_status(const std::string& id, uint64_t plan_id, wire::LoadStatus::State state, const std::string& message = "") {
    capnp::MallocMessageBuilder b;
    auto s = b.initRoot<wire::Envelope>().initLoadStatus();
    s.setPlanId(plan_id);
    s.setState(state);
    s.setMessage(message);
    deliver(id, b);
  }
  void ready(const std::string& id, uint64_t plan_id) { load_status(id, plan_id, wire::LoadStatus::State::READY); }
  // The devices of the staged launch report their weights here (the head then switches to it,
  // unless old conversations still run), and, once it did, loaded.
  void bring_up() {
    if (const LaunchedPlan* n = head.next()) {
      std::vector<std::string> ids;
      for (size_t i = 1; i < n->stages.size(); ++i) ids.push_back(n->stages[i].node_id);
      const uint64_t id = n->id;
      for (const auto& d : ids) load_status(d, id, wire::LoadStatus::State::STAGED);
    }
    const LaunchedPlan* p = head.plan();
    if (p == nullptr || p->state() != LaunchState::kLoading) return;
    std::vector<std::string> ids;
    for (size_t i = 1; i < p->stages.size(); ++i) ids.push_back(p->stages[i].node_id);
    const uint64_t id = p->id;
    for (const auto& d : ids) ready(d, id);
  }
  void generate(uint64_t request_id, const std::string& prompt, uint32_t n) {
    capnp::MallocMessageBuilder b;
    auto env = b.initRoot<wire::Envelope>();
    env.setRequestId(request_id);
    auto g = env.initGenerateRequest();
    g.setPrompt(prompt);
    g.setNPredict(n);
    runtime::SamplingParams greedy;
    greedy.temperature = 0;
    to_wire(greedy, g.initSampling());
    deliver("client", b);
  }
  // With no device registered, the head alone loads `model`: the plan that then serves.
  uint64_t serve_alone(const std::string& model) {
    launch(model);
    REQUIRE(head.plan() != nullptr);
    REQUIRE(head.plan()->ready());
    return head.plan()->id;
  }
  // A heartbeat with the stage's decode counters (since the daemon started): its one-token
  // steps, and its steps of several rows.
  void heartbeat(const std::string& id, const StepCount& one_token, const StepCount& batched = {}) {
    capnp::MallocMessageBuilder b;
    auto h = b.initRoot<wire::Envelope>().initHeartbeat();
    h.setNodeId(id);
    h.setIncarnation(incarnations[id]);
    h.setDecodeSteps(one_token.steps);
    h.setDecodeNs(one_token.ns);
    h.setDecodePlannedNs(one_token.planned_ns);
    h.setBatchedSteps(batched.steps);
    h.setBatchedRows(batched.rows);
    h.setBatchedNs(batched.ns);
    h.setBatchedPlannedNs(batched.planned_ns);
    deliver(id + "/hb", b);
  }
  // The last stage's sampled token for sequence `seq`, after `accepted` tokens of its draft.
  void result(uint64_t plan_id, uint64_t seq, int32_t token, uint32_t accepted = 0) {
    capnp::MallocMessageBuilder b;
    auto r = b.initRoot<wire::Result>();
    r.setPlanId(plan_id);
    auto t = r.initTokens(1)[0];
    t.setSeq(seq);
    t.setToken(token);
    t.setAccepted(accepted);
    head.on_result(r.asReader());
  }
  void link_report(const std::string& from, const std::string& from_name, const std::string& to, double latency_s,
                   double bytes_per_s) {
    capnp::MallocMessageBuilder b;
    auto l = b.initRoot<wire::Envelope>().initLinkReport().initLinks(1)[0];
    l.setFrom(from_name);
    l.setTo(to);
    l.setLatencyS(latency_s);
    l.setBandwidthBytesPerS(bytes_per_s);
    deliver(from + "/links-1", b);
  }
  // Time passes; only `alive` keep sending heartbeats.
  void pass(std::chrono::milliseconds d, const std::vector<std::string>& alive) {
    for (auto t = std::chrono::milliseconds(0); t < d; t += std::chrono::milliseconds(400)) {
      clock.advance(std::chrono::milliseconds(400));
      for (const auto& id : alive) heartbeat(id);
      head.tick();
    }
  }
};

}  // namespace

TEST_CASE("head: a second daemon with a live device's node id but another key is refused") {
  Harness h;
  h.hello("dev-a", "a", "KEY-ONE");
  REQUIRE(h.outbox.to("dev-a", wire::Envelope::HELLO_ACK).size() == 1);
  h.hello("dev-a", "a2", "KEY-TWO");
  const auto errors = h.outbox.to("dev-a", wire::Envelope::ERROR);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].getError().getCategory() == wire::ErrorCategory::UNAUTHORIZED);
  CHECK(std::string(errors[0].getError().getMessage().cStr()).find("another key") != std::string::npos);
  // The first registration stands.
  REQUIRE(h.head.devices().find("dev-a") != nullptr);
  CHECK(h.head.devices().find("dev-a")->public_key == "KEY-ONE");
  CHECK(h.head.devices().find("dev-a")->profile.name == "a");
  // The same key may register again (a restarted daemon).
  h.hello("dev-a", "a", "KEY-ONE");
  CHECK(h.outbox.to("dev-a", wire::Envelope::HELLO_ACK).size() == 2);
}

TEST_CASE("head: a taken name and another protocol version are refused with their categories") {
  Harness h;
  h.hello("dev-a", "kitchen", "K1");
  h.hello("dev-b", "kitchen", "K2");
  auto errors = h.outbox.to("dev-b", wire::Envelope::ERROR);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].getError().getCategory() == wire::ErrorCategory::CONFLICT);
  h.hello("dev-c", "old", "K3", 8e9, wire::PROTOCOL_VERSION - 1);
  errors = h.outbox.to("dev-c", wire::Envelope::ERROR);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].getError().getCategory() == wire::ErrorCategory::VERSION_MISMATCH);
  CHECK(std::string(errors[0].getError().getMessage().cStr()).find("version mismatch") != std::string::npos);
  CHECK(h.head.devices().find("dev-c") == nullptr);
}

TEST_CASE("head: a launch that cannot fit fails as NO_CAPACITY, and a missing file as NOT_FOUND") {
  test::TempDir dir;
  const std::string model = test::make_model(dir, "m.gguf", {});
  Harness h(/*head_memory=*/1e5);  // far below the model
  h.launch(model);
  auto replies = h.outbox.to("cli", wire::Envelope::LAUNCH_REPLY);
  REQUIRE(replies.size() == 1);
  CHECK_FALSE(replies[0].getLaunchReply().getOk());
  CHECK(replies[0].getLaunchReply().getCategory() == wire::ErrorCategory::NO_CAPACITY);
  CHECK(h.head.plan() == nullptr);
  CHECK_FALSE(h.stage.loaded());

  CHECK(std::string(replies[0].getLaunchReply().getMessage().cStr()).find("add a device") != std::string::npos);

  h.launch(dir.file("absent.gguf"));
  replies = h.outbox.to("cli", wire::Envelope::LAUNCH_REPLY);
  REQUIRE(replies.size() == 2);
  CHECK(replies[1].getLaunchReply().getCategory() == wire::ErrorCategory::NOT_FOUND);

  h.launch(model, "head:1,nobody:1");
  replies = h.outbox.to("cli", wire::Envelope::LAUNCH_REPLY);
  REQUIRE(replies.size() == 3);
  CHECK(replies[2].getLaunchReply().getCategory() == wire::ErrorCategory::NOT_FOUND);

  h.launch(dir.path().string());  // a directory
  replies = h.outbox.to("cli", wire::Envelope::LAUNCH_REPLY);
  REQUIRE(replies.size() == 4);
  CHECK(replies[3].getLaunchReply().getCategory() == wire::ErrorCategory::BAD_REQUEST);
  CHECK(std::string(replies[3].getLaunchReply().getMessage().cStr()).find("is not a file") != std::string::npos);

  // A truncated file is the caller's bad input (BAD_REQUEST, exit 2), not the head's fault.
  const std::string cut = dir.file("cut.gguf");
  std::filesystem::copy_file(model, cut);
  std::filesystem::resize_file(cut, std::filesystem::file_size(model) / 2);
  h.launch(cut);
  replies = h.outbox.to("cli", wire::Envelope::LAUNCH_REPLY);
  REQUIRE(replies.size() == 5);
  CHECK(replies[4].getLaunchReply().getCategory() == wire::ErrorCategory::BAD_REQUEST);
}

TEST_CASE("head: a launch that does not fit names the devices that would make it fit") {
  test::TempDir dir;
  const std::string model = test::make_model(dir, "m.gguf", {});
  Harness h(/*head_memory=*/4e6);  // the head holds part of the model, not all
  h.hello("dev-a", "a", "KA");
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<wire::Envelope>();
  env.setRequestId(1);
  auto r = env.initLaunchRequest();
  r.setModelPath(model);
  r.initDevices(1).set(0, "head");
  h.deliver("cli", b);
  const auto reply = h.outbox.to("cli", wire::Envelope::LAUNCH_REPLY).back().getLaunchReply();
  CHECK(reply.getCategory() == wire::ErrorCategory::NO_CAPACITY);
  const std::string message = reply.getMessage().cStr();
  CAPTURE(message);
  CHECK(message.find("--devices left out (a) it fits") != std::string::npos);
}

TEST_CASE("head: a refused launch leaves the loaded model serving; a device that fails to load fails the launch") {
  test::TempDir dir;
  const std::string model = test::make_model(dir, "m.gguf", {});
  Harness h;
  const uint64_t serving = h.serve_alone(model);
  for (const char* bad : {"absent.gguf", ""}) {
    h.launch(bad[0] ? dir.file(bad) : model + "x");
    CHECK_FALSE(h.outbox.to("cli", wire::Envelope::LAUNCH_REPLY).back().getLaunchReply().getOk());
    REQUIRE(h.head.plan() != nullptr);
    CHECK(h.head.plan()->id == serving);
    CHECK(h.head.plan()->ready());
    CHECK(h.stage.loaded());
  }
  h.launch(model, "head:1,nobody:3");
  CHECK(h.outbox.to("cli", wire::Envelope::LAUNCH_REPLY).back().getLaunchReply().getCategory() == wire::ErrorCategory::NOT_FOUND);
  CHECK(h.head.plan()->id == serving);

  // A launch whose device reports a failed load ends at once, naming the device; the model that
  // served still does, and the device drops what it staged.
  h.hello("dev-a", "a", "KA");
  h.launch(model, "head:2,a:2");
  REQUIRE(h.head.next() != nullptr);
  const uint64_t staged = h.head.next()->id;
  CHECK(h.head.next()->launching());
  h.load_status("dev-a", staged, wire::LoadStatus::State::FAILED, "cannot store the stage's weights: No space left on device");
  const auto reply = h.outbox.to("cli", wire::Envelope::LAUNCH_REPLY).back().getLaunchReply();
  CHECK_FALSE(reply.getOk());
  CHECK(std::string(reply.getMessage().cStr()).find("device a could not load its stage: cannot store") != std::string::npos);
  CHECK(h.head.next() == nullptr);  // the next launch is not refused as "in progress"
  CHECK(h.head.plan()->id == serving);
  CHECK(h.head.plan()->ready());
  CHECK(h.stage.plan_id == serving);
  REQUIRE(h.outbox.to("dev-a", wire::Envelope::STOP_REQUEST).size() == 1);
  CHECK(h.outbox.to("dev-a", wire::Envelope::STOP_REQUEST)[0].getStopRequest().getPlanId() == staged);
}

TEST_CASE("head: `hearth devices` says what each device holds back from its memory, and why") {
  Harness h;
  capnp::MallocMessageBuilder b;
  auto hello = b.initRoot<wire::Envelope>().initHello();
  hello.setProtocolVersion(wire::PROTOCOL_VERSION);
  hello.setNodeId("dev-a");
  hello.setControlEndpoint("tcp://127.0.0.1:6000");
  hello.setDataEndpoint("tcp://127.0.0.1:6001");
  profiles::Profile p = device_profile("a", 0);
  profiles::SystemInfo sys;
  sys.available_memory_bytes = 20'000'000'000;
  p.memory = profiles::memory_budget(sys, 60'000'000);
  p.memory.held_back_why += "\x1b[2J";  // a peer's text reaches terminals: escaped
  p.device.usable_memory_bytes = static_cast<double>(p.memory.usable_bytes);
  to_wire(p, hello.initProfile());
  h.deliver("dev-a", b, "KA");
  capnp::MallocMessageBuilder q;
  q.initRoot<wire::Envelope>().initDevicesRequest();
  h.deliver("cli", q);
  const auto view = transport::devices_view(h.outbox.to("cli", wire::Envelope::DEVICES_REPLY).back().getDevicesReply());
  bool seen = false;
  for (const auto& d : view) {
    if (d["name"] != "a") continue;
    seen = true;
    CHECK(d["memory"]["basis"] == "--memory-limit");
    CHECK(d["memory"]["basis_bytes"] == 60'000'000);
    CHECK(d["memory"]["held_back_bytes"].get<uint64_t>() + d["usable_memory_bytes"].get<uint64_t>() == 60'000'000);
    const std::string why = d["memory"]["held_back_why"];
    CHECK(why.find("32 MiB + 5%") != std::string::npos);
    CHECK(why.find('\x1b') == std::string::npos);
  }
  CHECK(seen);
}

TEST_CASE("head: a launch stages beside the serving model and switches only once every device has its weights") {
  test::TempDir dir;
  const std::string model = test::make_model(dir, "m.gguf", {});
  Harness h;
  const uint64_t serving = h.serve_alone(model);

  h.hello("dev-a", "a", "KA");
  h.launch(model, "head:2,a:2");
  REQUIRE(h.head.next() != nullptr);
  const uint64_t staged = h.head.next()->id;
  // The client saw the plan before any weights moved.
  const auto progress = h.outbox.to("cli", wire::Envelope::LAUNCH_PROGRESS);
  REQUIRE_FALSE(progress.empty());
  REQUIRE(progress.back().getLaunchProgress().hasPlan());
  CHECK(progress.back().getLaunchProgress().getPlan().getStages().size() == 2);
  const auto assignment = h.outbox.to("dev-a", wire::Envelope::ASSIGNMENT);
  REQUIRE(assignment.size() == 1);
  CHECK(assignment[0].getAssignment().getStaged());
  CHECK(assignment[0].getAssignment().getPlanId() == staged);
  // A second launch meanwhile is refused; the old model answers all along.
  h.launch(model);
  CHECK(h.outbox.to("cli", wire::Envelope::LAUNCH_REPLY).back().getLaunchReply().getCategory() == wire::ErrorCategory::CONFLICT);
  h.load_status("dev-a", staged, wire::LoadStatus::State::RECEIVING);
  {  // `hearth status` shows both: the plan that serves and the launch on its way
    capnp::MallocMessageBuilder b;
    b.initRoot<wire::Envelope>().initStatusRequest();
    h.deliver("cli", b);
    const nlohmann::json view = transport::status_view(h.outbox.to("cli", wire::Envelope::STATUS_REPLY).back().getStatusReply());
    CHECK(view["plan"]["ready"] == true);
    REQUIRE(view.contains("launching"));
    CHECK(view["launching"]["state"] == "staging");
    CHECK(view["launching"]["stages"][1]["state"] == "receiving");
  }
  h.generate(5, "hello", 3);
  for (int i = 0; i < 20 && h.head.has_work(); ++i) h.head.tick();
  auto events = h.outbox.to("client", wire::Envelope::GENERATE_EVENT);
  REQUIRE_FALSE(events.empty());
  CHECK(events.back().getGenerateEvent().getDone());
  CHECK(std::string(events.back().getGenerateEvent().getError().cStr()).empty());
  CHECK(h.head.plan()->id == serving);
  CHECK(h.stage.plan_id == serving);
  CHECK(h.outbox.to("dev-a", wire::Envelope::COMMIT).empty());

  // A conversation still running when the weights are all here delays the switch, up to the
  // drain wait; then it ends with an error that says why.
  h.generate(6, "hello", 1000);
  h.head.tick();
  h.load_status("dev-a", staged, wire::LoadStatus::State::STAGED);
  CHECK(h.head.plan()->id == serving);
  h.pass(std::chrono::milliseconds(4000), {"dev-a"});
  CHECK(h.head.plan()->id == serving);
  h.pass(Head::kDrainWait, {"dev-a"});
  REQUIRE(h.head.plan()->id == staged);
  CHECK(h.head.next() == nullptr);
  events = h.outbox.to("client", wire::Envelope::GENERATE_EVENT);
  CHECK(std::string(events.back().getGenerateEvent().getError().cStr()).find("replaced by") != std::string::npos);
  // The switch: the device is told to load what it staged, the head maps its own layers.
  REQUIRE(h.outbox.to("dev-a", wire::Envelope::COMMIT).size() == 1);
  CHECK(h.outbox.to("dev-a", wire::Envelope::COMMIT)[0].getCommit().getPlanId() == staged);
  CHECK(h.stage.plan_id == staged);
  CHECK(h.head.plan()->state() == LaunchState::kLoading);
  h.generate(7, "hello", 2);  // waits for the stages, is not refused
  CHECK(h.outbox.to("client", wire::Envelope::GENERATE_EVENT).size() == events.size());
  h.ready("dev-a", staged);
  CHECK(h.head.plan()->ready());
  CHECK(h.outbox.to("cli", wire::Envelope::LAUNCH_REPLY).back().getLaunchReply().getOk());
}

TEST_CASE("head: a device lost while it receives a launch's weights fails that launch, and the old model keeps serving") {
  test::TempDir dir;
  const std::string model = test::make_model(dir, "m.gguf", {});
  Harness h;
  const uint64_t serving = h.serve_alone(model);
  h.hello("dev-a", "a", "KA");
  h.launch(model, "head:2,a:2");
  REQUIRE(h.head.next() != nullptr);
  h.load_status("dev-a", h.head.next()->id, wire::LoadStatus::State::RECEIVING);
  h.pass(std::chrono::milliseconds(2800), {});  // a stops answering
  REQUIRE(h.head.next() == nullptr);
  const auto reply = h.outbox.to("cli", wire::Envelope::LAUNCH_REPLY).back().getLaunchReply();
  CHECK_FALSE(reply.getOk());
  CHECK(reply.getCategory() == wire::ErrorCategory::LOST_DEVICE);
  CHECK(std::string(reply.getMessage().cStr()).find("device a stopped responding") != std::string::npos);
  REQUIRE(h.head.plan() != nullptr);
  CHECK(h.head.plan()->id == serving);
  CHECK(h.head.plan()->ready());
  REQUIRE_FALSE(h.head.plan()->events.entries().empty());
  CHECK(h.head.plan()->events.entries().back().what.find("kept serving") != std::string::npos);
  h.generate(8, "hello", 2);
  for (int i = 0; i < 20 && h.head.has_work(); ++i) h.head.tick();
  const auto events = h.outbox.to("client", wire::Envelope::GENERATE_EVENT);
  REQUIRE_FALSE(events.empty());
  CHECK(std::string(events.back().getGenerateEvent().getError().cStr()).empty());
}

TEST_CASE("head: a device lost mid-generation leads to a re-plan on the devices left") {
  test::TempDir dir;
  const std::string model = test::make_model(dir, "m.gguf", {});
  Harness h;
  h.hello("dev-a", "a", "KA");
  h.hello("dev-b", "b", "KB");
  h.launch(model, "head:1,a:2,b:1");
  REQUIRE(h.head.next() != nullptr);
  const uint64_t first_plan = h.head.next()->id;
  REQUIRE(h.head.next()->stages.size() == 3);
  CHECK(h.head.next()->state() == LaunchState::kStaging);
  REQUIRE(h.outbox.to("dev-a", wire::Envelope::ASSIGNMENT).size() == 1);
  REQUIRE(h.outbox.to("dev-b", wire::Envelope::ASSIGNMENT).size() == 1);
  h.bring_up();
  REQUIRE(h.head.plan() != nullptr);
  CHECK(h.head.plan()->id == first_plan);
  REQUIRE(h.head.plan()->state() == LaunchState::kReady);
  REQUIRE(h.outbox.to("cli", wire::Envelope::LAUNCH_REPLY).size() == 1);
  CHECK(h.outbox.to("cli", wire::Envelope::LAUNCH_REPLY)[0].getLaunchReply().getOk());

  // Status travels typed; its one JSON view has the plan's layout.
  {
    capnp::MallocMessageBuilder b;
    b.initRoot<wire::Envelope>().initStatusRequest();
    h.deliver("cli", b);
    const auto replies = h.outbox.to("cli", wire::Envelope::STATUS_REPLY);
    REQUIRE(replies.size() == 1);
    const nlohmann::json view = transport::status_view(replies[0].getStatusReply());
    CHECK(view["plan"]["state"] == "ready");
    REQUIRE(view["plan"]["stages"].size() == 3);
    CHECK(view["plan"]["stages"][1]["device"] == "a");
    CHECK(view["plan"]["stages"][1]["first_layer"] == 1);
    CHECK(view["plan"]["stages"][1]["last_layer"] == 3);
    CHECK(view["plan"]["stages"][2]["has_output"] == true);
    CHECK(view["plan"]["stages"][0]["stage_time_ms"].get<double>() > 0);
    CHECK(view["plan"]["predicted"]["ms_per_token"].get<double>() > 0);
    CHECK(view["security"] == "insecure");
  }
  // A generation starts: the head's stage computes its first layers and pushes them on.
  h.generate(9, "once upon a time", 8);
  h.head.tick();
  CHECK(h.stage.forwards >= 1);

  // Device b stops sending heartbeats; a keeps them up.
  h.pass(std::chrono::milliseconds(2400), {"dev-a"});
  const LaunchedPlan* p = h.head.plan();
  REQUIRE(p != nullptr);
  CHECK(p->id != first_plan);
  CHECK_FALSE(h.head.devices().find("dev-b")->alive);
  for (const auto& s : p->stages) CHECK(s.node_id != "dev-b");
  bool replanned = false;
  for (const auto& e : p->events.texts())
    replanned |= e.find("re-planned on") != std::string::npos && e.find("replaying 1") != std::string::npos;
  CHECK(replanned);
  // The conversation was carried into the new plan, not failed.
  for (const auto& e : h.outbox.to("client", wire::Envelope::GENERATE_EVENT))
    CHECK(std::string(e.getGenerateEvent().getError().cStr()).empty());
  // Device a was given the new plan's layers or told to unload.
  const bool a_in_plan =
      std::any_of(p->stages.begin(), p->stages.end(), [](const PlannedStage& s) { return s.node_id == "dev-a"; });
  if (a_in_plan) CHECK(h.outbox.to("dev-a", wire::Envelope::ASSIGNMENT).size() == 2);
  else CHECK(h.outbox.to("dev-a", wire::Envelope::STOP_REQUEST).size() == 1);
  // Once the new plan is ready the conversation runs to its end with no error.
  for (const auto& s : p->stages)
    if (s.node_id != "head-id") h.ready(s.node_id, p->id);
  REQUIRE(h.head.plan()->state() == LaunchState::kReady);
  if (h.head.plan()->stages.size() == 1) {
    for (int i = 0; i < 20; ++i) h.head.tick();
    const auto events = h.outbox.to("client", wire::Envelope::GENERATE_EVENT);
    REQUIRE_FALSE(events.empty());
    CHECK(events.back().getGenerateEvent().getDone());
    CHECK(std::string(events.back().getGenerateEvent().getError().cStr()).empty());
  }
}

TEST_CASE("head: a device that restarts within the heartbeat timeout lost its stage: the head re-plans") {
  test::TempDir dir;
  const std::string model = test::make_model(dir, "m.gguf", {});
  Harness h;
  h.hello("dev-a", "a", "KA");
  h.hello("dev-b", "b", "KB");
  h.launch(model, "head:1,a:2,b:1");
  h.bring_up();
  REQUIRE(h.head.plan()->ready());
  const uint64_t first_plan = h.head.plan()->id;
  h.generate(9, "once upon a time", 8);
  h.head.tick();
  // b's process was killed and started again at once: same node id, a new incarnation, no gap
  // in heartbeats long enough to look lost.
  h.hello("dev-b", "b", "KB", 8e9, wire::PROTOCOL_VERSION, 8);
  REQUIRE(h.head.plan() != nullptr);
  CHECK(h.head.plan()->id != first_plan);
  bool said = false;
  for (const auto& e : h.head.plan()->events.texts()) said |= e.find("device b (layers 3-3) restarted") != std::string::npos;
  CHECK(said);
  // A Hello from the same process again (a reconnect) is no loss.
  const uint64_t second_plan = h.head.plan()->id;
  h.hello("dev-b", "b", "KB", 8e9, wire::PROTOCOL_VERSION, 8);
  CHECK(h.head.plan()->id == second_plan);
}

TEST_CASE("head: when the devices left cannot hold the model, conversations wait, then fail as LOST_DEVICE") {
  test::TempDir dir;
  const std::string model = test::make_model(dir, "m.gguf", {});
  Harness h(/*head_memory=*/4e6);
  h.hello("dev-a", "a", "KA");
  h.launch(model);
  REQUIRE(h.head.next() != nullptr);
  REQUIRE(h.head.next()->stages.size() == 2);  // the head alone cannot hold it
  h.bring_up();
  REQUIRE(h.head.plan() != nullptr);
  REQUIRE(h.head.plan()->ready());
  h.generate(3, "hello", 4);
  h.head.tick();
  h.pass(std::chrono::milliseconds(2400), {});
  REQUIRE(h.head.plan() != nullptr);
  CHECK(h.head.plan()->state() == LaunchState::kWaitingForDevice);
  CHECK(h.outbox.to("client", wire::Envelope::GENERATE_EVENT).empty());  // waiting, not failed
  h.pass(std::chrono::seconds(31), {});
  CHECK(h.head.plan()->state() == LaunchState::kFailed);
  const auto events = h.outbox.to("client", wire::Envelope::GENERATE_EVENT);
  REQUIRE(events.size() == 1);
  CHECK(events[0].getGenerateEvent().getErrorCategory() == wire::ErrorCategory::LOST_DEVICE);
}

TEST_CASE("launch: the state machine has only its edges") {
  CHECK(can_move(LaunchState::kLoading, LaunchState::kReady));
  CHECK(can_move(LaunchState::kReady, LaunchState::kWaitingForDevice));
  CHECK(can_move(LaunchState::kWaitingForDevice, LaunchState::kLoading));
  CHECK_FALSE(can_move(LaunchState::kFailed, LaunchState::kReady));
  CHECK_FALSE(can_move(LaunchState::kFailed, LaunchState::kLoading));
  LaunchedPlan p;
  p.move_to(LaunchState::kFailed);
  CHECK_THROWS_AS(p.move_to(LaunchState::kReady), std::logic_error);
}

}  // namespace hearth::cluster

namespace hearth::cluster {

TEST_CASE("head: names and node ids that could forge a log line are refused; logged strings are escaped") {
  Harness h;
  h.hello("dev-x", "kitchen\n[12:00:00.000] info head: paired device evil", "KX");
  auto errors = h.outbox.to("dev-x", wire::Envelope::ERROR);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].getError().getCategory() == wire::ErrorCategory::BAD_REQUEST);
  CHECK(std::string(errors[0].getError().getMessage().cStr()).find("\\x0a") != std::string::npos);
  h.hello("dev\x1b[2J", "screen", "KY");
  CHECK(h.head.devices().find("dev\x1b[2J") == nullptr);
  CHECK(h.head.devices().all().size() == 1);  // only the head

  CHECK(transport::printable("a\nb\x1b[31mc\\") == "a\\x0ab\\x1b[31mc\\\\");
  CHECK(transport::printable("caf\xc3\xa9") == "caf\xc3\xa9");  // UTF-8 stays
  CHECK(transport::printable("\xc2\x9b"
                             "2J") == "\\xc2\\x9b2J");  // a C1 control does not
  CHECK(transport::printable(std::string(300, 'x'), 10) == "xxxxxxxxxx...");
  CHECK(transport::valid_node_id("0123abcdef"));
  CHECK_FALSE(transport::valid_node_id("a/b"));
  CHECK(transport::valid_device_name("Anna's phone"));
  CHECK_FALSE(transport::valid_device_name("a\tb"));
}

}  // namespace hearth::cluster

namespace hearth::cluster {

TEST_CASE("head: pairing attempts are rate-limited per address, and counted in status") {
  test::TempDir dir;
  Harness h(8e9, dir.path().string());
  const std::string key = "rq:A[O&yb8vHN){g1jw=0wGB#9V.V@]]%k>+b6qF";  // any Z85 key
  for (int i = 0; i < 5; ++i) CHECK(h.head.on_pair(key, "dev-z", "wrong secret", "10.0.0.9").find("wrong join token") == 0);
  CHECK(h.head.on_pair(key, "dev-z", "wrong secret", "10.0.0.9").find("too many pairing attempts") == 0);
  // Another address is not held up by this one; the first gets an attempt back in 12 s.
  CHECK(h.head.on_pair(key, "dev-y", "wrong secret", "10.0.0.10").find("wrong join token") == 0);
  h.clock.advance(std::chrono::seconds(13));
  CHECK(h.head.on_pair(key, "dev-z", "wrong secret", "10.0.0.9").find("wrong join token") == 0);
  CHECK(h.head.on_pair(key, "dev-z", "wrong secret", "10.0.0.9").find("too many") == 0);

  capnp::MallocMessageBuilder b;
  b.initRoot<wire::Envelope>().initStatusRequest();
  h.deliver("cli", b);
  const auto view = transport::status_view(h.outbox.to("cli", wire::Envelope::STATUS_REPLY).back().getStatusReply());
  CHECK(view["pairing_rate_limited"] == 2);
  CHECK(view["security"] == "curve");
}

}  // namespace hearth::cluster

namespace hearth::cluster {

TEST_CASE("head: decoding at a third of the planned pace is reported once, naming the slow stage") {
  test::TempDir dir;
  const std::string model = test::make_model(dir, "m.gguf", {});
  // A slow device, so that the planned pace (milliseconds a token) leaves the test's own
  // overhead per token far behind, even under an emulator or a sanitizer.
  Harness h(8e9, "", 1e9);
  h.launch(model);  // the head alone: its stage is the whole pipeline
  REQUIRE(h.head.plan() != nullptr);
  REQUIRE(h.head.plan()->ready());
  const double planned = h.head.plan()->plan.predicted.ms_per_token;
  MESSAGE("planned " << planned << " ms/token");
  REQUIRE(planned > 2);
  // The device is busier than its profile said: each step takes far longer than planned.
  h.stage.compute_time = std::chrono::milliseconds(static_cast<int>(planned * 6) + 2);
  const auto generate_to_end = [&](uint64_t id) {
    h.generate(id, "once upon a time", 20);
    for (int i = 0; i < 200 && h.head.has_work(); ++i) h.head.tick();
  };
  generate_to_end(1);  // the first only marks the counters
  CHECK(h.head.plan()->events.entries().empty());
  generate_to_end(2);
  REQUIRE(h.head.plan()->events.entries().size() == 1);
  const std::string event = h.head.plan()->events.entries()[0].what;
  CAPTURE(event);
  CHECK(event.find("planned") != std::string::npos);
  CHECK(event.find("head computes its layers in") != std::string::npos);
  generate_to_end(3);  // still slow: said once, not again
  CHECK(h.head.plan()->events.entries().size() == 1);
  h.stage.compute_time = std::chrono::milliseconds(0);
  generate_to_end(4);  // on pace again: said once
  REQUIRE(h.head.plan()->events.entries().size() == 2);
  CHECK(h.head.plan()->events.entries()[1].what.find("back on pace") == 0);
}

}  // namespace hearth::cluster

namespace hearth::cluster {

// Issue 16: a link that slows down (a phone walking away from the access point) shows in no
// stage's compute, only in a token's trip. The head sees the trip take longer than its stages
// and hops should, asks the plan's devices to measure their links again, and plans with what
// they measured.
namespace {

// The head and a, a reading its memory 20x faster: the plan gives a the layers, over a link
// measured loopback-fast at start. Tokens' trips take what the test says, in real time (the
// scheduler times them); each stage computes as planned. With `draft` the launch drafts, and
// every draft is accepted; `conversations` decode at once.
struct TwoStageDecode {
  test::TempDir dir;
  Harness h{8e9, "", 1e9};
  uint64_t plan_id = 0;
  double a_ms = 0;                // a's one-token step
  StepTime a_planned;             // what the plan expected of a's steps; a's take a_ms / a_planned.one_ms() of it
  StepCount a_plain, a_batched;   // a's decode steps so far, of one row and of several

  explicit TwoStageDecode(const std::string& draft = "", int conversations = 1) {
    hearth::runtime::MakeModelOptions o;
    // ~26 MB: 26 ms a token on the head alone, ~1.3 on a.
    // A drafting conversation makes 7 tokens a pass: a longer context to decode as many passes.
    const int ctx = draft.empty() ? 512 : 2048;
    o.shape = {.n_vocab = 512, .n_embd = 512, .n_layer = 2, .n_head = 8, .n_head_kv = 4, .n_ff = 1408, .n_ctx = ctx};
    const std::string model = test::make_model(dir, "m.gguf", o);
    h.hello("dev-a", "a", "KA");
    h.link_report("dev-a", "a", "head-id", 0.0002, 1e9);
    h.launch(model, "", static_cast<uint32_t>(ctx), draft);
    h.bring_up();
    REQUIRE(h.head.plan() != nullptr);
    REQUIRE(h.head.plan()->ready());
    const LaunchedPlan& p = *h.head.plan();
    REQUIRE(p.stages.size() == 2);
    REQUIRE(p.stages[1].node_id == "dev-a");
    plan_id = p.id;
    a_planned = p.stages[1].planned;
    a_ms = a_planned.one_ms();
    h.stage.compute_time = std::chrono::milliseconds(std::llround(p.stages[0].expected_ms));
    MESSAGE("planned " << p.plan.predicted.ms_per_token << " ms/token: head " << p.stages[0].expected_ms << ", a " << a_ms
                       << ", links " << p.expected_links.one_ms());
    for (int c = 1; c <= conversations; ++c)
      h.generate(static_cast<uint64_t>(c), "once upon a time", static_cast<uint32_t>(ctx - 100));
  }
  // `windows` drift windows: a second of the head's clock and 10 steps of each stage each.
  void decode(int windows, std::chrono::milliseconds trip) {
    for (int w = 0; w < windows; ++w) {
      for (int i = 0; i < 10; ++i) {
        h.head.tick();  // the head's stage computes and sends the step on
        std::this_thread::sleep_for(trip);
        for (const FakeStage::Computed& c : std::exchange(h.stage.computed, {})) {
          // Every draft accepted, and the token after them the next of a cycle of 6: the output
          // repeats every 6 tokens, so the ngram source drafts up to 5.
          const int32_t last = c.last_token, next = last >= 65 && last < 71 ? 65 + (last - 64) % 6 : 65;
          for (const uint64_t seq : c.seqs) h.result(plan_id, seq, next, static_cast<uint32_t>(c.drafts));
          const auto planned_ns = static_cast<uint64_t>(a_planned.at(c.rows) * 1e6);
          if (c.rows == 1) a_plain = a_plain + StepCount{1, 1, a_ns(1), planned_ns};
          else if (c.decodes) a_batched = a_batched + StepCount{1, static_cast<uint64_t>(c.rows), a_ns(c.rows), planned_ns};
        }
      }
      a_beat();
      h.clock.advance(std::chrono::milliseconds(1100));
      h.head.tick();
    }
  }
  uint64_t a_ns(int rows) const { return static_cast<uint64_t>(a_planned.at(rows) * a_ms / a_planned.one_ms() * 1e6); }
  void a_beat() { h.heartbeat("dev-a", a_plain, a_batched); }
  size_t probes_to_a() const { return h.outbox.to("dev-a", wire::Envelope::LINK_PROBE).size(); }
  std::vector<std::string> events() const { return h.head.plan()->events.texts(); }
  // Decoding on plan changes nothing (the trip: the head's own overheads); then the link slows,
  // trips take 70 ms, and the devices are asked to measure their links again: the event that says so.
  std::string links_slow_down() {
    const size_t probes_at_start = probes_to_a();
    decode(5, std::chrono::milliseconds(0));
    CHECK(probes_to_a() == probes_at_start);
    CHECK(events().empty());
    decode(4, std::chrono::milliseconds(70));
    REQUIRE(probes_to_a() == probes_at_start + 1);
    REQUIRE(events().size() == 1);
    const std::string event = events()[0];
    CHECK(event.find("the links take") != std::string::npos);
    CHECK(event.find("measuring the links again") != std::string::npos);
    return event;
  }
  // a slows to a third of its speed: the one event, naming a, whose one-token step is expected
  // at three times the plan's from then on.
  std::string a_slows_down() {
    const double planned_ms = a_planned.one_ms();
    a_ms *= 3;
    decode(4, std::chrono::milliseconds(6));
    REQUIRE(events().size() == 1);
    const std::string event = events()[0];
    CHECK(event.find("a computes its layers in") != std::string::npos);
    CHECK(h.head.plan()->stages[1].expected_ms == doctest::Approx(3 * planned_ms).epsilon(0.05));
    return event;
  }
};

}  // namespace

// On a home's Wi-Fi the devices share one medium: two measuring at once each report part of it.
TEST_CASE("head: devices measure their links one at a time, the next when the one measuring has reported") {
  Harness h;
  const auto probes_to = [&](const std::string& id) { return h.outbox.to(id, wire::Envelope::LINK_PROBE).size(); };
  h.hello("dev-a", "a", "KA");
  h.hello("dev-b", "b", "KB");
  h.hello("dev-c", "c", "KC");
  // a measures (to the head, then to b and to c as they came: its own turn); b and c wait.
  CHECK(probes_to("dev-a") == 3);
  CHECK(probes_to("dev-b") == 0);
  CHECK(probes_to("dev-c") == 0);
  h.link_report("dev-a", "a", "head-id", 0.0002, 1e9);
  h.link_report("dev-a", "a", "dev-b", 0.0002, 1e9);
  CHECK(probes_to("dev-b") == 0);  // a's probe of c still runs
  h.link_report("dev-a", "a", "dev-c", 0.0002, 1e9);
  REQUIRE(probes_to("dev-b") == 1);  // its way to everyone, and to the newcomer c: one request
  CHECK(h.outbox.to("dev-b", wire::Envelope::LINK_PROBE)[0].getLinkProbe().getTargets().size() == 3);
  CHECK(probes_to("dev-c") == 0);
  // b never reports (its report lost): c's turn comes once b's probes have had their time.
  h.pass(std::chrono::seconds(40), {"dev-a", "dev-b", "dev-c"});
  CHECK(probes_to("dev-c") == 0);
  h.pass(std::chrono::seconds(30), {"dev-a", "dev-b", "dev-c"});
  CHECK(probes_to("dev-c") == 1);
}

// A device admits a newcomer's key when a probe request names it: the newcomer's own probe waits
// for that (else its pings to the device are refused, and it never reports).
TEST_CASE("head: a newcomer measures its links after the devices it will reach have been told its key") {
  Harness h;
  h.hello("dev-a", "a", "KA");
  h.link_report("dev-a", "a", "head-id", 0.0002, 1e9);  // nobody measures now
  h.hello("dev-b", "b", "KB");
  const auto to_a = h.outbox.to("dev-a", wire::Envelope::LINK_PROBE);
  REQUIRE(to_a.size() == 2);
  CHECK(std::string(to_a[1].getLinkProbe().getTargets()[0].getPublicKey().cStr()) == "KB");
  CHECK(h.outbox.to("dev-b", wire::Envelope::LINK_PROBE).empty());
  h.link_report("dev-a", "a", "dev-b", 0.0002, 1e9);
  CHECK(h.outbox.to("dev-b", wire::Envelope::LINK_PROBE).size() == 1);
}

// A device that restarted while measuring: its old process's report will not come.
TEST_CASE("head: a device that restarts while measuring its links gives its turn up") {
  Harness h;
  h.hello("dev-a", "a", "KA");
  h.hello("dev-b", "b", "KB");
  CHECK(h.outbox.to("dev-b", wire::Envelope::LINK_PROBE).empty());
  h.hello("dev-a", "a", "KA", 8e9, wire::PROTOCOL_VERSION, 8);          // a new incarnation
  CHECK(h.outbox.to("dev-b", wire::Envelope::LINK_PROBE).size() == 1);  // b's turn, then a's again
  CHECK(h.outbox.to("dev-a", wire::Envelope::LINK_PROBE).size() == 2);
}

// A device lost while measuring gives up its turn at once.
TEST_CASE("head: a device lost while measuring its links: the next device measures at once") {
  Harness h;
  h.hello("dev-a", "a", "KA");
  h.hello("dev-b", "b", "KB");
  CHECK(h.outbox.to("dev-b", wire::Envelope::LINK_PROBE).empty());
  h.pass(std::chrono::seconds(3), {"dev-b"});  // a stops responding
  CHECK(h.outbox.to("dev-b", wire::Envelope::LINK_PROBE).size() == 1);
}

TEST_CASE("head: the links slower than planned: the devices measure them again, and the head re-plans with them") {
  TwoStageDecode t;
  const std::string event = t.links_slow_down();
  CHECK(event.find("one-token steps from") == std::string::npos);  // plain passes
  CHECK(t.h.head.next() == nullptr);  // nothing moves before the links are measured
  // a measured its link to the head: 33 ms one way, 50 Mbit/s. Two hops of it cost more than
  // the head computing every layer itself.
  t.h.link_report("dev-a", "a", "head-id", 0.033, 50e6 / 8);
  // The new plan needs no device's weights: the head switches to it at once, and the
  // conversation goes on there.
  REQUIRE(t.h.head.plan() != nullptr);
  CHECK(t.h.head.plan()->id != t.plan_id);
  CHECK(t.h.head.plan()->stages.size() == 1);
  const std::vector<std::string> events = t.events();
  CAPTURE(events.size());
  REQUIRE(events.size() >= 3);
  CAPTURE(events[1]);
  CHECK(events[1].find("re-balancing: the links take") != std::string::npos);
  CHECK(events[1].find("(measured again: a -> head 33.00 ms, 50 Mbit/s)") != std::string::npos);
  CHECK(events[2].find("re-balanced; replaying 1 conversation(s)") != std::string::npos);
}

TEST_CASE("head: links measured again that change nothing: the plan stays and expects what was measured") {
  TwoStageDecode t;
  t.decode(4, std::chrono::milliseconds(20));
  REQUIRE(t.h.head.plan()->reprobe.has_value());
  // a never reports (busy, or its report lost): the head plans with the figures it has once the
  // wait is over. They are the start-up ones, so nothing moves; the trip measured becomes what
  // the watch expects, and the same slow trips are no longer drift.
  t.h.pass(std::chrono::milliseconds(16000), {"dev-a"});
  CHECK_FALSE(t.h.head.plan()->reprobe.has_value());
  REQUIRE(t.events().size() == 2);
  CAPTURE(t.events()[1]);
  CHECK(t.events()[1].find("the plan stays") != std::string::npos);
  CHECK(t.events()[1].find("measured again") == std::string::npos);
  CHECK(t.h.head.plan()->expected_links.one_ms() > 15);
  CHECK(t.h.head.next() == nullptr);
  t.a_beat();
  t.decode(5, std::chrono::milliseconds(20));
  CHECK(t.events().size() == 2);
  CHECK_FALSE(t.h.head.plan()->reprobe.has_value());
}

TEST_CASE("head: a stage slower than planned whose layers stay: the links' expectation stays the plan's") {
  TwoStageDecode t;
  const double planned_links = t.h.head.plan()->expected_links.one_ms();
  // a reports a third of its planned speed (3 x ~1.8 ms); trips take 6 ms, so a token's links
  // seem to take the rest and the harness's overheads, about a ms: not off (that takes 5 ms more
  // than planned), and not what the links were planned at either (~0.4 ms).
  t.a_ms *= 3;
  t.decode(4, std::chrono::milliseconds(6));
  const std::vector<std::string> events = t.events();
  REQUIRE(events.size() == 1);
  CAPTURE(events[0]);
  CHECK(events[0].find("a computes its layers in") != std::string::npos);
  CHECK(events[0].find("the plan stays") != std::string::npos);  // the head alone would take ~26 ms
  CHECK_FALSE(t.h.head.plan()->reprobe.has_value());
  // a's measured time is what to expect from a now; the links were not off, so their share, a
  // busy device's waits included, is not.
  CHECK(t.h.head.plan()->stages[1].expected_ms == doctest::Approx(t.a_ms).epsilon(0.05));
  CHECK(t.h.head.plan()->expected_links.one_ms() == planned_links);
}

// A launch whose drafts keep agreeing drafts at every step: no stage ever computes a one-token
// step. The watch judges its drafting steps against the plan's step at their rows.
TEST_CASE("head: a launch that drafts every step: a stage slower than planned shows in its drafting steps") {
  TwoStageDecode t("ngram");
  const StepTime planned = t.h.head.plan()->stages[1].planned;
  REQUIRE(planned.batched());
  REQUIRE(planned.points[1].rows == 5);  // the plan's first draft, 4 tokens, behind its token
  CHECK(planned.points[1].ms > planned.one_ms());
  t.decode(5, std::chrono::milliseconds(0));  // on plan: nothing happens
  CHECK(t.events().empty());
  REQUIRE(t.a_batched.steps >= 30);  // the drafts begin once the output repeats, then every step drafts
  const double rows = t.a_batched.mean_rows();
  MESSAGE("a drafted " << t.a_batched.steps << " steps of " << rows << " rows; " << t.a_plain.steps << " plain");
  CHECK(rows > 2);
  const std::string event = t.a_slows_down();
  CAPTURE(event);
  CHECK(event.find("one-token steps from steps of") != std::string::npos);
  CHECK(event.find("the plan stays") != std::string::npos);
  CHECK(t.h.head.plan()->stages[1].speed == doctest::Approx(1.0 / 3).epsilon(0.05));
}

// Four conversations on two stages: the head sends two streams' tokens in each step, and no
// stage computes a one-token step. The watch judges their steps at their rows; the links it
// cannot see (no conversation decodes alone), so a slow stage is what it reports.
TEST_CASE("head: several conversations at once: a stage slower than planned shows in their steps of several rows") {
  TwoStageDecode t("", 4);
  const StepTime planned = t.h.head.plan()->stages[1].planned;
  REQUIRE(planned.batched());
  MESSAGE("a: " << planned.one_ms() << " ms a one-token step, " << planned.points.back().ms << " at "
                << planned.points.back().rows << " rows");
  t.decode(4, std::chrono::milliseconds(0));
  CHECK(t.events().empty());
  REQUIRE(t.a_batched.steps >= 30);
  CHECK(t.a_batched.mean_rows() == doctest::Approx(2));
  CHECK(t.a_plain.steps < 5);  // the prompts' first tokens, if any
  const std::string event = t.a_slows_down();
  CAPTURE(event);
  CHECK(event.find("one-token steps from steps of 2.0 rows") != std::string::npos);
  CHECK(event.find("the links") == std::string::npos);
}

TEST_CASE("head: a launch that drafts every step: links slower than planned show in its drafting passes") {
  TwoStageDecode t("ngram");
  REQUIRE(t.h.head.plan()->expected_links.batched());
  const std::string event = t.links_slow_down();
  CAPTURE(event);
  CHECK(event.find("one-token steps from steps of") != std::string::npos);
}

// Issue 16: the planner's objective with drafts. A drafting launch is planned for passes of 5
// rows (the first draft, 4 tokens, behind its token): b, which computes fast, gets the layers,
// though a reads its memory twice as fast. The drafts then never agree; drafting rests, the
// passes are nearly all plain ones, and for those a is the faster device. The head measures
// what the passes carry, plans with it, and moves the layers to a.
TEST_CASE("head: drafts that carry far fewer tokens than planned: the head re-plans with the measured drafts") {
  test::TempDir dir;
  hearth::runtime::MakeModelOptions o;
  o.shape = {.n_vocab = 512, .n_embd = 512, .n_layer = 2, .n_head = 8, .n_head_kv = 4, .n_ff = 1408, .n_ctx = 512};
  const std::string model = test::make_model(dir, "m.gguf", o);
  Harness h(8e9, "", 1e9);  // the head reads its memory slowly: it gets no layers
  profiles::Profile a = device_profile("a", 8e9, 20e9), b = device_profile("b", 8e9, 10e9);
  a.device.prefill_flop_s = 10e9;
  b.device.prefill_flop_s = 500e9;
  h.hello("dev-a", a, "KA");
  h.hello("dev-b", b, "KB");
  for (const auto& [from, name] : {std::pair{"dev-a", "a"}, std::pair{"dev-b", "b"}})
    for (const std::string to : {"head-id", "dev-a", "dev-b"})
      if (to != from) h.link_report(from, name, to, 0.0002, 1e9);
  h.launch(model, "", 512, "ngram");
  h.bring_up();
  REQUIRE(h.head.plan() != nullptr);
  REQUIRE(h.head.plan()->ready());
  const auto layers_of = [&](const std::string& node) {
    int n = 0;
    for (const auto& s : h.head.plan()->stages)
      if (s.node_id == node) n += s.spec.last_layer - s.spec.first_layer;
    return n;
  };
  REQUIRE(h.head.plan()->partition.draft_tokens == 4);
  REQUIRE(layers_of("dev-b") == 2);
  const uint64_t plan_id = h.head.plan()->id;
  // A pass with a draft costs its rows, so that drafting never measures as paying (it would
  // draft every step, and the drafts would measure longer than the plan's), whatever the
  // machine's hiccups.
  h.stage.row_time = std::chrono::milliseconds(2);
  h.generate(1, "once upon a time", 400);
  for (int i = 0; i < 300 && h.head.next() == nullptr; ++i) {
    h.head.tick();
    h.result(plan_id, 1, 65, 0);  // whatever was drafted, none of it
  }
  const std::vector<std::string> events = h.head.plan()->events.texts();
  REQUIRE_FALSE(events.empty());
  CAPTURE(events.back());
  CHECK(events.back().find("re-balancing: passes carry drafts of") != std::string::npos);
  CHECK(events.back().find("(planned for drafts of 4)") != std::string::npos);
  CHECK(h.head.plan()->partition.draft_tokens == 0);  // later plans (a drift's, a recovery's) too
  REQUIRE(h.head.next() != nullptr);
  int a_layers = 0;
  for (const auto& s : h.head.next()->stages)
    if (s.node_id == "dev-a") a_layers += s.spec.last_layer - s.spec.first_layer;
  CHECK(a_layers == 2);
}

TEST_CASE("head: without --ctx and --streams a launch takes the largest that fit, and says so") {
  test::TempDir dir;
  const std::string model = test::make_model(dir, "m.gguf", {});  // trained for 512 tokens
  Harness h(7.6e6);  // the model with 512 tokens for 4 streams does not fit; for 1 stream it does
  h.launch(model, "", /*ctx=*/0);
  const auto reply = h.outbox.to("cli", wire::Envelope::LAUNCH_REPLY).back().getLaunchReply();
  CAPTURE(std::string(reply.getMessage().cStr()));
  REQUIRE(reply.getOk());
  const LaunchedPlan& p = *h.head.plan();
  CHECK(p.options.max_sequences < 4);
  CHECK(p.options.max_sequences == p.partition.streams);
  CHECK(p.options.n_ctx == p.partition.ctx);
  REQUIRE(p.events.entries().size() == 1);
  CHECK(p.events.entries()[0].what.find("the largest that fit the devices") != std::string::npos);
  MESSAGE(p.events.entries()[0].what);

  // Sizes the client named are kept: too large is an error that says what would fit.
  Harness g(7.6e6);
  g.launch(model, "", 512);
  const auto refused = g.outbox.to("cli", wire::Envelope::LAUNCH_REPLY).back().getLaunchReply();
  CHECK_FALSE(refused.getOk());
  CHECK(refused.getCategory() == wire::ErrorCategory::NO_CAPACITY);
  CHECK(std::string(refused.getMessage().cStr()).find("would fit") != std::string::npos);
  MESSAGE(std::string(refused.getMessage().cStr()));
}

TEST_CASE("model library: every GGUF of its folders, unreadable ones with why, re-read only when a file changes") {
  hearth::test::TempDir dir;
  namespace fs = std::filesystem;
  const fs::path lib = dir.file("lib");
  fs::create_directories(lib);
  fs::rename(hearth::test::make_model(dir, "a.gguf", {}), lib / "a.gguf");
  std::ofstream(lib / "b.gguf") << "GGUF but cut short";
  std::ofstream(lib / "c.txt") << "not a model";
  ModelLibrary library({lib.string(), dir.file("missing")});
  auto models = library.scan();
  REQUIRE(models.size() == 2);
  CHECK(models[0].id == "a");
  CHECK(models[0].arch == "llama");
  CHECK(models[0].spec.has_value());
  CHECK(models[0].error.empty());
  CHECK(models[0].n_layers > 0);
  CHECK(models[0].file_bytes == fs::file_size(lib / "a.gguf"));
  CHECK(models[1].id == "b");
  CHECK(!models[1].spec.has_value());
  CHECK(!models[1].error.empty());
  // Named by id, file name or path.
  CHECK(library.find("a") != nullptr);
  CHECK(library.find("a.gguf") != nullptr);
  CHECK(library.find(models[0].path) != nullptr);
  CHECK(library.find("c") == nullptr);
  // The download finished: b is read again; a is gone.
  fs::remove(lib / "b.gguf");
  fs::rename(hearth::test::make_model(dir, "b.gguf", {}), lib / "b.gguf");
  fs::remove(lib / "a.gguf");
  models = library.scan();
  REQUIRE(models.size() == 1);
  CHECK(models[0].id == "b");
  CHECK(models[0].spec.has_value());
  CHECK(library.find("a") == nullptr);
}

TEST_CASE("a plan's event log keeps the latest events, stamped with their UTC time, and counts the rest") {
  EventLog log;
  const auto t0 = EventLog::Clock::from_time_t(1796506683);  // 2026-12-05T21:38:03Z
  for (size_t i = 0; i < EventLog::kKept + 7; ++i) log.add("event " + std::to_string(i), t0 + std::chrono::seconds(i));
  REQUIRE(log.entries().size() == EventLog::kKept);
  CHECK(log.dropped() == 7);
  CHECK(log.entries().front().what == "event 7");
  CHECK(log.entries().back().what == "event " + std::to_string(EventLog::kKept + 6));
  CHECK(log.texts().front() == "2026-12-05T21:38:10Z event 7");
}

}  // namespace hearth::cluster
