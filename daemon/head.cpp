#include "daemon/head.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <xxhash.h>

#include <nlohmann/json.hpp>
#include <cmath>
#include <random>
#include <sstream>

#include "daemon/node.h"
#include "daemon/pace.h"
#include "daemon/wire_convert.h"
#include "runtime/chat_template.h"
#include "runtime/model_spec_gguf.h"

namespace hearth::daemon {

namespace wire = transport::wire;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kDeviceTimeout = std::chrono::seconds(2);
constexpr uint32_t kMaxWeightChunk = 8u << 20;
constexpr int kDefaultMaxBatch = 256;

std::string host_of(const std::string& endpoint) {
  const std::string hp = endpoint.rfind("tcp://", 0) == 0 ? endpoint.substr(6) : endpoint;
  return hp.substr(0, hp.rfind(':'));
}

// A node bound to 0.0.0.0 cannot say which of its addresses we reach it by: use the address its
// messages come from.
std::string reachable(const std::string& endpoint, const char* peer_address) {
  const std::string host = host_of(endpoint);
  if ((host == "0.0.0.0" || host == "*" || host.empty()) && peer_address != nullptr && *peer_address)
    return "tcp://" + std::string(peer_address) + ":" + std::to_string(transport::endpoint_port(endpoint));
  return endpoint;
}

// "head:2,a:2,b:1" -> [(name, layers)]
std::vector<std::pair<std::string, int>> parse_split(const std::string& text) {
  std::vector<std::pair<std::string, int>> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    const size_t colon = item.rfind(':');
    if (colon == std::string::npos || colon == 0) throw std::invalid_argument("--split entry '" + item + "' is not NAME:LAYERS");
    int n = 0;
    try {
      n = std::stoi(item.substr(colon + 1));
    } catch (...) {
      n = -1;
    }
    if (n < 0) throw std::invalid_argument("--split entry '" + item + "' has an invalid layer count");
    out.emplace_back(item.substr(0, colon), n);
  }
  if (out.empty()) throw std::invalid_argument("--split is empty");
  return out;
}

}  // namespace

Head::Head(Node& node) : node_(node), next_plan_id_(std::random_device{}() | 1) {
  Device self;
  self.node_id = node.node_id();
  self.control_endpoint = node.control_endpoint();
  self.data_endpoint = node.data_endpoint();
  self.profile = node.profile().device;
  self.cpu = node.profile().system.cpu;
  self.arch = node.profile().system.arch;
  self.os = node.profile().system.os;
  self.cores = node.profile().system.cores;
  self.last_seen = Clock::now();
  self.is_self = true;
  self.public_key = node.public_key();
  devices_[self.node_id] = self;
  if (node.keys()) {
    pairing_ = std::make_unique<PairingRegistry>(node.keys_dir());
    for (const auto& [key, id] : pairing_->paired()) node.admit(key);
    const std::string token = join_token();
    transport::write_private_file(node.keys_dir() + "/join-token", token + "\n");
    spdlog::info("head: join token (pair a device with `hearthd --join HOST:{} --token TOKEN`; `hearth token` prints it again):\n  {}",
                 transport::endpoint_port(node.control_endpoint()), token);
  } else {
    spdlog::warn("head: --insecure: no encryption and no authentication; anyone on this network can join or send data");
  }
}

std::string Head::join_token() const {
  if (!pairing_) return "";
  return transport::format_join_token({node_.public_key(), node_.pairing_port(), pairing_->secret()});
}

std::string Head::on_pair(const std::string& public_key, const std::string& node_id, const std::string& secret) {
  if (!pairing_) return "this head does not pair devices (--insecure)";
  const std::string refusal = pairing_->pair(public_key, node_id, secret);
  if (!refusal.empty()) {
    spdlog::warn("head: refused to pair {} ({}): {}", node_id, public_key, refusal);
    return refusal;
  }
  node_.admit(public_key);
  spdlog::info("head: paired device {} (key {})", node_id, public_key);
  return "";
}

std::vector<std::string> Head::member_keys() const {
  std::vector<std::string> keys;
  for (const auto& [id, d] : devices_)
    if (!d.public_key.empty()) keys.push_back(d.public_key);
  return keys;
}

Head::~Head() = default;

Device* Head::device_by_identity(const std::string& identity) {
  const std::string id = identity.substr(0, identity.find('/'));
  auto it = devices_.find(id);
  return it == devices_.end() ? nullptr : &it->second;
}

void Head::on_control(const std::string& identity, const char* peer_address, const char* user_id, const transport::Decoded& d,
                      zmq::message_t*) {
  const auto env = d.envelope();
  const uint64_t rid = env.getRequestId();
  switch (env.which()) {
    case wire::Envelope::HELLO: on_hello(identity, peer_address, user_id, env.getHello()); break;
    case wire::Envelope::HEARTBEAT: on_heartbeat(identity, env.getHeartbeat()); break;
    case wire::Envelope::WEIGHT_REQUEST: on_weight_request(identity, env.getWeightRequest()); break;
    case wire::Envelope::LOAD_STATUS: on_load_status(identity, env.getLoadStatus()); break;
    case wire::Envelope::ERROR: on_error(identity, env.getError()); break;
    case wire::Envelope::DEVICES_REQUEST: on_devices(identity, rid); break;
    case wire::Envelope::LAUNCH_REQUEST: on_launch(identity, rid, env.getLaunchRequest()); break;
    case wire::Envelope::GENERATE_REQUEST: on_generate(identity, rid, env.getGenerateRequest()); break;
    case wire::Envelope::STATUS_REQUEST: on_status(identity, rid); break;
    case wire::Envelope::STOP_REQUEST: on_stop(identity, rid); break;
    case wire::Envelope::CANCEL_REQUEST:
      if (scheduler_) scheduler_->cancel(identity, env.getCancelRequest().getRequestId());
      break;
    case wire::Envelope::LINK_REPORT: on_link_report(identity, env.getLinkReport()); break;
    default:
      node_.drops().unexpected++;
      spdlog::debug("head: dropped an unexpected {} from {}", transport::kind_name(env), identity);
  }
}

