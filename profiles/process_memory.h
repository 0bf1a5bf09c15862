// The memory a process holds, as the kernel counts it.
#pragma once

#include <cstdint>

namespace hearth::profiles {

// Resident set size (VmRSS) of process `pid`, or of this process when pid is 0; 0 if unknown.
uint64_t resident_bytes(int pid = 0);

}  // namespace hearth::profiles
