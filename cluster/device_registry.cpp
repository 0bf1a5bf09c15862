#include "cluster/device_registry.h"

#include "transport/printable.h"

#include <algorithm>
#include <cmath>

namespace hearth::cluster {

std::string node_of(const std::string& identity) { return identity.substr(0, identity.find('/')); }

DeviceRegistry::DeviceRegistry(const Clock& clock, Device self) : clock_(clock), self_id_(self.node_id) {
  self.is_self = true;
  self.alive = true;
  self.last_seen = clock_.now();
  devices_[self_id_] = std::move(self);
}

std::optional<Failure> DeviceRegistry::add(Device d) {
  if (!transport::valid_node_id(d.node_id))
    return Failure(ErrorCategory::BAD_REQUEST,
                   "node id '" + transport::printable(d.node_id, 64) + "' is not 1-64 of [A-Za-z0-9._-]");
  if (!transport::valid_device_name(d.profile.name))
    return Failure(ErrorCategory::BAD_REQUEST, "device name '" + transport::printable(d.profile.name, 64) +
                                                   "' is not 1-64 bytes of printable UTF-8: start it with another --name");
  // The key the connection was authenticated with is the device's identity: another paired
  // device cannot take over a node id that registered with a different key (nor can two daemons
  // that share a data directory, and so a node id, both be members).
  if (auto known = devices_.find(d.node_id); known != devices_.end()) {
    if (known->second.is_self) return Failure(ErrorCategory::CONFLICT, "node id " + d.node_id + " is the head's own");
    if (!known->second.public_key.empty() && known->second.public_key != d.public_key)
      return Failure(ErrorCategory::UNAUTHORIZED, "node id " + d.node_id + " belongs to another key");
  }
  for (const auto& [id, other] : devices_)
    if (id != d.node_id && other.profile.name == d.profile.name && other.alive)
      return Failure(ErrorCategory::CONFLICT,
                     "the name '" + d.profile.name + "' is taken by another device: start it with another --name");
  d.is_self = false;
  d.alive = true;
  d.last_seen = clock_.now();
  devices_[d.node_id] = std::move(d);
  return std::nullopt;
}

DeviceRegistry::BeatResult DeviceRegistry::heartbeat(const std::string& node_id, const Beat& beat) {
  auto it = devices_.find(node_id);
  if (it == devices_.end()) return BeatResult::kUnknown;
  Device& d = it->second;
  if (!d.is_self && d.incarnation != beat.incarnation) return BeatResult::kUnknown;
  d.last_seen = clock_.now();
  d.dropped = beat.dropped;
  d.resident_bytes = beat.resident_bytes;
  d.refused_handshakes = beat.refused_handshakes;
  d.work = beat.work;
  if (d.alive) return BeatResult::kAlive;
  d.alive = true;
  return BeatResult::kBack;
}

std::optional<std::pair<double, double>> DeviceRegistry::observe_paging(const std::string& node_id, const StageCounters& work) {
  auto it = devices_.find(node_id);
  if (it == devices_.end()) return std::nullopt;
  Device& d = it->second;
  const std::optional<double> rate = d.storage_meter.observe(work.paged_read_bytes, work.paged_read_ns);
  if (!rate) return std::nullopt;
  const double before = d.profile.storage_read_bytes_per_s;
  d.profile.storage_read_bytes_per_s = *rate;
  d.storage_from_paging = true;
  return std::make_pair(before, *rate);
}

std::vector<std::string> DeviceRegistry::expire() {
  std::vector<std::string> lost;
  const auto now = clock_.now();
  for (auto& [id, d] : devices_) {
    if (d.is_self || !d.alive || now - d.last_seen <= kTimeout) continue;
    d.alive = false;
    lost.push_back(id);
  }
  return lost;
}

const Device* DeviceRegistry::find(const std::string& node_id) const {
  auto it = devices_.find(node_id);
  return it == devices_.end() ? nullptr : &it->second;
}

const Device* DeviceRegistry::by_identity(const std::string& identity) const { return find(node_of(identity)); }

std::vector<const Device*> DeviceRegistry::candidates(const std::vector<std::string>& wanted) const {
  std::vector<const Device*> out{&self()};
  for (const auto& [id, d] : devices_) {
    if (d.is_self || !d.alive) continue;
    if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), d.profile.name) == wanted.end()) continue;
    out.push_back(&d);
  }
  return out;
}

void DeviceRegistry::set_speed(const std::string& node_id, double speed) {
  auto it = devices_.find(node_id);
  // A thousandth or a thousand times its start-up figures is a measurement gone wrong.
  if (it == devices_.end() || !(speed >= 1e-3 && speed <= 1e3)) return;
  Device& d = it->second;
  d.profile = partitioner::at_speed(d.profile, speed / d.speed);
  d.speed = speed;
  d.speed_at = clock_.now();
}

void DeviceRegistry::forget_speeds(std::chrono::steady_clock::duration age, const std::vector<std::string>& measuring) {
  const auto now = clock_.now();
  for (auto& [id, d] : devices_)
    if (d.speed != 1 && now - d.speed_at > age && std::find(measuring.begin(), measuring.end(), id) == measuring.end()) {
      d.profile = partitioner::at_speed(d.profile, 1 / d.speed);
      d.speed = 1;
    }
}

std::vector<const Device*> DeviceRegistry::alive_except(const std::string& node_id) const {
  std::vector<const Device*> out;
  for (const auto& [id, d] : devices_)
    if (id != node_id && d.alive) out.push_back(&d);
  return out;
}

std::vector<std::string> DeviceRegistry::member_keys() const {
  std::vector<std::string> keys;
  for (const auto& [id, d] : devices_)
    if (!d.public_key.empty()) keys.push_back(d.public_key);
  return keys;
}

bool DeviceRegistry::set_link(const std::string& from, const std::string& to, partitioner::Link link) {
  const double bw = link.bandwidth_bytes_per_s, lat = link.latency_s;
  if (!devices_.count(from) || !devices_.count(to) || !std::isfinite(bw) || !std::isfinite(lat) || bw <= 0 || lat < 0 || lat > 10)
    return false;
  links_[{from, to}] = link;
  if (devices_.at(to).is_self) links_[{to, from}] = link;
  return true;
}

partitioner::LinkTable DeviceRegistry::link_table(const std::vector<const Device*>& devices) const {
  std::vector<partitioner::DeviceProfile> profiles;
  for (const Device* d : devices) profiles.push_back(d->profile);
  partitioner::LinkTable table = partitioner::link_table_from_access_links(profiles);
  for (size_t i = 0; i < devices.size(); ++i)
    for (size_t j = 0; j < devices.size(); ++j)
      if (auto it = links_.find({devices[i]->node_id, devices[j]->node_id}); it != links_.end())
        table.set(static_cast<int>(i), static_cast<int>(j), it->second);
  return table;
}

}  // namespace hearth::cluster