// ---- registry ----

void Head::on_hello(const std::string& identity, const char* peer_address, const char* user_id, wire::Hello::Reader h) {
  const auto refuse = [&](const std::string& why) {
    spdlog::warn("head: refused registration from {}: {}", identity, why);
    reply_error(identity, 0, why);
  };
  if (h.getProtocolVersion() != wire::PROTOCOL_VERSION) return refuse("protocol version " + std::to_string(h.getProtocolVersion()) + " is not " + std::to_string(wire::PROTOCOL_VERSION));
  if (identity != h.getNodeId().cStr()) return refuse("the node id does not match the connection's identity");
  // The key the connection was authenticated with (ZAP's User-Id) is the device's identity: another
  // paired device cannot take over a node id that registered with a different key.
  const std::string key = user_id == nullptr ? "" : user_id;
  if (auto known = devices_.find(identity); known != devices_.end() && !known->second.public_key.empty() && known->second.public_key != key)
    return refuse("node id " + identity + " belongs to another key");
  Device d;
  d.node_id = identity;
  d.public_key = key;
  d.incarnation = h.getIncarnation();
  d.profile = from_wire(h.getProfile());
  d.control_endpoint = reachable(transport::tcp_endpoint(h.getControlEndpoint().cStr()), peer_address);
  d.data_endpoint = reachable(transport::tcp_endpoint(h.getDataEndpoint().cStr()), peer_address);
  d.cpu = h.getProfile().getCpu().cStr();
  d.arch = h.getProfile().getArch().cStr();
  d.os = h.getProfile().getOs().cStr();
  d.cores = static_cast<int>(h.getProfile().getCores());
  d.last_seen = Clock::now();
  for (const auto& [id, other] : devices_)
    if (id != d.node_id && other.profile.name == d.profile.name && other.alive)
      return refuse("the name '" + d.profile.name + "' is taken by another device: start it with another --name");
  const bool known = devices_.count(d.node_id) > 0;
  devices_[d.node_id] = d;
  spdlog::info("head: {} device {} ({}, {:.1f} GB usable) at {}", known ? "re-registered" : "registered", d.profile.name,
               d.node_id, d.profile.usable_memory_bytes / 1e9, d.control_endpoint);
  capnp::MallocMessageBuilder b;
  auto ack = b.initRoot<wire::Envelope>().initHelloAck();
  ack.setHeadId(node_.node_id());
  const auto keys = member_keys();
  auto list = ack.initMemberKeys(static_cast<unsigned>(keys.size()));
  for (unsigned i = 0; i < keys.size(); ++i) list.set(i, keys[i]);
  node_.send_to(identity, b);

  // Links for the planner: the newcomer measures its way to everyone, and every other worker
  // its way to the newcomer. The head measures nothing itself (its loop must stay responsive);
  // a link between a worker and the head is taken as the same both ways.
  std::vector<const Device*> others;
  for (const auto& [id, other] : devices_)
    if (id != d.node_id && other.alive) others.push_back(&other);
  request_probe(d.node_id, others);
  for (const Device* o : others)
    if (!o->is_self) request_probe(o->node_id, {&devices_.at(d.node_id)});
  retry_recovery("device " + d.profile.name + " registered");
}

void Head::request_probe(const std::string& prober, const std::vector<const Device*>& targets) {
  if (targets.empty()) return;
  capnp::MallocMessageBuilder b;
  auto list = b.initRoot<wire::Envelope>().initLinkProbe().initTargets(static_cast<unsigned>(targets.size()));
  for (unsigned i = 0; i < targets.size(); ++i) {
    list[i].setNodeId(targets[i]->node_id);
    list[i].setControlEndpoint(targets[i]->control_endpoint);
    list[i].setPublicKey(targets[i]->public_key);
  }
  node_.send_to(prober, b);
}

void Head::on_link_report(const std::string& identity, wire::LinkReport::Reader r) {
  const Device* from = device_by_identity(identity);
  if (from == nullptr) return;
  for (auto l : r.getLinks()) {
    const std::string to = l.getTo().cStr();
    const double bw = l.getBandwidthBytesPerS(), lat = l.getLatencyS();
    if (!devices_.count(to) || !std::isfinite(bw) || !std::isfinite(lat) || bw <= 0 || lat < 0 || lat > 10) continue;
    links_[{from->node_id, to}] = {bw, lat};
    if (devices_.at(to).is_self) links_[{to, from->node_id}] = {bw, lat};
    spdlog::info("head: link {} -> {}: {:.2f} ms, {:.0f} MB/s", from->profile.name, devices_.at(to).profile.name, lat * 1e3, bw / 1e6);
  }
}

