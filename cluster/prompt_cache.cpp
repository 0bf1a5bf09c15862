#include "cluster/prompt_cache.h"

#include <algorithm>

namespace hearth::cluster {

namespace {

size_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b) {
  const size_t n = std::min(a.size(), b.size());
  return static_cast<size_t>(std::mismatch(a.begin(), a.begin() + static_cast<long>(n), b.begin()).first - a.begin());
}

}  // namespace

void PromptCache::keep(uint64_t seq, std::vector<int32_t> tokens, size_t reach) {
  std::erase_if(entries_, [&](const Entry& e) { return e.seq == seq; });
  reach = std::max(reach, tokens.size());
  entries_.push_back({seq, std::move(tokens), reach, ++clock_});
}

std::optional<PromptCache::Hit> PromptCache::take(std::span<const int32_t> prompt, size_t max_reuse) {
  std::optional<Hit> best;
  size_t best_index = 0;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    const size_t shared = common_prefix(e.tokens, prompt);
    if (shared == 0 || static_cast<double>(shared) < kMinShare * static_cast<double>(e.tokens.size())) continue;
    size_t reuse = std::min(shared, max_reuse);
    // The stages can go back only so far from the furthest they stored (not at all: the request
    // continues exactly where the caches end).
    if (e.reach - reuse > max_rewind_) continue;
    if (reuse == 0) continue;
    if (!best || reuse > best->reuse || (reuse == best->reuse && e.used > entries_[best_index].used)) {
      best = Hit{e.seq, reuse, e.reach};
      best_index = i;
    }
  }
  if (best) entries_.erase(entries_.begin() + static_cast<long>(best_index));
  return best;
}

std::optional<uint64_t> PromptCache::evict_oldest() {
  if (entries_.empty()) return std::nullopt;
  const auto oldest = std::min_element(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) { return a.used < b.used; });
  const uint64_t seq = oldest->seq;
  entries_.erase(oldest);
  return seq;
}

std::vector<uint64_t> PromptCache::clear() {
  std::vector<uint64_t> seqs;
  for (const Entry& e : entries_) seqs.push_back(e.seq);
  entries_.clear();
  return seqs;
}

}  // namespace hearth::cluster
