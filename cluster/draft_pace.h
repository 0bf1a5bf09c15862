// How many tokens to draft next for one conversation, from how its drafts fared.
//
// A draft costs a pass of k + 1 rows instead of one: on a CPU stage that is nearly the same time
// (decoding reads the weights once either way), but every hop carries k + 1 rows of activations
// and the output head computes k + 1 rows of logits. So k follows what the drafts earn: it grows
// by one after a draft accepted whole, and shrinks to one past the accepted part after a partial
// one. Drafts rejected outright in a row stop drafting for a while, doubling each time (1, 2, 4
// ... 64 steps), so a source that never agrees costs a draft now and then, not one every step.
#pragma once

namespace hearth::cluster {

struct DraftPaceOptions {
  int max_draft = 8;    // the most tokens one draft may hold (--draft-max)
  int first_draft = 4;  // what a conversation starts with
};

class DraftPace {
 public:
  explicit DraftPace(DraftPaceOptions options = {});
  // Tokens to draft this step; 0 while drafting rests.
  int next() const;
  // A draft of `drafted` tokens came back with `accepted` of them taken.
  void checked(int drafted, int accepted);
  // A step went without a draft (resting, or the source had none).
  void plain_step();

 private:
  DraftPaceOptions options_;
  int k_;
  int misses_ = 0;  // drafts in a row with nothing accepted
  int rest_ = 0;    // steps left without drafting
};

}  // namespace hearth::cluster