void Head::on_heartbeat(const std::string& identity, wire::Heartbeat::Reader h) {
  Device* d = device_by_identity(identity);
  // Unknown, or a restarted process whose Hello has not arrived yet (its endpoints are new): it
  // must register (again) before it counts as up.
  if (d == nullptr || (!d->is_self && d->incarnation != h.getIncarnation())) {
    // A device that registered with an earlier run of this head (same keys, same port): ask it to
    // register again, at most once a second.
    const std::string node_id = identity.substr(0, identity.find('/'));
    if (hello_requested_.size() > 1024) hello_requested_.clear();  // bounded, whoever sends
    auto& last = hello_requested_[node_id];
    if (Clock::now() - last > std::chrono::seconds(1)) {
      last = Clock::now();
      capnp::MallocMessageBuilder b;
      b.initRoot<wire::Envelope>().initHelloRequest();
      if (node_.send_to(node_id, b)) spdlog::info("head: asked {} to register again", node_id);
    }
    return;
  }
  d->last_seen = Clock::now();
  d->dropped = h.getDropped();
  d->resident_bytes = h.getResidentBytes();
  d->batches = h.getBatches();
  d->tokens = h.getTokens();
  d->compute_ns = h.getComputeNs();
  d->decode_steps = h.getDecodeSteps();
  d->decode_ns = h.getDecodeNs();
  d->bytes_out = h.getBytesOut();
  d->refused_handshakes = h.getRefusedHandshakes();
  if (!d->alive) {
    spdlog::info("head: device {} is back", d->profile.name);
    d->alive = true;
    retry_recovery("device " + d->profile.name + " is back");
  }
}

void Head::tick() {
  const auto now = Clock::now();
  for (auto& [id, d] : devices_) {
    if (d.is_self || !d.alive || now - d.last_seen <= kDeviceTimeout) continue;
    d.alive = false;
    spdlog::warn("head: device {} stopped responding", d.profile.name);
    if (!plan_ || !plan_->failure.empty()) continue;
    for (const auto& st : plan_->stages) {
      if (st.node_id != id) continue;
      const std::string reason = "device " + d.profile.name + " (layers " + std::to_string(st.spec.first_layer) + "-" +
                                 std::to_string(st.spec.last_layer - 1) + ") stopped responding (no heartbeat for 2 s)";
      // A ready pipeline is rebuilt on the devices left; a launch in progress fails (its
      // client can launch again).
      if (!plan_->ready && !plan_->launcher.empty()) fail_plan(reason);
      else recover(id, reason);
      break;
    }
  }
  if (!carried_.empty() && Clock::now() > recovery_deadline_) {
    const std::string why = (plan_ ? plan_->failure : std::string("a device was lost")) + "; no device came within " +
                            std::to_string(node_.config().recovery_wait_s) + " s: start another device and run `hearth launch` again";
    spdlog::error("head: {}", why);
    if (plan_) plan_->failure = why;
    fail_carried(why);
  }
  if (scheduler_ && plan_ && plan_->ready) scheduler_->step();
}

void Head::on_error(const std::string& identity, wire::Error::Reader e) {
  const Device* d = device_by_identity(identity);
  const std::string who = d ? d->profile.name : identity;
  spdlog::warn("head: error from {}: {}", who, e.getMessage().cStr());
  if (!scheduler_ || !plan_ || e.getPlanId() != plan_->id) return;
  std::vector<uint64_t> seqs;
  for (uint64_t s : e.getSeqs()) seqs.push_back(s);
  if (!seqs.empty()) scheduler_->fail(who + ": " + e.getMessage().cStr(), seqs);
}

void Head::on_devices(const std::string& client, uint64_t request_id) {
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<wire::Envelope>();
  env.setRequestId(request_id);
  auto list = env.initDevicesReply().initDevices(static_cast<unsigned>(devices_.size()));
  unsigned i = 0;
  const auto now = Clock::now();
  for (const auto& [id, d] : devices_) {
    auto out = list[i++];
    out.setNodeId(id);
    out.setControlEndpoint(d.control_endpoint);
    out.setDataEndpoint(d.data_endpoint);
    out.setAlive(d.alive);
    out.setIsHead(d.is_self);
    out.setLastSeenMs(d.is_self ? 0 : static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(now - d.last_seen).count()));
    profiles::Profile p;
    p.device = d.profile;
    p.system.cpu = d.cpu;
    p.system.arch = d.arch;
    p.system.os = d.os;
    p.system.cores = d.cores;
    to_wire(p, out.initProfile());
  }
  node_.send_to(client, b);
}

// ---- launch ----

