#include "daemon/node.h"

#include <spdlog/spdlog.h>
#include <xxhash.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <zmq_addon.hpp>

#include "daemon/head.h"
#include "daemon/pairing.h"
#include "daemon/wire_convert.h"

namespace hearth::daemon {

namespace wire = transport::wire;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kHelloRetry = std::chrono::milliseconds(500);  // the first may leave before the handshake is done
constexpr auto kPeerPatience = std::chrono::seconds(3);        // before the next --peer is tried as the head
constexpr int kWeightWindow = 4;  // weight chunks requested ahead: bounds the head's buffers too
constexpr auto kProgressEvery = std::chrono::milliseconds(250);

// Largest frame a data socket accepts: a full batch of hidden states of a large model, plus room.
constexpr int64_t kMaxDataFrame = int64_t{512} << 20;

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// Receives one multipart message without blocking; empty if none is waiting.
std::vector<zmq::message_t> receive(zmq::socket_t& s) {
  std::vector<zmq::message_t> parts;
  const auto n = zmq::recv_multipart(s, std::back_inserter(parts), zmq::recv_flags::dontwait);
  if (!n) parts.clear();
  return parts;
}

// This daemon's CURVE identity: none with --insecure.
std::optional<transport::CurveKeys> node_keys(const DaemonConfig& c) {
  if (c.insecure) return std::nullopt;
  if (!transport::curve_available())
    throw std::runtime_error("this libzmq was built without CURVE: install Debian's libzmq5, or run every daemon with --insecure on a trusted network");
  return transport::load_or_create_keys(std::filesystem::path(c.data_dir) / "keys");
}

bool all_finite(const float* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i])) return false;
  return true;
}

}  // namespace

uint64_t resident_bytes() {
  std::ifstream f("/proc/self/status");
  std::string key;
  while (f >> key) {
    if (key == "VmRSS:") {
      uint64_t kb = 0;
      f >> kb;
      return kb * 1024;
    }
    std::getline(f, key);
  }
  return 0;
}

// ---- heartbeats ----

Heartbeater::Heartbeater(const transport::SocketFactory& sockets, std::string head_endpoint, std::string head_key, std::string node_id,
                         uint64_t incarnation, const DropStats& drops, const WorkStats& work, const transport::ZapHandler* zap)
    : drops_(drops),
      work_(work),
      zap_(zap),
      incarnation_(incarnation),
      thread_([this, &sockets, e = std::move(head_endpoint), k = std::move(head_key), id = std::move(node_id)] { loop(sockets, e, k, id); }) {}

Heartbeater::~Heartbeater() {
  stop_ = true;
  thread_.join();
}

