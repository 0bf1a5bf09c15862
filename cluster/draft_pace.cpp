#include "cluster/draft_pace.h"

#include <algorithm>

namespace hearth::cluster {

namespace {
constexpr int kMissesBeforeRest = 2;
constexpr int kLongestRest = 64;
constexpr double kFollow = 0.1;  // weight of a new step in the moving averages (steps jitter by milliseconds)
// While drafting pays, every step drafts and nothing measures plain steps: one in this many goes
// plain, and its time replaces the old figure (a plain step that was slow once, measured before
// the drafts began, otherwise kept a draft that never agrees drafting: 2.2x slower, seen once).
constexpr int kProbeEvery = 32;

void follow(double& average, double sample) { average = average <= 0 ? sample : average + kFollow * (sample - average); }
}  // namespace

DraftPace::DraftPace(DraftPaceOptions options)
    : options_(options), k_(std::clamp(options.first_draft, 1, std::max(1, options.max_draft))) {}

int DraftPace::next() const {
  if (rest_ > 0 || options_.max_draft <= 0) return 0;
  return pays() && since_plain_ >= kProbeEvery ? 0 : k_;
}

void DraftPace::checked(int drafted, int accepted) {
  if (drafted <= 0) return;
  ++since_plain_;
  if (pays()) {
    k_ = std::max(1, options_.max_draft);
    misses_ = 0;
    return;
  }
  if (accepted >= drafted) k_ = std::min(std::max(1, options_.max_draft), k_ + 1);
  else k_ = std::max(1, accepted + 1);
  if (accepted > 0) {
    misses_ = 0;
    return;
  }
  if (++misses_ >= kMissesBeforeRest) rest_ = std::min(kLongestRest, 1 << std::min(misses_ - kMissesBeforeRest, 6));
}

void DraftPace::plain_step(bool clean) {
  if (rest_ > 0) --rest_;
  if (!clean) return;  // the probe waits for a step that is plain through and through
  probe_ = since_plain_ >= kProbeEvery;
  since_plain_ = 0;
}

void DraftPace::timed(int drafted, int tokens, double seconds) {
  if (seconds <= 0 || tokens <= 0) return;
  if (drafted <= 0 && probe_) {
    probe_ = false;
    plain_s_ = seconds;
    return;
  }
  if (drafted <= 0) return follow(plain_s_, seconds);
  follow(draft_s_, seconds);
  follow(draft_tokens_, tokens);
}

bool DraftPace::pays() const { return plain_s_ > 0 && draft_s_ > 0 && draft_s_ / draft_tokens_ < plain_s_; }

}  // namespace hearth::cluster
