#include "cluster/head.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <random>

#include "cluster/wire_convert.h"
#include "transport/printable.h"

namespace hearth::cluster {

namespace wire = transport::wire;

namespace {

// A node bound to 0.0.0.0 cannot say which of its addresses we reach it by: use the address its
// messages come from.
std::string reachable(const std::string& endpoint, const char* peer_address) {
  const std::string host = transport::endpoint_host(endpoint);
  if ((host == "0.0.0.0" || host == "*" || host.empty()) && peer_address != nullptr && *peer_address)
    return transport::with_host(endpoint, peer_address);
  return endpoint;
}

Device self_device(const HeadIdentity& self) {
  Device d;
  d.node_id = self.node_id;
  d.control_endpoint = self.control_endpoint;
  d.data_endpoint = self.data_endpoint;
  d.profile = self.profile.device;
  d.memory = self.profile.memory;
  d.cpu = self.profile.system.cpu;
  d.arch = self.profile.system.arch;
  d.os = self.profile.system.os;
  d.cores = self.profile.system.cores;
  d.public_key = self.public_key;
  return d;
}

}  // namespace

Head::Head(HeadIdentity self, HeadPorts ports)
    : self_(std::move(self)),
      ports_(ports),
      registry_(ports.clock, self_device(self_)),
      library_(self_.model_dirs),
      next_plan_id_(std::random_device{}() | 1) {
  if (self_.keys_dir.empty()) {
    spdlog::warn("head: --insecure: no encryption and no authentication; anyone on this network can join or send data");
    return;
  }
  pairing_ = std::make_unique<PairingRegistry>(self_.keys_dir);
  for (const auto& [key, id] : pairing_->paired()) ports_.host.admit(key);
  const std::string token = join_token();
  transport::write_private_file(self_.keys_dir + "/join-token", token + "\n");
  spdlog::info(
      "head: join token (pair a device with `hearthd --join HOST:{} --token TOKEN`; `hearth token` prints it again):\n  {}",
      transport::endpoint_port(self_.control_endpoint), token);
}

Head::~Head() = default;

std::string Head::join_token() const {
  if (!pairing_) return "";
  return transport::format_join_token({self_.public_key, self_.pairing_port, pairing_->secret()});
}

std::string Head::on_pair(const std::string& public_key, const std::string& node_id, const std::string& secret,
                          const std::string& peer_address) {
  if (!pairing_) return "this head does not pair devices (--insecure)";
  if (!pairing_throttle_.allow(peer_address, ports_.clock.now())) {
    if (pairing_throttle_.refused() % 100 == 1)  // said once per hundred, not once per attempt
      spdlog::warn("head: too many pairing attempts from {} ({} refused so far)", transport::printable(peer_address),
                   pairing_throttle_.refused());
    return "too many pairing attempts from this address: wait a minute and try again";
  }
  const std::string refusal = pairing_->pair(public_key, node_id, secret);
  if (!refusal.empty()) {
    spdlog::warn("head: refused to pair {} ({}): {}", transport::printable(node_id), transport::printable(public_key), refusal);
    return refusal;
  }
  ports_.host.admit(public_key);
  spdlog::info("head: paired device {} (key {})", node_id, public_key);
  return "";
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
    case wire::Envelope::MODELS_REQUEST: on_models(identity, rid); break;
    case wire::Envelope::STOP_REQUEST: on_stop(identity, rid); break;
    case wire::Envelope::CANCEL_REQUEST:
      if (scheduler_) scheduler_->cancel(identity, env.getCancelRequest().getRequestId());
      break;
    case wire::Envelope::LINK_REPORT: on_link_report(identity, env.getLinkReport()); break;
    default:
      ports_.host.count_unexpected();
      spdlog::debug("head: dropped an unexpected {} from {}", transport::kind_name(env), transport::printable(identity));
  }
}

void Head::tick() {
  for (const std::string& id : registry_.expire()) {
    probes_.forget(id);
    device_lost(id, "stopped responding (no heartbeat for 2 s)");
  }
  send_probes();  // the turn of a device that never reported has passed
  if (ports_.stage.loaded()) learn_storage(self_.node_id, ports_.stage.counters());
  check_recovery_deadline();
  try_commit();
  watch_drift();
  watch_drafts();
  if (scheduler_ && plan_ && plan_->ready()) scheduler_->step();
}

// ---- registration ----