void Head::on_launch(const std::string& client, uint64_t request_id, wire::LaunchRequest::Reader r) {
  try {
    if (plan_ && !plan_->ready && plan_->failure.empty() && !plan_->launcher.empty())
      throw std::runtime_error("a launch is already in progress");
    unload_all();
    auto p = std::make_unique<LaunchedPlan>();
    p->id = next_plan_id_++;
    p->model_path = r.getModelPath().cStr();
    p->launcher = client;
    p->launcher_request = request_id;
    p->started = Clock::now();
    p->file = std::make_unique<runtime::GgufFile>(runtime::GgufFile::open(p->model_path));
    p->config = runtime::read_model_config(*p->file);
    p->tokenizer = std::make_unique<runtime::Tokenizer>(runtime::load_vocab(p->file->metadata()));
    struct stat st {};
    ::stat(p->model_path.c_str(), &st);
    const std::string key = p->model_path + ":" + std::to_string(st.st_size) + ":" + std::to_string(st.st_mtime);
    if (!hash_cache_.count(key)) hash_cache_[key] = hash_file(p->model_path);
    p->model_hash = hash_cache_[key];

    const int ctx = r.getCtx() > 0 ? static_cast<int>(r.getCtx()) : std::min(p->config.n_ctx_train, 4096);
    const int streams = r.getStreams() > 0 ? static_cast<int>(r.getStreams()) : 4;
    p->options = {.n_ctx = ctx, .max_batch = kDefaultMaxBatch, .max_sequences = streams};

    std::vector<std::string> wanted;
    for (auto n : r.getDevices()) wanted.emplace_back(n.cStr());
    const std::vector<const Device*> devices = candidates(wanted);
    partitioner::PartitionOptions opt;
    const auto objective = partitioner::objective_from_string(r.getObjective().size() ? r.getObjective().cStr() : "latency");
    if (!objective) throw std::invalid_argument("unknown objective '" + std::string(r.getObjective().cStr()) + "'");
    opt.objective = *objective;
    opt.ctx = ctx;
    opt.streams = streams;
    opt.kv_bytes_per_elem = 4;  // the runtime's KV cache is f32
    const partitioner::ModelSpec spec = runtime::model_spec_from_gguf(*p->file, p->config);
    p->spec = spec;
    p->partition = opt;
    p->wanted = wanted;
    plan_ = std::move(p);
    plan_->plan = make_plan(spec, devices, r, opt);
    for (const auto& line : partitioner::describe_plan(plan_->plan)) spdlog::info("plan: {}", line);
    start_stages(devices);
  } catch (const std::exception& e) {
    spdlog::warn("head: launch failed: {}", e.what());
    plan_.reset();
    capnp::MallocMessageBuilder b;
    auto env = b.initRoot<wire::Envelope>();
    env.setRequestId(request_id);
    auto reply = env.initLaunchReply();
    reply.setOk(false);
    reply.setMessage(e.what());
    node_.send_to(client, b);
  }
}

// The head first, then the other live devices (all, or those named).
std::vector<const Device*> Head::candidates(const std::vector<std::string>& wanted) const {
  std::vector<const Device*> devices{&devices_.at(node_.node_id())};
  for (const auto& [id, d] : devices_) {
    if (d.is_self || !d.alive) continue;
    if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), d.profile.name) == wanted.end()) continue;
    devices.push_back(&d);
  }
  return devices;
}

void Head::recover(const std::string& lost_node_id, const std::string& reason) {
  spdlog::warn("head: {}: planning again on the devices left", reason);
  std::vector<CarriedSession> carried = scheduler_ ? scheduler_->suspend() : std::vector<CarriedSession>{};
  carried.insert(carried.end(), std::make_move_iterator(carried_.begin()), std::make_move_iterator(carried_.end()));
  carried_.clear();
  scheduler_.reset();
  std::unique_ptr<LaunchedPlan> old = std::move(plan_);
  node_.unload_stage();
  auto p = std::make_unique<LaunchedPlan>();
  p->id = next_plan_id_++;
  p->model_path = old->model_path;
  p->model_hash = old->model_hash;
  p->file = std::move(old->file);
  p->config = old->config;
  p->tokenizer = std::move(old->tokenizer);
  p->options = old->options;
  p->spec = old->spec;
  p->partition = old->partition;
  p->wanted = old->wanted;
  p->events = old->events;
  p->events.push_back(reason);
  p->started = Clock::now();
  try {
    const std::vector<const Device*> devices = candidates(p->wanted);
    p->plan = plan_by_planner(p->spec, devices, p->partition);
    plan_ = std::move(p);
    for (const auto& line : partitioner::describe_plan(plan_->plan)) spdlog::info("re-plan: {}", line);
    // Stages of the old plan on devices still up get their new assignment (which replaces the
    // old stage); those no longer used are told to unload.
    for (const auto& s : old->stages) {
      bool used = false;
      for (const auto& a : plan_->plan.stages) used |= devices[static_cast<size_t>(a.device)]->node_id == s.node_id;
      if (!used && s.node_id != lost_node_id && s.node_id != node_.node_id()) {
        capnp::MallocMessageBuilder b;
        b.initRoot<wire::Envelope>().initStopRequest();
        node_.send_to(s.node_id, b);
      }
    }
    plan_->events.push_back("re-planned on " + std::to_string(plan_->plan.stages.size()) + " device(s); replaying " +
                            std::to_string(carried.size()) + " conversation(s)");
    start_stages(devices);
    for (auto& c : carried) scheduler_->resume(std::move(c));  // they run once the stages are ready
  } catch (const std::exception& e) {
    if (!plan_) plan_ = std::move(p);  // keep the model's facts for status, with the failure
    plan_->ready = false;
    scheduler_.reset();
    const std::string why = reason + ", and the devices left cannot run the model (" + e.what() + ")";
    const int wait = node_.config().recovery_wait_s;
    // The device may come back (a link that heals, a daemon restarted): the conversations wait for
    // it, up to --recovery-wait, then fail.
    if (carried.empty() || wait <= 0) {
      plan_->failure = why + ": start another device and run `hearth launch` again";
      spdlog::error("head: {}", plan_->failure);
      carried_ = std::move(carried);
      fail_carried(plan_->failure);
      return;
    }
    if (carried_.empty() && recovery_deadline_ < Clock::now()) recovery_deadline_ = Clock::now() + std::chrono::seconds(wait);
    carried_ = std::move(carried);
    plan_->failure = why + ": " + std::to_string(carried_.size()) + " conversation(s) wait for a device to join or come back";
    spdlog::error("head: {}", plan_->failure);
  }
}

void Head::retry_recovery(const std::string& why) {
  if (carried_.empty() || !plan_) return;
  spdlog::info("head: {}: planning again for the {} waiting conversation(s)", why, carried_.size());
  recover("", why);
}

