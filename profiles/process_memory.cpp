#include "profiles/process_memory.h"

#include <fstream>
#include <string>

namespace hearth::profiles {

uint64_t resident_bytes(int pid) {
  std::ifstream f(pid == 0 ? std::string("/proc/self/status") : "/proc/" + std::to_string(pid) + "/status");
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

}  // namespace hearth::profiles