void Head::on_hello(const std::string& identity, const char* peer_address, const char* user_id, wire::Hello::Reader h) {
  const auto refuse = [&](const Failure& f) {
    spdlog::warn("head: refused registration from {}: {}", transport::printable(identity), f.what());
    reply_error(identity, 0, f);
  };
  if (h.getProtocolVersion() != wire::PROTOCOL_VERSION)
    return refuse(Failure(ErrorCategory::VERSION_MISMATCH, "version mismatch: the device speaks protocol " +
                                                               std::to_string(h.getProtocolVersion()) + ", this head " +
                                                               std::to_string(wire::PROTOCOL_VERSION) +
                                                               ": run the same hearth version on every device"));
  if (identity != h.getNodeId().cStr())
    return refuse(Failure(ErrorCategory::BAD_REQUEST, "the node id does not match the connection's identity"));
  Device d;
  d.node_id = identity;
  d.public_key = user_id == nullptr ? "" : user_id;
  d.incarnation = h.getIncarnation();
  d.profile = from_wire(h.getProfile());
  d.memory = memory_from_wire(h.getProfile());
  d.control_endpoint = reachable(transport::tcp_endpoint(h.getControlEndpoint().cStr()), peer_address);
  d.data_endpoint = reachable(transport::tcp_endpoint(h.getDataEndpoint().cStr()), peer_address);
  d.cpu = h.getProfile().getCpu().cStr();
  d.arch = h.getProfile().getArch().cStr();
  d.os = h.getProfile().getOs().cStr();
  d.cores = static_cast<int>(h.getProfile().getCores());
  const Device* before = registry_.find(d.node_id);
  const bool known = before != nullptr;
  // A daemon that restarted within the heartbeat timeout never looked lost, but its stage and
  // whatever it was computing are gone with the old process.
  const bool restarted = known && before->incarnation != 0 && before->incarnation != d.incarnation;
  if (auto refusal = registry_.add(d)) return refuse(*refusal);
  spdlog::info("head: {} device {} ({}, {:.1f} GB usable) at {}", known ? "re-registered" : "registered", d.profile.name,
               d.node_id, d.profile.usable_memory_bytes / 1e9, d.control_endpoint);
  capnp::MallocMessageBuilder b;
  auto ack = b.initRoot<wire::Envelope>().initHelloAck();
  ack.setHeadId(self_.node_id);
  const auto keys = registry_.member_keys();
  auto list = ack.initMemberKeys(static_cast<unsigned>(keys.size()));
  for (unsigned i = 0; i < keys.size(); ++i) list.set(i, keys[i]);
  ports_.outbox.send(identity, b);

  // Links for the planner: the newcomer measures its way to everyone, and every other worker
  // its way to the newcomer. The head measures nothing itself (its loop must stay responsive);
  // a link between a worker and the head is taken as the same both ways.
  // The others first: a device admits a newcomer's CURVE key when a probe request names it, and
  // the newcomer's own probes (it learned every key from the HelloAck) must find it admitted.
  // The probes go one device at a time, in this order (cluster/probe_queue.h).
  if (restarted) probes_.forget(d.node_id);  // the old process's report will not come
  const std::vector<const Device*> others = registry_.alive_except(d.node_id);
  for (const Device* o : others)
    if (!o->is_self) request_probe(o->node_id, {registry_.find(d.node_id)});
  request_probe(d.node_id, others);
  if (restarted) device_lost(d.node_id, "restarted, and lost its stage");
  retry_recovery("device " + d.profile.name + " registered");
}

void Head::request_probe(const std::string& prober, const std::vector<const Device*>& targets) {
  std::vector<std::string> ids;
  for (const Device* t : targets) ids.push_back(t->node_id);
  probes_.add(prober, ids);
  send_probes();
}

void Head::send_probes() {
  while (auto r = probes_.next(ports_.clock.now())) {
    const Device* prober = registry_.find(r->prober);
    std::vector<const Device*> targets;
    for (const std::string& id : r->targets)
      if (const Device* t = registry_.find(id); t != nullptr && t->alive && t != prober) targets.push_back(t);
    if (prober == nullptr || !prober->alive || targets.empty()) {
      probes_.reported(r->prober);  // nothing to measure: the next device's turn
      continue;
    }
    capnp::MallocMessageBuilder b;
    auto list = b.initRoot<wire::Envelope>().initLinkProbe().initTargets(static_cast<unsigned>(targets.size()));
    for (unsigned i = 0; i < targets.size(); ++i) {
      list[i].setNodeId(targets[i]->node_id);
      list[i].setControlEndpoint(targets[i]->control_endpoint);
      list[i].setPublicKey(targets[i]->public_key);
    }
    ports_.outbox.send(r->prober, b);
  }
}

void Head::on_link_report(const std::string& identity, wire::LinkReport::Reader r) {
  const Device* from = registry_.by_identity(identity);
  if (from == nullptr) return;
  std::string figures;
  for (auto l : r.getLinks()) {
    const std::string to = l.getTo().cStr();
    const partitioner::Link link{l.getBandwidthBytesPerS(), l.getLatencyS()};
    if (!registry_.set_link(from->node_id, to, link)) continue;
    const std::string figure = fmt::format("{} -> {} {:.2f} ms, {:.0f} Mbit/s", from->profile.name, registry_.at(to).profile.name,
                                           link.latency_s * 1e3, link.bandwidth_bytes_per_s * 8 / 1e6);
    spdlog::info("head: link {}", figure);
    figures += (figures.empty() ? "" : ", ") + figure;
  }
  probes_.reported(from->node_id);
  send_probes();
  reprobe_reported(from->node_id, figures);
}