void Head::fail_carried(const std::string& why) {
  for (const auto& c : carried_)
    emit({.client = c.client, .request_id = c.request_id, .done = true, .error = why, .error_code = 503, .finish_reason = "error"});
  carried_.clear();
}

// The links between `devices`, as their probes measured them, else the access-link defaults.
partitioner::LinkTable Head::link_table(const std::vector<const Device*>& devices,
                                        const std::vector<partitioner::DeviceProfile>& profiles) const {
  partitioner::LinkTable links = partitioner::link_table_from_access_links(profiles);
  for (size_t i = 0; i < devices.size(); ++i)
    for (size_t j = 0; j < devices.size(); ++j)
      if (auto it = links_.find({devices[i]->node_id, devices[j]->node_id}); it != links_.end())
        links.set(static_cast<int>(i), static_cast<int>(j), it->second);
  return links;
}

partitioner::PartitionPlan Head::plan_by_planner(const partitioner::ModelSpec& spec, const std::vector<const Device*>& devices,
                                                 const partitioner::PartitionOptions& options) const {
  std::vector<partitioner::DeviceProfile> profiles;
  for (const Device* d : devices) profiles.push_back(d->profile);
  const partitioner::PlanResult result = partitioner::plan_partition(spec, profiles, link_table(devices, profiles), options);
  if (!result.ok()) throw std::runtime_error(result.error.message);
  return *result.plan;
}

partitioner::PartitionPlan Head::make_plan(const partitioner::ModelSpec& spec, const std::vector<const Device*>& devices,
                                           wire::LaunchRequest::Reader r, const partitioner::PartitionOptions& options) {
  if (r.getSplit().size() == 0) return plan_by_planner(spec, devices, options);
  std::vector<partitioner::DeviceProfile> profiles;
  for (const Device* d : devices) profiles.push_back(d->profile);
  const partitioner::LinkTable links = link_table(devices, profiles);
  // A hand-made split: device names and layer counts in pipeline order, the head first.
  std::vector<partitioner::StageRange> ranges;
  int layer = 0;
  for (const auto& [name, count] : parse_split(r.getSplit().cStr())) {
    int index = -1;
    for (size_t i = 0; i < devices.size(); ++i)
      if (devices[i]->profile.name == name || (i == 0 && name == "head")) index = static_cast<int>(i);
    if (index < 0) throw std::invalid_argument("--split names '" + name + "', which is not a live device");
    ranges.push_back({index, layer, layer + count});
    layer += count;
  }
  for (const auto& problem : partitioner::validate_ranges(spec.n_layers, static_cast<int>(profiles.size()), ranges))
    throw std::invalid_argument("--split: " + problem);
  partitioner::PartitionPlan plan = partitioner::assemble_plan(spec, profiles, links, options, ranges);
  const auto problems = partitioner::validate_plan(spec, profiles, options, plan);
  if (!problems.empty()) throw std::invalid_argument("--split does not fit: " + problems.front());
  return plan;
}

void Head::start_stages(const std::vector<const Device*>& devices) {
  LaunchedPlan& p = *plan_;
  for (const auto& a : p.plan.stages) {
    PlannedStage s;
    s.node_id = devices[static_cast<size_t>(a.device)]->node_id;
    s.spec = {a.first_layer, a.last_layer, a.has_embedding, a.has_output};
    p.stages.push_back(std::move(s));
  }
  if (p.stages.empty() || p.stages.front().node_id != node_.node_id())
    throw std::logic_error("the plan does not start on the head");
  const auto next_endpoint = [&](size_t i) {
    if (i + 1 < p.stages.size()) return devices_.at(p.stages[i + 1].node_id).data_endpoint;
    return i == 0 ? std::string() : node_.data_endpoint();  // the last stage returns tokens to the head
  };
  const auto next_key = [&](size_t i) {
    return i + 1 < p.stages.size() ? devices_.at(p.stages[i + 1].node_id).public_key : node_.public_key();
  };
  std::vector<std::string> plan_keys;
  for (const auto& s : p.stages) plan_keys.push_back(devices_.at(s.node_id).public_key);
  // The head maps its own layers straight from the model file.
  node_.load_local_stage(p.id, p.model_path, p.stages[0].spec, p.options, next_endpoint(0), next_key(0));
  p.stages[0].state = "ready";
  p.stages[0].resident_bytes = resident_bytes();
  for (size_t i = 1; i < p.stages.size(); ++i) {
    PlannedStage& s = p.stages[i];
    s.file = std::make_unique<StageFile>(*p.file, p.config, s.spec);
    s.bytes_total = s.file->size();
    capnp::MallocMessageBuilder b;
    auto a = b.initRoot<wire::Envelope>().initAssignment();
    a.setPlanId(p.id);
    a.setModelHash(p.model_hash);
    a.setModelName(p.config.name);
    a.setFirstLayer(static_cast<uint32_t>(s.spec.first_layer));
    a.setLastLayer(static_cast<uint32_t>(s.spec.last_layer));
    a.setHasEmbedding(false);
    a.setHasOutput(s.spec.has_output);
    a.setStageFileBytes(s.file->size());
    a.setStageFileHash(s.file->header_hash());
    a.setNextEndpoint(next_endpoint(i));
    a.setNextKey(next_key(i));
    auto keys = a.initMemberKeys(static_cast<unsigned>(plan_keys.size()));
    for (unsigned k = 0; k < plan_keys.size(); ++k) keys.set(k, plan_keys[k]);
    a.setNCtx(static_cast<uint32_t>(p.options.n_ctx));
    a.setMaxBatch(static_cast<uint32_t>(p.options.max_batch));
    a.setMaxSequences(static_cast<uint32_t>(p.options.max_sequences));
    a.setNEmbd(static_cast<uint32_t>(p.config.n_embd));
    if (!node_.send_to(s.node_id, b)) throw std::runtime_error("device " + devices_.at(s.node_id).profile.name + " is unreachable");
  }
  scheduler_ = std::make_unique<Scheduler>(node_, *p.tokenizer, p.id, p.options.n_ctx, static_cast<int>(p.stages.size()),
                                           p.options.max_sequences, [this](const GenerationEvent& e) { emit(e); });
  if (p.stages.size() == 1) launch_finished(true, "");
}