void Heartbeater::loop(const transport::SocketFactory& sockets, std::string endpoint, std::string head_key, std::string node_id) {
  zmq::socket_t s = sockets.connect_dealer(endpoint, node_id + "/hb", {.send_hwm = 4, .server_key = head_key});
  auto next = Clock::now();
  while (!stop_) {
    if (Clock::now() >= next) {
      capnp::MallocMessageBuilder b;
      auto hb = b.initRoot<wire::Envelope>().initHeartbeat();
      hb.setNodeId(node_id);
      hb.setPlanId(plan_id_);
      hb.setDropped(drops_.total());
      hb.setResidentBytes(resident_bytes());
      hb.setBatches(work_.batches);
      hb.setTokens(work_.tokens);
      hb.setComputeNs(work_.compute_ns);
      hb.setDecodeSteps(work_.decode_steps);
      hb.setDecodeNs(work_.decode_ns);
      hb.setBytesOut(work_.bytes_out);
      hb.setRefusedHandshakes(zap_ ? zap_->denied() : 0);
      hb.setIncarnation(incarnation_);
      s.send(transport::encode(b), zmq::send_flags::dontwait);
      next += std::chrono::milliseconds(400);
    }
    while (!receive(s).empty()) {  // the head does not answer heartbeats today; drain anyway
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// ---- setup ----

Node::Node(const DaemonConfig& config, profiles::Profile profile, std::string node_id)
    : config_(config),
      profile_(std::move(profile)),
      node_id_(std::move(node_id)),
      pool_(config.threads > 0 ? config.threads : runtime::hardware_threads()),
      keys_(node_keys(config_)),
      zap_(keys_ ? std::make_unique<transport::ZapHandler>(context_) : nullptr),
      sockets_(context_, keys_, zap_.get()),
      incarnation_((static_cast<uint64_t>(std::random_device{}()) << 32) | std::random_device{}()),
      local_models_(config_.model_dirs.empty() ? std::vector<std::string>{config_.data_dir + "/models"} : config_.model_dirs,
                    config_.data_dir + "/model-hashes") {
  if (!keys_) return;
  zap_->allow(keys_->public_key);  // the CLI and the HTTP gateway on this device act with its identity
  if (config_.head) transport::write_private_file(keys_dir() + "/head.pub", keys_->public_key + "\n");
  head_key_ = transport::read_first_line(keys_dir() + "/head.pub");
  admit(head_key_);
}

std::string Node::keys_dir() const { return config_.data_dir + "/keys"; }

void Node::admit(const std::string& public_key) {
  if (zap_ && transport::is_z85_key(public_key)) zap_->allow(public_key);
}

Node::~Node() {
  if (prober_.joinable()) prober_.join();
}

void Node::start() {
  const std::string listen = transport::tcp_endpoint(config_.listen);
  const bool ephemeral = transport::endpoint_port(listen) == 0;
  // Port 0 asks for any free ports (ZeroMQ spells it "*"): tests and scripts use it.
  const std::string any_port = listen.substr(0, listen.rfind(':')) + ":*";
  const std::string control_bind = ephemeral ? any_port : listen;
  control_.emplace(sockets_.bind_router(control_bind, {.max_message_bytes = kMaxDataFrame}));
  control_endpoint_ = control_->get(zmq::sockopt::last_endpoint);
  const std::string data_bind = ephemeral ? control_bind : transport::with_port(listen, transport::endpoint_port(listen) + 1);
  data_.emplace(sockets_.bind_pull(data_bind, {.max_message_bytes = kMaxDataFrame, .receive_hwm = 64}));
  data_endpoint_ = data_->get(zmq::sockopt::last_endpoint);
  spdlog::info("node {} ({}): control {}, data {}{}", profile_.device.name, node_id_, control_endpoint_, data_endpoint_,
               keys_ ? ", CURVE on" : ", --insecure: no encryption, no authentication");
  if (config_.head && keys_) {
    const std::string pairing_bind = ephemeral ? any_port : transport::with_port(listen, transport::endpoint_port(listen) + 2);
    pairing_.emplace(sockets_.bind_router(pairing_bind, {.max_message_bytes = 4096, .zap_domain = transport::kPairingDomain}));
    pairing_port_ = transport::endpoint_port(pairing_->get(zmq::sockopt::last_endpoint));
  }

  if (config_.head) head_role_ = std::make_unique<Head>(*this);
  if (config_.head) return;
  if (!config_.join.empty()) {
    connect_to_head(transport::tcp_endpoint(config_.join));
  } else if (!config_.peers.empty()) {
    next_peer_ = config_.peers.size() - 1;
    try_next_peer();  // the first
  }
}

// --peer names daemons one of which is the head: each is tried in turn until one registers us.
void Node::try_next_peer() {
  next_peer_ = (next_peer_ + 1) % config_.peers.size();
  const std::string endpoint = transport::tcp_endpoint(config_.peers[next_peer_]);
  try {
    connect_to_head(endpoint);
  } catch (const std::exception& e) {
    spdlog::warn("peer {} is not the head we can join: {}", endpoint, e.what());
  }
  joined_at_ = Clock::now();
}

void Node::head_discovered(const std::string& control_endpoint) {
  std::lock_guard lock(discovered_mutex_);
  discovered_head_ = control_endpoint;
}

void Node::connect_to_head(const std::string& endpoint) {
  if (endpoint == head_endpoint_) return;
  pair_if_needed(endpoint);
  head_endpoint_ = endpoint;
  joined_at_ = Clock::now();
  heartbeater_.reset();
  head_.emplace(sockets_.connect_dealer(endpoint, node_id_, {.max_message_bytes = kMaxDataFrame, .server_key = head_key_}));
  registered_ = false;
  send_hello();
  heartbeater_ = std::make_unique<Heartbeater>(sockets_, endpoint, head_key_, node_id_, incarnation_, drops_, work_, zap_.get());
  spdlog::info("joining head at {}", endpoint);
}

// With a token whose head we are not paired with yet, pairs first (the pairing socket is on the
// control endpoint's host, at the token's port).
void Node::pair_if_needed(const std::string& endpoint) {
  if (!keys_) return;
  if (!config_.token.empty()) {
    const transport::JoinToken token = transport::parse_join_token(config_.token);
    if (token.head_public_key != head_key_) {
      spdlog::info("pairing with the head at {}", endpoint);
      pair_with_head(sockets_, transport::with_port(endpoint, token.pairing_port), token, node_id_, std::chrono::seconds(10));
      transport::write_private_file(keys_dir() + "/head.pub", token.head_public_key + "\n");
      head_key_ = token.head_public_key;
      admit(head_key_);
      spdlog::info("paired: the head's key is kept in {}/head.pub, later starts need no token", keys_dir());
    }
  }
  if (!transport::is_z85_key(head_key_))
    throw std::runtime_error("this device is not paired with a head: start it once with --token TOKEN (`hearth token` on the head prints it), or run every daemon with --insecure");
}

void Node::send_hello() {
  capnp::MallocMessageBuilder b;
  auto h = b.initRoot<wire::Envelope>().initHello();
  h.setProtocolVersion(wire::PROTOCOL_VERSION);
  h.setNodeId(node_id_);
  h.setControlEndpoint(control_endpoint_);
  h.setDataEndpoint(data_endpoint_);
  h.setIncarnation(incarnation_);
  to_wire(profile_, h.initProfile());
  send_to_head(b);
  last_hello_ = Clock::now();
}

bool Node::send_to_head(capnp::MessageBuilder& message) {
  if (!head_) return false;
  return head_->send(transport::encode(message), zmq::send_flags::dontwait).has_value();
}

bool Node::send_to(const std::string& identity, capnp::MessageBuilder& message, const void* payload, size_t n) {
  if (payload == nullptr) return send_frames(identity, message, nullptr);
  zmq::message_t copy(payload, n);
  return send_frames(identity, message, &copy);
}

bool Node::send_to(const std::string& identity, capnp::MessageBuilder& message, zmq::message_t&& payload) {
  return send_frames(identity, message, &payload);
}

bool Node::send_frames(const std::string& identity, capnp::MessageBuilder& message, zmq::message_t* payload) {
  try {
    control_->send(zmq::buffer(identity), zmq::send_flags::sndmore);
    control_->send(transport::encode(message), payload ? zmq::send_flags::sndmore : zmq::send_flags::none);
    if (payload) control_->send(*payload, zmq::send_flags::none);
    return true;
  } catch (const zmq::error_t& e) {  // EHOSTUNREACH: the peer has gone (router_mandatory)
    spdlog::debug("cannot send to {}: {}", identity, e.what());
    return false;
  }
}

// ---- the loop ----

void Node::run(const std::atomic<bool>& stop) {
  while (!stop) {
    std::vector<zmq::pollitem_t> items{{control_->handle(), 0, ZMQ_POLLIN, 0}, {data_->handle(), 0, ZMQ_POLLIN, 0}};
    if (head_) items.push_back({head_->handle(), 0, ZMQ_POLLIN, 0});
    if (pairing_) items.push_back({pairing_->handle(), 0, ZMQ_POLLIN, 0});
    const bool busy = !pending_.empty() || (head_role_ && head_role_->has_work());
    zmq::poll(items, std::chrono::milliseconds(busy ? 0 : 20));

    handle_control();
    if (pairing_) handle_pairing();
    if (head_) handle_head_link();
    handle_data();
    process_data();
    if (head_role_) head_role_->tick();

    std::string discovered;
    {
      std::lock_guard lock(discovered_mutex_);
      discovered.swap(discovered_head_);
    }
    if (!discovered.empty() && !config_.head && head_endpoint_.empty() && discovered != refused_head_) {
      try {
        connect_to_head(discovered);
      } catch (const std::exception& e) {
        refused_head_ = discovered;  // say it once, not at every beacon
        spdlog::error("cannot join the head at {}: {}", discovered, e.what());
      }
    }
    if (head_ && !registered_ && Clock::now() - last_hello_ > kHelloRetry) send_hello();
    if (!config_.head && config_.join.empty() && config_.peers.size() > 1 && !registered_ && Clock::now() - joined_at_ > kPeerPatience)
      try_next_peer();
  }
}

void Node::handle_control() {
  for (int i = 0; i < 256; ++i) {  // bounded, so one busy peer cannot starve the rest of the loop
    auto parts = receive(*control_);
    if (parts.empty()) return;
    if (parts.size() < 2 || parts.size() > 3) {
      drops_.malformed++;
      continue;
    }
    const std::string identity = parts[0].to_string();
    try {
      const transport::Decoded d = transport::decode(parts[1]);
      if (d.envelope().isPing()) {  // any node answers link probes
        capnp::MallocMessageBuilder b;
        b.initRoot<wire::Envelope>().initPong().setSentNs(d.envelope().getPing().getSentNs());
        send_to(identity, b);
        continue;
      }
      if (!head_role_) {
        drops_.unexpected++;
        spdlog::debug("dropped a {} from {}: this node is not a head", transport::kind_name(d.envelope()), identity);
        continue;
      }
      head_role_->on_control(identity, transport::message_property(parts[1], "Peer-Address"),
                             transport::message_property(parts[1], "User-Id"), d, parts.size() == 3 ? &parts[2] : nullptr);
    } catch (const std::exception& e) {
      drops_.malformed++;
      spdlog::warn("dropped a control message from {}: {}", identity, e.what());
    } catch (const kj::Exception& e) {
      drops_.malformed++;
      spdlog::warn("dropped a control message from {}: {}", identity, e.getDescription().cStr());
    }
  }
}

// The head's pairing socket: anyone with a CURVE key may connect, and may only ask to pair.
void Node::handle_pairing() {
  for (int i = 0; i < 16; ++i) {
    auto parts = receive(*pairing_);
    if (parts.empty()) return;
    if (parts.size() != 2) {
      drops_.malformed++;
      continue;
    }
    const std::string identity = parts[0].to_string();
    std::string refusal;
    try {
      const transport::Decoded d = transport::decode(parts[1]);
      if (!d.envelope().isPairRequest()) throw std::invalid_argument("only pairing requests are taken here");
      const auto r = d.envelope().getPairRequest();
      const char* key = transport::message_property(parts[1], "User-Id");
      refusal = head_role_->on_pair(key == nullptr ? "" : key, r.getNodeId().cStr(), r.getSecret().cStr());
    } catch (const std::exception& e) {
      drops_.malformed++;
      refusal = e.what();
    } catch (const kj::Exception& e) {
      drops_.malformed++;
      refusal = "malformed message";
    }
    capnp::MallocMessageBuilder b;
    auto reply = b.initRoot<wire::Envelope>().initPairReply();
    reply.setOk(refusal.empty());
    reply.setMessage(refusal);
    zmq::message_t to(identity.data(), identity.size());
    if (!pairing_->send(to, zmq::send_flags::sndmore | zmq::send_flags::dontwait) ||
        !pairing_->send(transport::encode(b), zmq::send_flags::dontwait))
      spdlog::debug("pairing reply to a peer that left");
  }
}

void Node::handle_head_link() {
  for (int i = 0; i < 256; ++i) {
    auto parts = receive(*head_);
    if (parts.empty()) return;
    if (parts.size() > 2) {
      drops_.malformed++;
      continue;
    }
    try {
      handle_from_head(transport::decode(parts[0]), parts.size() == 2 ? &parts[1] : nullptr);
    } catch (const std::exception& e) {
      drops_.malformed++;
      spdlog::warn("dropped a message from the head: {}", e.what());
    } catch (const kj::Exception& e) {
      drops_.malformed++;
      spdlog::warn("dropped a message from the head: {}", e.getDescription().cStr());
    }
  }
}

void Node::handle_from_head(const transport::Decoded& d, zmq::message_t* payload) {
  const auto env = d.envelope();
  switch (env.which()) {
    case wire::Envelope::HELLO_ACK:
      if (!registered_) spdlog::info("registered with head {}", env.getHelloAck().getHeadId().cStr());
      registered_ = true;
      for (auto k : env.getHelloAck().getMemberKeys()) admit(k.cStr());
      break;
    case wire::Envelope::HELLO_REQUEST:  // the head restarted and does not know us
      registered_ = false;
      send_hello();
      break;
    case wire::Envelope::ASSIGNMENT: on_assignment(env.getAssignment()); break;
    case wire::Envelope::WEIGHT_CHUNK: on_weight_chunk(env.getWeightChunk(), payload); break;
    case wire::Envelope::LINK_PROBE: answer_link_probe(env.getLinkProbe()); break;
    case wire::Envelope::STOP_REQUEST: unload_stage(); break;
    case wire::Envelope::ERROR:
      spdlog::error("head: {}", env.getError().getMessage().cStr());
      if (std::string(env.getError().getMessage().cStr()).find("name") != std::string::npos) registered_ = true;  // do not retry
      break;
    default:
      drops_.unexpected++;
      spdlog::debug("dropped an unexpected {} from the head", transport::kind_name(env));
  }
}

// ---- loading a stage ----

void Node::on_assignment(wire::Assignment::Reader a) {
  const uint64_t bytes = a.getStageFileBytes();
  if (a.getFirstLayer() > a.getLastLayer() || a.getLastLayer() > 4096 || bytes == 0 || bytes > (uint64_t{1} << 42) ||
      a.getNCtx() == 0 || a.getNCtx() > (1u << 20) || a.getMaxBatch() == 0 || a.getMaxBatch() > 4096 ||
      a.getMaxSequences() == 0 || a.getMaxSequences() > 1024 || a.getHasEmbedding())
    throw std::invalid_argument("assignment out of range");
  unload_stage();
  Loading l;
  l.plan_id = a.getPlanId();
  l.spec = {static_cast<int>(a.getFirstLayer()), static_cast<int>(a.getLastLayer()), false, a.getHasOutput()};
  l.options = {.n_ctx = static_cast<int>(a.getNCtx()), .max_batch = static_cast<int>(a.getMaxBatch()),
               .max_sequences = static_cast<int>(a.getMaxSequences())};
  l.next_endpoint = transport::tcp_endpoint(a.getNextEndpoint().cStr());
  l.next_key = a.getNextKey().cStr();
  for (auto k : a.getMemberKeys()) admit(k.cStr());
  const std::string name = hex64(a.getModelHash()) + "-" + std::to_string(l.spec.first_layer) + "-" +
                           std::to_string(l.spec.last_layer) + (l.spec.has_output ? "-out-" : "-") + hex64(a.getStageFileHash()) + ".gguf";
  spdlog::info("assigned layers [{}, {}){} of {} (plan {}), {:.1f} MB", l.spec.first_layer, l.spec.last_layer,
               l.spec.has_output ? " + output head" : "", a.getModelName().cStr(), l.plan_id, bytes / 1e6);
  loading_ = std::move(l);
  try {
    if (config_.memory_limit > 0 && bytes > config_.memory_limit)
      throw std::runtime_error("the stage's weights (" + std::to_string(bytes) + " bytes) exceed this device's memory limit (" +
                               std::to_string(config_.memory_limit) + " bytes)");
    if (auto local = local_models_.find(a.getModelHash())) {
      spdlog::info("this device has the model ({}): its layers are mapped from it, nothing is transferred", *local);
      loading_->local_model = *local;
      finish_loading();
      return;
    }
    loading_->receiver = std::make_unique<WeightReceiver>(config_.data_dir + "/cache/" + name, bytes);
    if (loading_->receiver->complete()) {
      spdlog::info("weights found in the cache: no transfer needed");
      finish_loading();
    } else {
      request_weights();
    }
  } catch (const std::exception& e) {
    report_load(wire::LoadStatus::State::FAILED, e.what());
    loading_.reset();
  }
}

void Node::request_weights() {
  for (const auto& [offset, length] : loading_->receiver->next_requests(kWeightWindow)) {
    capnp::MallocMessageBuilder b;
    auto r = b.initRoot<wire::Envelope>().initWeightRequest();
    r.setPlanId(loading_->plan_id);
    r.setOffset(offset);
    r.setLength(length);
    send_to_head(b);
  }
}

void Node::on_weight_chunk(wire::WeightChunk::Reader c, zmq::message_t* payload) {
  if (!loading_ || c.getPlanId() != loading_->plan_id || payload == nullptr) {
    drops_.out_of_plan++;
    return;
  }
  try {
    loading_->receiver->accept(c.getOffset(), {payload->data<uint8_t>(), payload->size()}, c.getChecksum());
  } catch (const std::invalid_argument& e) {
    spdlog::warn("weights: {}", e.what());
  }
  if (loading_->receiver->complete()) {
    finish_loading();
    return;
  }
  request_weights();
  if (Clock::now() - loading_->last_report > kProgressEvery) {
    report_load(wire::LoadStatus::State::RECEIVING, "");
    loading_->last_report = Clock::now();
  }
}

void Node::finish_loading() {
  Loading l = std::move(*loading_);
  loading_.reset();
  const uint64_t plan_id = l.plan_id;
  try {
    report_load(wire::LoadStatus::State::LOADING, "");  // sent while loading_ is empty: reports 0/0
    if (l.receiver) l.receiver->finish();
    auto st = std::make_unique<LoadedStage>();
    st->plan_id = plan_id;
    st->file = std::make_unique<runtime::GgufFile>(runtime::GgufFile::open(l.receiver ? l.receiver->final_path() : l.local_model));
    const runtime::ModelConfig cfg = runtime::read_model_config(*st->file);
    auto weights = std::make_shared<runtime::StageWeights>(*st->file, cfg, l.spec);
    st->host = std::make_unique<StageHost>(weights, l.options, pool_);
    st->next_endpoint = l.next_endpoint;
    st->push.emplace(sockets_.connect_push(l.next_endpoint, {.send_hwm = 64, .server_key = l.next_key}));
    stage_ = std::move(st);
    if (heartbeater_) heartbeater_->set_plan(plan_id);
    spdlog::info("stage ready: layers [{}, {}), {:.1f} MB mapped, next {}", l.spec.first_layer, l.spec.last_layer,
                 weights->mapped_bytes() / 1e6, l.next_endpoint);
    capnp::MallocMessageBuilder b;
    auto s = b.initRoot<wire::Envelope>().initLoadStatus();
    s.setPlanId(plan_id);
    s.setState(wire::LoadStatus::State::READY);
    s.setBytesDone(l.receiver ? l.receiver->total() : 0);
    s.setBytesTotal(l.receiver ? l.receiver->total() : 0);
    s.setResidentBytes(resident_bytes());
    s.setMessage(!l.receiver ? "local copy" : l.receiver->was_cached() ? "cached" : "");
    send_to_head(b);
  } catch (const std::exception& e) {
    stage_.reset();
    spdlog::error("cannot load the stage: {}", e.what());
    capnp::MallocMessageBuilder b;
    auto s = b.initRoot<wire::Envelope>().initLoadStatus();
    s.setPlanId(plan_id);
    s.setState(wire::LoadStatus::State::FAILED);
    s.setMessage(e.what());
    send_to_head(b);
  }
}

void Node::report_load(wire::LoadStatus::State state, const std::string& message) {
  capnp::MallocMessageBuilder b;
  auto s = b.initRoot<wire::Envelope>().initLoadStatus();
  s.setPlanId(loading_ ? loading_->plan_id : 0);
  s.setState(state);
  if (loading_ && loading_->receiver) {
    s.setBytesDone(loading_->receiver->bytes_done());
    s.setBytesTotal(loading_->receiver->total());
  }
  s.setMessage(message);
  s.setResidentBytes(resident_bytes());
  send_to_head(b);
}

void Node::load_local_stage(uint64_t plan_id, const std::string& model_path, const runtime::StageSpec& spec,
                            const runtime::StageOptions& options, const std::string& next_endpoint, const std::string& next_key) {
  unload_stage();
  auto st = std::make_unique<LoadedStage>();
  st->plan_id = plan_id;
  st->file = std::make_unique<runtime::GgufFile>(runtime::GgufFile::open(model_path));
  const runtime::ModelConfig cfg = runtime::read_model_config(*st->file);
  st->host = std::make_unique<StageHost>(std::make_shared<runtime::StageWeights>(*st->file, cfg, spec), options, pool_);
  st->next_endpoint = next_endpoint;
  if (!next_endpoint.empty()) st->push.emplace(sockets_.connect_push(next_endpoint, {.send_hwm = 64, .server_key = next_key}));
  stage_ = std::move(st);
}

void Node::unload_stage() {
  if (stage_) spdlog::info("unloading the stage of plan {}", stage_->plan_id);
  stage_.reset();
  pending_.clear();
  if (heartbeater_) heartbeater_->set_plan(0);
}

// ---- the data path ----

void Node::handle_data() {
  for (int i = 0; i < 256; ++i) {
    auto parts = receive(*data_);
    if (parts.empty()) return;
    if (parts.size() > 2) {
      drops_.malformed++;
      continue;
    }
    try {
      const transport::Decoded d = transport::decode(parts[0]);
      const auto env = d.envelope();
      if (env.isForward()) {
        if (auto b = decode_forward(env.getForward(), parts.size() == 2 ? &parts[1] : nullptr)) pending_.push_back(std::move(*b));
      } else if (env.isRelease()) {
        const auto r = env.getRelease();
        if (!stage_ || r.getPlanId() != stage_->plan_id) {
          drops_.out_of_plan++;
          continue;
        }
        Batch marker;  // a batch with no chunks and seqs in `tokens` marks a release, kept in order
        for (uint64_t s : r.getSeqs()) marker.hidden.push_back(static_cast<float>(s)), marker.chunks.push_back({s, -1, 0});
        pending_.push_back(std::move(marker));
      } else if (env.isResult() && head_role_) {
        head_role_->on_result(env.getResult());
      } else {
        drops_.unexpected++;
      }
    } catch (const std::exception& e) {
      drops_.malformed++;
      spdlog::warn("dropped a data message: {}", e.what());
    } catch (const kj::Exception& e) {
      drops_.malformed++;
      spdlog::warn("dropped a data message: {}", e.getDescription().cStr());
    }
  }
}

std::optional<Batch> Node::decode_forward(wire::Forward::Reader f, zmq::message_t* payload) {
  // Everything is checked against this node's own stage before any of it reaches a kernel.
  if (!stage_ || f.getPlanId() != stage_->plan_id) {
    drops_.out_of_plan++;
    spdlog::debug("dropped a forward for plan {}", f.getPlanId());
    return std::nullopt;
  }
  const auto& cfg = stage_->host->config();
  if (stage_->host->spec().has_embedding) throw std::invalid_argument("the first stage takes no forwards");
  if (f.getDtype() != wire::Forward::DType::F32 || f.getNEmbd() != static_cast<uint32_t>(cfg.n_embd))
    throw std::invalid_argument("forward with a dtype or width this stage does not use");
  const auto chunks = f.getChunks();
  const auto tokens = f.getTokens();
  if (chunks.size() == 0 || chunks.size() > static_cast<unsigned>(stage_->host->max_batch()))
    throw std::invalid_argument("forward with " + std::to_string(chunks.size()) + " chunks");
  Batch b;
  uint64_t total = 0;
  for (auto c : chunks) {
    if (c.getNTokens() == 0 || c.getNTokens() > static_cast<uint32_t>(stage_->host->max_batch()))
      throw std::invalid_argument("chunk with " + std::to_string(c.getNTokens()) + " tokens");
    BatchChunk bc{c.getSeq(), static_cast<int>(c.getPos()), static_cast<int>(c.getNTokens()), c.getIsPrompt(), c.getWantToken(), {}};
    if (bc.pos == 0) bc.sampling = from_wire(c.getSampling());
    total += c.getNTokens();
    b.chunks.push_back(bc);
  }
  if (total > static_cast<uint64_t>(stage_->host->max_batch()) || tokens.size() != total)
    throw std::invalid_argument("forward token count does not match its chunks");
  const size_t floats = total * static_cast<size_t>(cfg.n_embd);
  if (payload == nullptr || payload->size() != floats * sizeof(float)) {
    drops_.bad_payload++;
    throw std::invalid_argument("forward payload of the wrong size");
  }
  b.hidden.resize(floats);
  std::memcpy(b.hidden.data(), payload->data(), payload->size());  // frames may be misaligned
  if (!all_finite(b.hidden.data(), floats)) {
    drops_.bad_payload++;
    throw std::invalid_argument("forward payload holds NaN or infinity");
  }
  for (int32_t t : tokens) b.tokens.push_back(t);
  return b;
}

void Node::process_data() {
  while (!pending_.empty()) {
    Batch batch = std::move(pending_.front());
    pending_.pop_front();
    const bool is_release = !batch.chunks.empty() && batch.chunks[0].pos < 0;
    if (is_release) {
      std::vector<uint64_t> seqs;
      for (const auto& c : batch.chunks) seqs.push_back(c.seq);
      for (uint64_t s : seqs) stage_->host->release(s);
      if (!stage_->host->spec().has_output) push_release(stage_->plan_id, seqs);
      continue;
    }
    // Merge the batches that follow into one pass over the weights, while they fit and no
    // sequence appears twice.
    std::set<uint64_t> seqs;
    for (const auto& c : batch.chunks) seqs.insert(c.seq);
    while (!pending_.empty()) {
      const Batch& next = pending_.front();
      if (next.chunks.empty() || next.chunks[0].pos < 0) break;
      if (batch.n_tokens() + next.n_tokens() > stage_->host->max_batch()) break;
      bool clash = false;
      for (const auto& c : next.chunks) clash |= seqs.count(c.seq) > 0;
      if (clash) break;
      for (const auto& c : next.chunks) seqs.insert(c.seq), batch.chunks.push_back(c);
      batch.tokens.insert(batch.tokens.end(), next.tokens.begin(), next.tokens.end());
      batch.hidden.insert(batch.hidden.end(), next.hidden.begin(), next.hidden.end());
      pending_.pop_front();
    }
    run_batch(std::move(batch));
  }
}

StageOutput Node::compute(const Batch& batch) {
  const auto t0 = Clock::now();
  StageOutput out = stage_->host->run(batch);
  const auto ns = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
  work_.batches++;
  work_.tokens += static_cast<uint64_t>(batch.n_tokens());
  work_.compute_ns += ns;
  if (batch.n_tokens() == static_cast<int>(batch.chunks.size())) {
    work_.decode_steps++;
    work_.decode_ns += ns;
  }
  return out;
}

void Node::run_batch(Batch batch) {
  StageOutput out;
  try {
    out = compute(batch);
  } catch (const std::invalid_argument& e) {
    drops_.malformed++;
    spdlog::warn("refused a batch: {}", e.what());
    capnp::MallocMessageBuilder b;
    auto err = b.initRoot<wire::Envelope>().initError();
    err.setPlanId(stage_->plan_id);
    auto seqs = err.initSeqs(static_cast<unsigned>(batch.chunks.size()));
    for (unsigned i = 0; i < batch.chunks.size(); ++i) seqs.set(i, batch.chunks[i].seq);
    err.setMessage(std::string("stage ") + profile_.device.name + ": " + e.what());
    send_to_head(b);
    return;
  }
  if (!stage_->host->spec().has_output) {
    push_forward(batch, out.hidden);
    return;
  }
  if (head_role_) {
    head_role_->on_sampled(out.sampled);
    return;
  }
  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<wire::Envelope>().initResult();
  r.setPlanId(stage_->plan_id);
  auto list = r.initTokens(static_cast<unsigned>(out.sampled.size()));
  for (unsigned i = 0; i < out.sampled.size(); ++i) {
    list[i].setSeq(out.sampled[i].seq);
    list[i].setToken(out.sampled[i].token);
  }
  if (!stage_->push->send(transport::encode(b), zmq::send_flags::none))
    spdlog::error("the head ({}) does not take results: tokens dropped", stage_->next_endpoint);
}

bool Node::push_forward(const Batch& batch, const std::vector<float>& hidden) {
  capnp::MallocMessageBuilder b;
  auto f = b.initRoot<wire::Envelope>().initForward();
  f.setPlanId(stage_->plan_id);
  f.setDtype(wire::Forward::DType::F32);
  f.setNEmbd(static_cast<uint32_t>(stage_->host->config().n_embd));
  auto chunks = f.initChunks(static_cast<unsigned>(batch.chunks.size()));
  for (unsigned i = 0; i < batch.chunks.size(); ++i) {
    const BatchChunk& c = batch.chunks[i];
    chunks[i].setSeq(c.seq);
    chunks[i].setPos(static_cast<uint32_t>(c.pos));
    chunks[i].setNTokens(static_cast<uint32_t>(c.n_tokens));
    chunks[i].setIsPrompt(c.is_prompt);
    chunks[i].setWantToken(c.want_token);
    if (c.pos == 0) to_wire(c.sampling, chunks[i].initSampling());
  }
  auto tokens = f.initTokens(static_cast<unsigned>(batch.tokens.size()));
  for (unsigned i = 0; i < batch.tokens.size(); ++i) tokens.set(i, batch.tokens[i]);
  if (!stage_->push->send(transport::encode(b), zmq::send_flags::sndmore) ||
      !stage_->push->send(zmq::message_t(hidden.data(), hidden.size() * sizeof(float)), zmq::send_flags::none)) {
    spdlog::error("the next stage ({}) does not take data: batch dropped", stage_->next_endpoint);
    return false;
  }
  work_.bytes_out += hidden.size() * sizeof(float);
  return true;
}

void Node::push_release(uint64_t plan_id, const std::vector<uint64_t>& seqs) {
  if (!stage_ || !stage_->push) return;
  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<wire::Envelope>().initRelease();
  r.setPlanId(plan_id);
  auto list = r.initSeqs(static_cast<unsigned>(seqs.size()));
  for (unsigned i = 0; i < seqs.size(); ++i) list.set(i, seqs[i]);
  if (!stage_->push->send(transport::encode(b), zmq::send_flags::none))
    spdlog::error("the next stage ({}) does not take data: release dropped", stage_->next_endpoint);
}

// ---- links ----

void Node::answer_link_probe(wire::LinkProbe::Reader p) {
  auto targets = p.getTargets();
  if (targets.size() > 64) throw std::invalid_argument("link probe with too many targets");
  std::vector<ProbeTarget> list;
  for (auto t : targets) {
    list.push_back({t.getNodeId().cStr(), transport::tcp_endpoint(t.getControlEndpoint().cStr()), t.getPublicKey().cStr()});
    admit(list.back().public_key);  // it will probe us too
  }
  if (prober_.joinable()) prober_.join();  // one probe at a time; they take milliseconds on a LAN
  prober_ = std::thread([this, list = std::move(list), head = head_endpoint_, key = head_key_]() mutable {
    probe_links(std::move(list), head, key);
  });
}

// Runs on the prober thread with sockets of its own. Latency: half the median round trip of a
// small ping; bandwidth: a 4 MiB ping's transfer time, less the round trip.
void Node::probe_links(std::vector<ProbeTarget> targets, std::string head_endpoint, std::string head_key) {
  const std::string suffix = std::to_string(std::random_device{}());
  capnp::MallocMessageBuilder report;
  auto links = report.initRoot<wire::Envelope>().initLinkReport().initLinks(static_cast<unsigned>(targets.size()));
  for (unsigned i = 0; i < targets.size(); ++i) {
    // A fresh identity per probe: a ROUTER refuses a second connection under an identity it
    // still holds.
    zmq::socket_t s = sockets_.connect_dealer(targets[i].control_endpoint, node_id_ + "/probe-" + suffix, {.server_key = targets[i].public_key});
    s.set(zmq::sockopt::rcvtimeo, 1000);
    const auto round_trip = [&](size_t padding) {
      capnp::MallocMessageBuilder b;
      b.initRoot<wire::Envelope>().initPing().setSentNs(0);
      const auto t0 = Clock::now();
      if (padding == 0) {
        s.send(transport::encode(b), zmq::send_flags::none);
      } else {
        s.send(transport::encode(b), zmq::send_flags::sndmore);
        s.send(zmq::message_t(padding), zmq::send_flags::none);
      }
      zmq::message_t reply;
      if (!s.recv(reply)) return -1.0;
      return std::chrono::duration<double>(Clock::now() - t0).count();
    };
    std::vector<double> rtts;
    for (int k = 0; k < 9 && rtts.size() + 3 > static_cast<size_t>(k); ++k)  // give up after 3 misses
      if (double r = round_trip(0); r > 0) rtts.push_back(r);
    links[i].setFrom(profile_.device.name);
    links[i].setTo(targets[i].node_id);
    if (rtts.empty()) {  // unreachable: report nothing measurable rather than a made-up figure
      links[i].setLatencyS(-1);
      continue;
    }
    std::sort(rtts.begin(), rtts.end());
    const double latency = rtts[rtts.size() / 2] / 2;
    const size_t bulk = 4u << 20;
    const double t = round_trip(bulk);
    links[i].setLatencyS(latency);
    links[i].setBandwidthBytesPerS(t > 0 ? bulk / std::max(1e-6, t - 2 * latency) : 0.0);
  }
  if (head_endpoint.empty()) return;
  zmq::socket_t to_head = sockets_.connect_dealer(head_endpoint, node_id_ + "/links-" + suffix, {.server_key = head_key});
  to_head.set(zmq::sockopt::sndtimeo, 2000);
  to_head.set(zmq::sockopt::linger, 2000);  // let the report leave before the socket closes
  to_head.send(transport::encode(report), zmq::send_flags::none);
}

}  // namespace hearth::daemon
