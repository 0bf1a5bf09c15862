#include "cluster/node.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <random>

#include "cluster/pairing.h"
#include "cluster/wire_convert.h"
#include "profiles/process_memory.h"
#include "transport/printable.h"

namespace hearth::cluster {

namespace wire = transport::wire;
using Steady = std::chrono::steady_clock;

namespace {

constexpr auto kHelloRetry = std::chrono::milliseconds(500);  // the first may leave before the handshake is done
constexpr auto kPeerPatience = std::chrono::seconds(3);       // before the next --peer is tried as the head

// The largest frame each socket takes, as small as what it carries needs: ZeroMQ buffers a frame
// up to this size before it can tell a member from a stranger, so these bound what an
// unauthenticated connection can make a daemon hold.
// Control: envelopes, and the 4 MiB padding of a bandwidth probe.
constexpr int64_t kMaxControlFrame = int64_t{8} << 20;
// Data: a batch of hidden states, [256 tokens x n_embd] f32: 8 MiB at n_embd 8192, 64 MiB at 65536.
constexpr int64_t kMaxDataFrame = int64_t{64} << 20;
// From the head: weight chunks of at most 8 MiB (cluster/head_launch.cpp).
constexpr int64_t kMaxHeadFrame = int64_t{16} << 20;

// This daemon's CURVE identity: none with --insecure.
std::optional<transport::CurveKeys> node_keys(const DaemonConfig& c) {
  if (c.insecure) return std::nullopt;
  if (!transport::curve_available())
    throw std::runtime_error(
        "this libzmq was built without CURVE: install Debian's libzmq5, or run every daemon with --insecure on a trusted "
        "network");
  return transport::load_or_create_keys(std::filesystem::path(c.data_dir) / "keys");
}

// Runs `handle` on a message, counting and logging what it throws instead of letting a peer's
// malformed message end the loop.
template <typename F>
void guarded(DropStats& drops, const char* what, F&& handle) {
  try {
    handle();
  } catch (const std::exception& e) {
    drops.malformed++;
    spdlog::warn("dropped {}: {}", what, transport::printable(e.what(), 500));
  } catch (const kj::Exception& e) {
    drops.malformed++;
    spdlog::warn("dropped {}: {}", what, transport::printable(e.getDescription().cStr(), 500));
  }
}

}  // namespace

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
      runner_(sockets_, pool_, drops_, profile_.device.name, config_.gpu, profile_.memory.usable_bytes,
              {.to_head = [this](capnp::MessageBuilder& m) { send_to_head(m); },
               .sampled =
                   [this](const std::vector<SampledToken>& t) {
                     if (head_role_) head_role_->on_sampled(t);
                     return head_role_ != nullptr;
                   }}),
      loader_(
          config_, runner_, [this](capnp::MessageBuilder& m) { send_to_head(m); }, [this](const std::string& k) { admit(k); }),
      prober_(sockets_, node_id_, profile_.device.name) {
  if (!keys_) return;
  zap_->allow(keys_->public_key);  // the CLI and the HTTP gateway on this device act with its identity
  if (config_.head) transport::write_private_file(keys_dir() + "/head.pub", keys_->public_key + "\n");
  head_key_ = transport::read_first_line(keys_dir() + "/head.pub");
  admit(head_key_);
}

Node::~Node() = default;

std::string Node::keys_dir() const { return config_.data_dir + "/keys"; }

void Node::admit(const std::string& public_key) {
  if (zap_ && transport::is_z85_key(public_key)) zap_->allow(public_key);
}

uint64_t Node::resident_bytes() const { return profiles::resident_bytes(); }

HeadIdentity Node::head_identity() const {
  return {.node_id = node_id_,
          .control_endpoint = control_endpoint_,
          .data_endpoint = data_endpoint_,
          .profile = profile_,
          .public_key = keys_ ? keys_->public_key : "",
          .keys_dir = keys_ ? keys_dir() : "",
          .pairing_port = pairing_port_,
          .recovery_wait_s = config_.recovery_wait_s,
          .model_dirs = config_.model_dirs.empty() ? std::vector<std::string>{config_.data_dir + "/models"} : config_.model_dirs};
}

void Node::start() {
  const std::string listen = transport::tcp_endpoint(config_.listen);
  const bool ephemeral = transport::endpoint_port(listen) == 0;
  // Port 0 asks for any free ports (ZeroMQ spells it "*"): tests and scripts use it.
  const std::string any_port = "tcp://" + transport::endpoint_host(listen) + ":*";
  const std::string control_bind = ephemeral ? any_port : listen;
  control_.emplace(sockets_.bind_router(control_bind, {.max_message_bytes = kMaxControlFrame}));
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

  if (config_.head) return;  // the head's role is handed over by set_head_role()
  if (!config_.join.empty()) {
    connect_to_head(transport::tcp_endpoint(config_.join));
  } else if (!config_.peers.empty()) {
    next_peer_ = config_.peers.size() - 1;
    try_next_peer();  // the first
  }
}

// ---- the loop ----

void Node::run(const std::atomic<bool>& stop) {
  while (!stop) {
    std::vector<zmq::pollitem_t> items{{control_->handle(), 0, ZMQ_POLLIN, 0}, {data_->handle(), 0, ZMQ_POLLIN, 0}};
    if (head_) items.push_back({head_->handle(), 0, ZMQ_POLLIN, 0});
    if (pairing_) items.push_back({pairing_->handle(), 0, ZMQ_POLLIN, 0});
    const bool busy = runner_.has_pending() || (head_role_ && head_role_->has_work());
    zmq::poll(items, std::chrono::milliseconds(busy ? 0 : 20));

    handle_control();
    if (pairing_) handle_pairing();
    if (head_) handle_head_link();
    handle_data();
    runner_.process();
    if (head_role_) head_role_->tick();

    join_discovered_head();
    if (head_ && !registered_ && Steady::now() - last_hello_ > kHelloRetry) send_hello();
    if (!config_.head && config_.join.empty() && config_.peers.size() > 1 && !registered_ &&
        Steady::now() - joined_at_ > kPeerPatience)
      try_next_peer();
  }
}

void Node::handle_control() {
  for (int i = 0; i < 256; ++i) {  // bounded, so one busy peer cannot starve the rest of the loop
    auto parts = transport::receive_multipart(*control_);
    if (parts.empty()) return;
    if (parts.size() < 2 || parts.size() > 3) {
      drops_.malformed++;
      continue;
    }
    const std::string identity = parts[0].to_string();
    guarded(drops_, "a control message", [&] {
      const transport::Decoded d = transport::decode(parts[1]);
      if (d.envelope().isPing()) {  // any node answers link probes
        capnp::MallocMessageBuilder b;
        b.initRoot<wire::Envelope>().initPong().setSentNs(d.envelope().getPing().getSentNs());
        send(identity, b);
        return;
      }
      if (!head_role_) {
        drops_.unexpected++;
        spdlog::debug("dropped a {} from {}: this node is not a head", transport::kind_name(d.envelope()),
                      transport::printable(identity));
        return;
      }
      head_role_->on_control(identity, transport::message_property(parts[1], "Peer-Address"),
                             transport::message_property(parts[1], "User-Id"), d, parts.size() == 3 ? &parts[2] : nullptr);
    });
  }
}

// The head's pairing socket: anyone with a CURVE key may connect, and may only ask to pair.
void Node::handle_pairing() {
  for (int i = 0; i < 16; ++i) {
    auto parts = transport::receive_multipart(*pairing_);
    if (parts.empty()) return;
    if (parts.size() != 2) {
      drops_.malformed++;
      continue;
    }
    const std::string identity = parts[0].to_string();
    std::string refusal = "malformed message";
    guarded(drops_, "a pairing request", [&] {
      const transport::Decoded d = transport::decode(parts[1]);
      if (!d.envelope().isPairRequest()) throw std::invalid_argument("only pairing requests are taken here");
      const auto r = d.envelope().getPairRequest();
      const char* key = transport::message_property(parts[1], "User-Id");
      const char* address = transport::message_property(parts[1], "Peer-Address");
      refusal = head_role_->on_pair(key == nullptr ? "" : key, r.getNodeId().cStr(), r.getSecret().cStr(),
                                    address == nullptr ? "" : address);
    });
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
    auto parts = transport::receive_multipart(*head_);
    if (parts.empty()) return;
    if (parts.size() > 2) {
      drops_.malformed++;
      continue;
    }
    guarded(drops_, "a message from the head",
            [&] { handle_from_head(transport::decode(parts[0]), parts.size() == 2 ? &parts[1] : nullptr); });
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
    case wire::Envelope::ASSIGNMENT: loader_.on_assignment(env.getAssignment()); break;
    case wire::Envelope::WEIGHT_CHUNK: loader_.on_weight_chunk(env.getWeightChunk(), payload, drops_); break;
    case wire::Envelope::LINK_PROBE: answer_link_probe(env.getLinkProbe()); break;
    case wire::Envelope::STOP_REQUEST: loader_.on_stop(env.getStopRequest().getPlanId()); break;
    case wire::Envelope::COMMIT: loader_.on_commit(env.getCommit().getPlanId()); break;
    case wire::Envelope::ERROR: {
      const auto e = env.getError();
      spdlog::error("head: {}", transport::printable(e.getMessage().cStr(), 1000));
      // A refusal that another Hello cannot mend (a taken name, another key, another version):
      // stop retrying; the message says what to change.
      const auto c = e.getCategory();
      if (c == wire::ErrorCategory::CONFLICT || c == wire::ErrorCategory::UNAUTHORIZED ||
          c == wire::ErrorCategory::VERSION_MISMATCH)
        registered_ = true;
      break;
    }
    default: drops_.unexpected++; spdlog::debug("dropped an unexpected {} from the head", transport::kind_name(env));
  }
}

void Node::handle_data() {
  for (int i = 0; i < 256; ++i) {
    auto parts = transport::receive_multipart(*data_);
    if (parts.empty()) return;
    if (parts.size() > 2) {
      drops_.malformed++;
      continue;
    }
    guarded(drops_, "a data message", [&] {
      const transport::Decoded d = transport::decode(parts[0]);
      const auto env = d.envelope();
      if (env.isForward()) runner_.accept_forward(env.getForward(), parts.size() == 2 ? &parts[1] : nullptr);
      else if (env.isRelease()) runner_.accept_release(env.getRelease());
      else if (env.isResult() && head_role_) head_role_->on_result(env.getResult());
      else drops_.unexpected++;
    });
  }
}

void Node::answer_link_probe(wire::LinkProbe::Reader p) {
  auto targets = p.getTargets();
  if (targets.size() > 64) throw std::invalid_argument("link probe with too many targets");
  std::vector<LinkProber::Target> list;
  for (auto t : targets) {
    list.push_back({t.getNodeId().cStr(), transport::tcp_endpoint(t.getControlEndpoint().cStr()), t.getPublicKey().cStr()});
    admit(list.back().public_key);  // it will probe us too
  }
  prober_.probe(std::move(list), head_endpoint_, head_key_);
}

// ---- sending ----

bool Node::send(const std::string& identity, capnp::MessageBuilder& message) { return send_frames(identity, message, nullptr); }

bool Node::send(const std::string& identity, capnp::MessageBuilder& message, zmq::message_t&& payload) {
  return send_frames(identity, message, &payload);
}

bool Node::send_frames(const std::string& identity, capnp::MessageBuilder& message, zmq::message_t* payload) {
  try {
    control_->send(zmq::buffer(identity), zmq::send_flags::sndmore);
    control_->send(transport::encode(message), payload ? zmq::send_flags::sndmore : zmq::send_flags::none);
    if (payload) control_->send(*payload, zmq::send_flags::none);
    return true;
  } catch (const zmq::error_t& e) {  // EHOSTUNREACH: the peer has gone (router_mandatory)
    spdlog::debug("cannot send to {}: {}", transport::printable(identity), e.what());
    return false;
  }
}

void Node::send_to_head(capnp::MessageBuilder& message) {
  if (head_) (void)head_->send(transport::encode(message), zmq::send_flags::dontwait);
}

// ---- registration with the head ----

// --peer names daemons one of which is the head: each is tried in turn until one registers us.
void Node::try_next_peer() {
  next_peer_ = (next_peer_ + 1) % config_.peers.size();
  const std::string endpoint = transport::tcp_endpoint(config_.peers[next_peer_]);
  try {
    connect_to_head(endpoint);
  } catch (const std::exception& e) {
    spdlog::warn("peer {} is not the head we can join: {}", endpoint, e.what());
  }
  joined_at_ = Steady::now();
}

void Node::head_discovered(const std::string& control_endpoint) {
  std::lock_guard lock(discovered_mutex_);
  discovered_head_ = control_endpoint;
}

void Node::join_discovered_head() {
  std::string discovered;
  {
    std::lock_guard lock(discovered_mutex_);
    discovered.swap(discovered_head_);
  }
  if (discovered.empty() || config_.head || !head_endpoint_.empty() || discovered == refused_head_) return;
  try {
    connect_to_head(discovered);
  } catch (const std::exception& e) {
    refused_head_ = discovered;  // say it once, not at every beacon
    spdlog::error("cannot join the head at {}: {}", discovered, e.what());
  }
}

void Node::connect_to_head(const std::string& endpoint) {
  if (endpoint == head_endpoint_) return;
  pair_if_needed(endpoint);
  head_endpoint_ = endpoint;
  joined_at_ = Steady::now();
  heartbeater_.reset();
  head_.emplace(sockets_.connect_dealer(endpoint, node_id_, {.max_message_bytes = kMaxHeadFrame, .server_key = head_key_}));
  registered_ = false;
  send_hello();
  heartbeater_ = std::make_unique<Heartbeater>(sockets_, endpoint, head_key_, node_id_, incarnation_, drops_, runner_.work(),
                                               runner_.plan_id(), zap_.get());
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
    throw std::runtime_error(
        "this device is not paired with a head: start it once with --token TOKEN (`hearth token` on the head prints it), or run "
        "every "
        "daemon with --insecure");
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
  last_hello_ = Steady::now();
}

}  // namespace hearth::cluster
