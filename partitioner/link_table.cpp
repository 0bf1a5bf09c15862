#include "partitioner/link_table.h"

#include <algorithm>

namespace hearth::partitioner {

Link LinkTable::between(int from, int to) const {
  auto it = links.find({from, to});
  return it == links.end() ? fallback : it->second;
}

LinkTable link_table_from_access_links(std::span<const DeviceProfile> devices) {
  LinkTable table;
  const int n = static_cast<int>(devices.size());
  for (int a = 0; a < n; ++a) {
    for (int b = 0; b < n; ++b) {
      if (a == b) continue;
      Link la = devices[a].link.value_or(kDefaultAccessLink);
      Link lb = devices[b].link.value_or(kDefaultAccessLink);
      table.set(a, b, Link{std::min(la.bandwidth_bytes_per_s, lb.bandwidth_bytes_per_s), la.latency_s + lb.latency_s});
    }
  }
  return table;
}

}  // namespace hearth::partitioner