void Head::on_weight_request(const std::string& identity, wire::WeightRequest::Reader r) {
  if (!plan_ || r.getPlanId() != plan_->id) {
    node_.drops().out_of_plan++;
    return;
  }
  for (const auto& s : plan_->stages) {
    if (s.node_id != identity || !s.file) continue;
    if (r.getLength() == 0 || r.getLength() > kMaxWeightChunk || r.getOffset() > s.file->size() ||
        r.getLength() > s.file->size() - r.getOffset())
      throw std::invalid_argument("weight request outside the stage file");
    // Read straight into the message ZeroMQ sends (no copy, one chunk at a time here; the
    // device keeps a few requests in flight).
    zmq::message_t chunk(r.getLength());
    s.file->read(r.getOffset(), {chunk.data<uint8_t>(), chunk.size()});
    capnp::MallocMessageBuilder b;
    auto c = b.initRoot<wire::Envelope>().initWeightChunk();
    c.setPlanId(plan_->id);
    c.setOffset(r.getOffset());
    c.setChecksum(XXH3_64bits(chunk.data(), chunk.size()));
    node_.send_to(identity, b, std::move(chunk));
    return;
  }
  node_.drops().out_of_plan++;
}

void Head::on_load_status(const std::string& identity, wire::LoadStatus::Reader st) {
  if (!plan_ || st.getPlanId() != plan_->id) return;
  for (auto& s : plan_->stages) {
    if (s.node_id != identity) continue;
    static const char* const names[] = {"receiving", "loading", "ready", "failed"};
    const auto state = static_cast<unsigned>(st.getState());
    s.state = state < 4 ? names[state] : "unknown";
    if (st.getBytesTotal() > 0) s.bytes_done = st.getBytesDone();
    if (st.getState() == wire::LoadStatus::State::READY) s.bytes_done = s.bytes_total;  // also when mapped from a local copy
    s.resident_bytes = st.getResidentBytes();
    s.message = st.getMessage().cStr();
    if (!plan_->launcher.empty()) {
      capnp::MallocMessageBuilder b;
      auto env = b.initRoot<wire::Envelope>();
      env.setRequestId(plan_->launcher_request);
      auto pr = env.initLaunchProgress();
      pr.setDevice(devices_.at(identity).profile.name);
      pr.setBytesDone(s.bytes_done);
      pr.setBytesTotal(s.bytes_total);
      pr.setState(s.state);
      node_.send_to(plan_->launcher, b);
    }
    if (s.state == "failed") {
      fail_plan("device " + devices_.at(identity).profile.name + " could not load its stage: " + s.message);
      return;
    }
  }
  if (!plan_->ready && std::all_of(plan_->stages.begin(), plan_->stages.end(), [](const PlannedStage& s) { return s.state == "ready"; }))
    launch_finished(true, "");
}

void Head::launch_finished(bool ok, const std::string& message) {
  if (ok) {
    plan_->ready = true;
    const double s = std::chrono::duration<double>(Clock::now() - plan_->started).count();
    spdlog::info("head: plan {} ready in {:.1f} s", plan_->id, s);
  }
  if (plan_->launcher.empty()) return;
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<wire::Envelope>();
  env.setRequestId(plan_->launcher_request);
  auto reply = env.initLaunchReply();
  reply.setOk(ok);
  reply.setMessage(message);
  reply.setPlanJson(plan_json());
  node_.send_to(plan_->launcher, b);
  plan_->launcher.clear();
}

void Head::fail_plan(const std::string& reason) {
  if (!plan_ || !plan_->failure.empty()) return;
  spdlog::error("head: {}", reason);
  plan_->failure = reason;
  const bool was_launching = !plan_->ready;
  plan_->ready = false;
  if (scheduler_) scheduler_->fail(reason);
  if (was_launching) launch_finished(false, reason);
}

void Head::unload_all() {
  if (scheduler_) scheduler_->fail("the model was unloaded");
  fail_carried("the model was unloaded");  // conversations that waited for a device
  scheduler_.reset();
  if (plan_) {
    for (const auto& s : plan_->stages) {
      if (s.node_id == node_.node_id()) continue;
      capnp::MallocMessageBuilder b;
      b.initRoot<wire::Envelope>().initStopRequest();
      node_.send_to(s.node_id, b);
    }
  }
  node_.unload_stage();
  plan_.reset();
}

// ---- clients ----

