#include "partitioner/options.h"

namespace hearth::partitioner {

std::string_view to_string(Objective objective) {
  switch (objective) {
    case Objective::latency: return "latency";
    case Objective::throughput: return "throughput";
    case Objective::ttft: return "ttft";
  }
  return "?";
}

std::string_view to_string(Algorithm algorithm) {
  switch (algorithm) {
    case Algorithm::dp: return "dp";
    case Algorithm::exhaustive: return "exhaustive";
    case Algorithm::memory: return "memory";
    case Algorithm::equal: return "equal";
  }
  return "?";
}

std::optional<Objective> objective_from_string(std::string_view text) {
  for (Objective o : {Objective::latency, Objective::throughput, Objective::ttft})
    if (to_string(o) == text) return o;
  return std::nullopt;
}

std::optional<Algorithm> algorithm_from_string(std::string_view text) {
  for (Algorithm a : {Algorithm::dp, Algorithm::exhaustive, Algorithm::memory, Algorithm::equal})
    if (to_string(a) == text) return a;
  return std::nullopt;
}

}  // namespace hearth::partitioner
