#pragma once
// Links between every ordered pair of devices, by index into the device list.
// Pairs with no entry use `fallback` (kDefaultLink unless set).

#include <map>
#include <span>
#include <utility>

#include "partitioner/device_profile.h"
#include "partitioner/link.h"

namespace hearth::partitioner {

struct LinkTable {
  Link fallback = kDefaultLink;
  std::map<std::pair<int, int>, Link> links;  // (from, to) device indices -> measured link

  Link between(int from, int to) const;
  void set(int from, int to, const Link& link) { links[{from, to}] = link; }
  void set_both(int a, int b, const Link& link) {
    set(a, b, link);
    set(b, a, link);
  }
};

// Pairwise links derived from each device's access link: traffic goes device ->
// switch/AP -> device, so bandwidth is the smaller of the two and latencies add.
// Devices without a `link` use kDefaultAccessLink.
LinkTable link_table_from_access_links(std::span<const DeviceProfile> devices);

}  // namespace hearth::partitioner