void Head::on_heartbeat(const std::string& identity, wire::Heartbeat::Reader h) {
  Beat beat{.incarnation = h.getIncarnation(),
            .dropped = h.getDropped(),
            .resident_bytes = h.getResidentBytes(),
            .refused_handshakes = h.getRefusedHandshakes(),
            .work = {.batches = h.getBatches(),
                     .tokens = h.getTokens(),
                     .compute_ns = h.getComputeNs(),
                     .bytes_out = h.getBytesOut(),
                     .decode_steps = h.getDecodeSteps(),
                     .decode_ns = h.getDecodeNs(),
                     .paged_read_bytes = h.getPagedReadBytes(),
                     .paged_read_ns = h.getPagedReadNs(),
                     .paged_wait_ns = h.getPagedWaitNs(),
                     .batched_steps = h.getBatchedSteps(),
                     .batched_rows = h.getBatchedRows(),
                     .batched_ns = h.getBatchedNs(),
                     .decode_planned_ns = h.getDecodePlannedNs(),
                     .batched_planned_ns = h.getBatchedPlannedNs()}};
  const std::string node_id = node_of(identity);
  switch (registry_.heartbeat(node_id, beat)) {
    case DeviceRegistry::BeatResult::kUnknown: ask_to_register(node_id); break;
    case DeviceRegistry::BeatResult::kBack:
      spdlog::info("head: device {} is back", registry_.at(node_id).profile.name);
      retry_recovery("device " + registry_.at(node_id).profile.name + " is back");
      break;
    case DeviceRegistry::BeatResult::kAlive: break;
  }
  learn_storage(node_id, beat.work);
}

// A paging stage's reads measure its device's storage under the load that matters; the next plan
// uses that rate instead of the start-up probe's (cluster/storage_rate.h).
void Head::learn_storage(const std::string& node_id, const StageCounters& work) {
  const auto change = registry_.observe_paging(node_id, work);
  if (!change) return;
  const auto [before, after] = *change;
  // Said when it moved a quarter from what was last said (the figure moves a little every window).
  double& said = storage_said_[node_id];
  if (said == 0) said = before;
  if (std::abs(after - said) <= 0.25 * said) return;
  spdlog::info("head: {}'s storage read {:.2f} GB/s while paging (the figure was {:.2f} GB/s); the next plan uses it",
               registry_.at(node_id).profile.name, after / 1e9, said / 1e9);
  said = after;
}

// Unknown, or a restarted process whose Hello has not arrived yet (its endpoints are new): a
// device that registered with an earlier run of this head (same keys, same port) is asked to
// register again, at most once a second.
void Head::ask_to_register(const std::string& node_id) {
  if (hello_requested_.size() > 1024) hello_requested_.clear();  // bounded, whoever sends
  auto& last = hello_requested_[node_id];
  const auto now = ports_.clock.now();
  if (now - last <= std::chrono::seconds(1)) return;
  last = now;
  capnp::MallocMessageBuilder b;
  b.initRoot<wire::Envelope>().initHelloRequest();
  if (ports_.outbox.send(node_id, b)) spdlog::info("head: asked {} to register again", transport::printable(node_id));
}

void Head::device_lost(const std::string& node_id, const std::string& what) {
  const Device& d = registry_.at(node_id);
  spdlog::warn("head: device {} {}", d.profile.name, what);
  if (next_)
    for (const auto& st : next_->stages)
      if (st.node_id == node_id) {
        abandon_next("device " + d.profile.name + " " + what + " while receiving its weights", ErrorCategory::LOST_DEVICE);
        break;
      }
  if (!plan_ || (plan_->state() != LaunchState::kLoading && plan_->state() != LaunchState::kReady)) return;
  for (const auto& st : plan_->stages) {
    if (st.node_id != node_id) continue;
    const std::string reason = "device " + d.profile.name + " (layers " + std::to_string(st.spec.first_layer) + "-" +
                               std::to_string(st.spec.last_layer - 1) + ") " + what;
    // A launch a client waits for fails (its client can launch again); a ready pipeline, or one
    // being rebuilt, is rebuilt on the devices left.
    if (plan_->launching()) fail_plan(reason, ErrorCategory::LOST_DEVICE);
    else recover(node_id, reason);
    return;
  }
}

void Head::on_error(const std::string& identity, wire::Error::Reader e) {
  const Device* d = registry_.by_identity(identity);
  const std::string who = d ? d->profile.name : transport::printable(identity);
  spdlog::warn("head: error from {}: {}", who, transport::printable(e.getMessage().cStr(), 1000));
  if (!scheduler_ || !plan_ || e.getPlanId() != plan_->id) return;
  std::vector<uint64_t> seqs;
  for (uint64_t s : e.getSeqs()) seqs.push_back(s);
  if (!seqs.empty()) scheduler_->fail(who + ": " + e.getMessage().cStr(), e.getCategory(), seqs);
}

void Head::reply_error(const std::string& client, uint64_t request_id, const Failure& failure) {
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<wire::Envelope>();
  env.setRequestId(request_id);
  auto err = env.initError();
  err.setMessage(failure.what());
  err.setCategory(failure.category());
  ports_.outbox.send(client, b);
}

}  // namespace hearth::cluster