void Head::on_generate(const std::string& client, uint64_t request_id, wire::GenerateRequest::Reader r) {
  if (!plan_ || !plan_->ready || !scheduler_) {
    const std::string why = !plan_ ? "no model is loaded: run `hearth launch --model FILE` first"
                            : !plan_->failure.empty() ? "the cluster lost its plan (" + plan_->failure + "): launch again"
                                                      : "the model is still loading";
    emit({.client = client, .request_id = request_id, .done = true, .error = why, .error_code = 503, .finish_reason = "error"});
    return;
  }
  runtime::SamplingParams sampling;
  std::vector<int32_t> prompt;
  std::string chat_template;
  try {
    sampling = from_wire(r.getSampling());
    prompt = encode_request(r, chat_template);
  } catch (const std::exception& e) {
    emit({.client = client, .request_id = request_id, .done = true, .error = e.what(), .error_code = 400, .finish_reason = "error"});
    return;
  }
  scheduler_->add(client, request_id, std::move(prompt), static_cast<int>(std::min<uint32_t>(r.getNPredict(), 1u << 20)), sampling,
                  chat_template);
}

std::vector<int32_t> Head::encode_request(wire::GenerateRequest::Reader r, std::string& chat_template) const {
  if (r.getMessages().size() == 0) return plan_->tokenizer->encode(r.getPrompt().cStr());
  // A conversation: the model's own template renders it, and its control tokens are real tokens.
  std::vector<runtime::ChatMessage> messages;
  for (auto m : r.getMessages()) {
    const std::string role = m.getRole().cStr();
    if (role != "system" && role != "user" && role != "assistant") throw std::invalid_argument("unknown message role '" + role + "'");
    messages.push_back({role, m.getContent().cStr()});
  }
  const runtime::ChatTemplate t =
      runtime::detect_chat_template(plan_->file->metadata().get_string_opt("tokenizer.chat_template").value_or(""));
  chat_template = t.name + (t.fallback ? " (fallback)" : "");
  return plan_->tokenizer->encode(runtime::render_chat(t, messages), {.add_bos = true, .parse_special = true});
}

void Head::emit(const GenerationEvent& e) {
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<wire::Envelope>();
  env.setRequestId(e.request_id);
  auto ev = env.initGenerateEvent();
  ev.setText(kj::StringPtr(e.piece.c_str(), e.piece.size()));
  ev.setToken(e.token);
  ev.setDone(e.done);
  ev.setError(e.error);
  ev.setPromptTokens(static_cast<uint32_t>(e.prompt_tokens));
  ev.setGeneratedTokens(static_cast<uint32_t>(e.generated_tokens));
  ev.setTtftMs(e.ttft_ms);
  ev.setDecodeTokS(e.decode_tok_s);
  ev.setFinishReason(e.finish_reason);
  ev.setErrorCode(static_cast<uint16_t>(e.error_code));
  ev.setChatTemplate(e.chat_template);
  node_.send_to(e.client, b);
  // Long enough for a rate to mean something; alone, as the plan's figure is for one stream.
  if (e.done && e.error.empty() && e.generated_tokens >= 16 && e.decode_tok_s > 0 && scheduler_ &&
      scheduler_->active() <= 1 && scheduler_->queued() == 0)
    check_pace(e.decode_tok_s);
}

void Head::check_pace(double decode_tok_s) {
  if (!plan_ || !plan_->ready) return;
  // The first check only marks where the counters are (they count since each daemon started,
  // earlier plans included); later ones judge the steps since the last check.
  const bool first = plan_->pace_mark.empty();
  Pace pace;
  pace.planned_ms_per_token = plan_->plan.predicted.ms_per_token;
  pace.measured_ms_per_token = 1e3 / decode_tok_s;
  std::vector<std::pair<uint64_t, uint64_t>> now;
  for (size_t i = 0; i < plan_->stages.size(); ++i) {
    const std::string& id = plan_->stages[i].node_id;
    const Device& d = devices_.at(id);
    const bool self = id == node_.node_id();
    const uint64_t steps = self ? node_.work().decode_steps.load() : d.decode_steps;
    const uint64_t ns = self ? node_.work().decode_ns.load() : d.decode_ns;
    now.emplace_back(steps, ns);
    if (first) continue;
    const auto [steps0, ns0] = plan_->pace_mark[i];
    // A device's counters come with its heartbeats (every 400 ms): without new ones, judge later.
    if (steps <= steps0 || ns < ns0) return;
    pace.stages.push_back({d.profile.name, plan_->plan.stages[i].stage_time_s * 1e3,
                           static_cast<double>(ns - ns0) * 1e-6 / static_cast<double>(steps - steps0)});
  }
  plan_->pace_mark = now;
  if (first) return;
  spdlog::debug("head: decode pace {:.2f} ms/token, planned {:.2f}", pace.measured_ms_per_token, pace.planned_ms_per_token);
  const auto slow = explain_slow_pace(pace);
  if (slow && !plan_->slow_pace) {
    spdlog::warn("head: {}", *slow);
    plan_->events.push_back(*slow);
  } else if (!slow && plan_->slow_pace) {
    plan_->events.push_back(fmt::format("back on pace: {:.1f} ms/token (planned {:.1f})", pace.measured_ms_per_token,
                                        pace.planned_ms_per_token));
  }
  plan_->slow_pace = slow.has_value();
}

void Head::on_result(wire::Result::Reader r) {
  if (!plan_ || r.getPlanId() != plan_->id || !scheduler_) {
    node_.drops().out_of_plan++;
    return;
  }
  std::vector<SampledToken> tokens;
  for (auto t : r.getTokens()) {
    if (t.getToken() < 0 || t.getToken() >= plan_->config.n_vocab) throw std::invalid_argument("result with a token outside the vocabulary");
    tokens.push_back({t.getSeq(), t.getToken()});
  }
  scheduler_->on_sampled(tokens);
}

