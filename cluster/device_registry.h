// The head's table of devices: who registered and with which key, who is alive, what each
// measured at start and reports in its heartbeats, and the links their probes measured. It
// decides (may this Hello register? who stopped responding?) and sends nothing: the head turns
// its answers into messages.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cluster/failure.h"
#include "cluster/host.h"
#include "cluster/storage_rate.h"
#include "partitioner/device_profile.h"
#include "partitioner/link_table.h"
#include "profiles/profiler.h"

namespace hearth::cluster {

// A device as the head knows it.
struct Device {
  std::string node_id;
  std::string control_endpoint;
  std::string data_endpoint;
  partitioner::DeviceProfile profile;  // profile.name is the device's name
  profiles::MemoryBudget memory;       // behind profile.usable_memory_bytes
  std::string cpu, arch, os;
  int cores = 0;
  Clock::time_point last_seen;
  bool alive = true;
  bool is_self = false;
  std::string public_key;       // its CURVE key (empty with --insecure)
  uint64_t incarnation = 0;     // of the process that registered (Hello)
  uint64_t dropped = 0;         // messages it refused, from its heartbeats
  uint64_t resident_bytes = 0;  // its RSS, from its heartbeats
  StageCounters work;           // its stage's counters, from its heartbeats
  uint64_t refused_handshakes = 0;
  StorageRateMeter storage_meter;  // its pager's reads: profile.storage_read_bytes_per_s once enough
  bool storage_from_paging = false;  // that figure is what paging sustained, not the start-up probe
  // Its speed as its stage measured it, relative to what it measured at start (cluster/drift.h);
  // profile's compute figures are already scaled by it, so every plan uses it.
  double speed = 1;
  Clock::time_point speed_at{};  // when it was measured
};

// What a heartbeat reports.
struct Beat {
  uint64_t incarnation = 0;
  uint64_t dropped = 0, resident_bytes = 0, refused_handshakes = 0;
  StageCounters work;
};

class DeviceRegistry {
 public:
  // How long a device may stay silent before it counts as lost.
  static constexpr auto kTimeout = std::chrono::seconds(2);

  DeviceRegistry(const Clock& clock, Device self);

  // Registers `d` (or registers it again). A node id that registered with another key, or a
  // name another live device uses, is refused: the Failure says why.
  std::optional<Failure> add(Device d);
  enum class BeatResult { kUnknown, kAlive, kBack };
  // kUnknown: not registered, or a restarted process (another incarnation) whose Hello has not
  // arrived: it must register first. kBack: it had been counted lost.
  BeatResult heartbeat(const std::string& node_id, const Beat& beat);
  // Marks the devices silent for longer than kTimeout as lost; returns their node ids.
  std::vector<std::string> expire();

  const Device* find(const std::string& node_id) const;
  // The device behind a connection identity ("NODE_ID" or "NODE_ID/purpose").
  const Device* by_identity(const std::string& identity) const;
  const Device& at(const std::string& node_id) const { return devices_.at(node_id); }
  const Device& self() const { return devices_.at(self_id_); }
  const std::map<std::string, Device>& all() const { return devices_; }
  // The head first, then the other live devices (all, or those named).
  std::vector<const Device*> candidates(const std::vector<std::string>& wanted) const;
  std::vector<const Device*> alive_except(const std::string& node_id) const;
  // CURVE keys of every device: whom a member admits.
  std::vector<std::string> member_keys() const;

  // A link measured by `from`'s probe. Links to the head count both ways (the head probes nothing).
  // False (and nothing kept) for an unknown device or figures out of range.
  bool set_link(const std::string& from, const std::string& to, partitioner::Link link);
  // The device's pager counters (from its heartbeats, or the head's own stage). When they close a
  // window of reads (storage_rate.h), its storage figure becomes the rate paging sustained, for
  // the next plan; returns {the figure before, after}.
  std::optional<std::pair<double, double>> observe_paging(const std::string& node_id, const StageCounters& work);
  // The device computes at `speed` times what it measured at start (as a stage measured it):
  // its profile's compute figures follow. Unknown devices and speeds out of range are ignored.
  void set_speed(const std::string& node_id, double speed);
  // A speed measured longer than `age` ago on a device not in `measuring` (the serving plan's,
  // whose stages measure them all along) no longer says how fast it is: the device's build may
  // have ended long since. Its profile's figures apply again.
  void forget_speeds(std::chrono::steady_clock::duration age, const std::vector<std::string>& measuring);
  const std::map<std::pair<std::string, std::string>, partitioner::Link>& links() const { return links_; }
  // The links between `devices` as measured, else the access-link defaults of their profiles.
  partitioner::LinkTable link_table(const std::vector<const Device*>& devices) const;

 private:
  const Clock& clock_;
  std::string self_id_;
  std::map<std::string, Device> devices_;                                   // by node id
  std::map<std::pair<std::string, std::string>, partitioner::Link> links_;  // (from, to) node ids
};

// The node id in a connection identity ("NODE_ID/hb" -> "NODE_ID").
std::string node_of(const std::string& identity);

}  // namespace hearth::cluster