void Head::on_sampled(const std::vector<SampledToken>& tokens) {
  if (scheduler_) scheduler_->on_sampled(tokens);
}

std::string Head::plan_json() const {
  nlohmann::json j;
  if (!plan_) return "{}";
  j["plan_id"] = plan_->id;
  j["model"] = plan_->model_path;
  j["model_name"] = plan_->config.name;
  j["n_layers"] = plan_->config.n_layer;
  j["objective"] = std::string(partitioner::to_string(plan_->plan.objective));
  j["ready"] = plan_->ready;
  j["max_sequences"] = plan_->options.max_sequences;
  j["n_ctx"] = plan_->options.n_ctx;
  if (!plan_->failure.empty()) j["failure"] = plan_->failure;
  j["events"] = plan_->events;
  for (size_t i = 0; i < plan_->stages.size(); ++i) {
    const auto& s = plan_->stages[i];
    const auto& a = plan_->plan.stages[i];
    const Device& d = devices_.at(s.node_id);
    const bool self = s.node_id == node_.node_id();
    const WorkStats& w = node_.work();
    // Counters since each daemon started (Prometheus counters; rates come from differences).
    const uint64_t batches = self ? w.batches.load() : d.batches, tokens = self ? w.tokens.load() : d.tokens,
                   compute_ns = self ? w.compute_ns.load() : d.compute_ns, bytes_out = self ? w.bytes_out.load() : d.bytes_out;
    j["stages"].push_back({{"device", d.profile.name},
                           {"node_id", s.node_id},
                           {"first_layer", s.spec.first_layer},
                           {"last_layer", s.spec.last_layer},
                           {"has_embedding", s.spec.has_embedding},
                           {"has_output", s.spec.has_output},
                           {"state", s.state},
                           {"bytes_done", s.bytes_done},
                           {"bytes_total", s.bytes_total},
                           {"resident_bytes", self ? resident_bytes() : d.resident_bytes},
                           {"dropped", self ? node_.drops().total() : d.dropped},
                           {"batches", batches},
                           {"tokens", tokens},
                           {"compute_s", static_cast<double>(compute_ns) * 1e-9},
                           {"bytes_out", bytes_out},
                           {"refused_handshakes", self ? node_.refused_handshakes() : d.refused_handshakes},
                           {"message", s.message},
                           {"weight_bytes", a.weight_bytes},
                           {"kv_bytes", a.kv_bytes},
                           {"memory_bytes", a.memory_bytes},
                           {"headroom_bytes", a.headroom_bytes},
                           {"stage_time_ms", a.stage_time_s * 1e3},
                           {"hop_time_ms", a.hop_time_s * 1e3}});
  }
  const auto& pr = plan_->plan.predicted;
  j["predicted"] = {{"ms_per_token", pr.ms_per_token}, {"tokens_per_s", pr.tokens_per_s}, {"ttft_ms", pr.ttft_ms}};
  j["left_out"] = plan_->plan.left_out_reasons;
  j["text"] = partitioner::describe_plan(plan_->plan);
  return j.dump();
}

void Head::on_status(const std::string& client, uint64_t request_id) {
  nlohmann::json j;
  j["head"] = node_.profile().device.name;
  j["plan"] = plan_ ? nlohmann::json::parse(plan_json()) : nlohmann::json(nullptr);
  if (node_.stage()) {
    const WorkStats& w = node_.work();
    j["head_stage"] = {{"batches", w.batches.load()}, {"tokens", w.tokens.load()}, {"compute_s", static_cast<double>(w.compute_ns.load()) * 1e-9}};
  }
  if (scheduler_) {
    const auto& t = scheduler_->totals();
    j["generation"] = {{"active", scheduler_->active()},
                       {"queued", scheduler_->queued()},
                       {"requests", t.requests},
                       {"tokens_generated", t.tokens_generated},
                       {"last_decode_tok_s", t.last_decode_tok_s},
                       {"last_ttft_ms", t.last_ttft_ms}};
  }
  for (const auto& [key, l] : links_)
    if (devices_.count(key.first) && devices_.count(key.second))
      j["links"].push_back({{"from", devices_.at(key.first).profile.name},
                            {"to", devices_.at(key.second).profile.name},
                            {"latency_ms", l.latency_s * 1e3},
                            {"bandwidth_mb_s", l.bandwidth_bytes_per_s / 1e6}});
  j["security"] = node_.keys() ? "curve" : "insecure";
  j["refused_handshakes"] = node_.refused_handshakes();
  const DropStats& d = node_.drops();
  j["dropped"] = {{"malformed", d.malformed.load()}, {"out_of_plan", d.out_of_plan.load()}, {"unexpected", d.unexpected.load()}, {"bad_payload", d.bad_payload.load()}};
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<wire::Envelope>();
  env.setRequestId(request_id);
  env.initStatusReply().setJson(j.dump());
  node_.send_to(client, b);
}

void Head::on_stop(const std::string& client, uint64_t request_id) {
  const bool had = plan_ != nullptr;
  unload_all();
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<wire::Envelope>();
  env.setRequestId(request_id);
  env.initStopReply().setMessage(had ? "model unloaded from every device" : "no model was loaded");
  node_.send_to(client, b);
}

void Head::reply_error(const std::string& client, uint64_t request_id, const std::string& message) {
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<wire::Envelope>();
  env.setRequestId(request_id);
  env.initError().setMessage(message);
  node_.send_to(client, b);
}

}  // namespace hearth::daemon
