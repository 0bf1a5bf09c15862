// How many tokens to draft next for one conversation, from how its drafts fared and what they
// cost.
//
// A draft costs its drafting (a draft model's passes on the head; n-gram lookup is free) and a
// pass of k + 1 rows instead of one: every hop carries k + 1 rows and the stages compute them.
// What that costs depends on the home: nearly nothing where the pipeline's round trip is what a
// token waits for (a small model over Wi-Fi), a good part of a step where the stages' compute is
// (a large model on CPUs). So the pace measures what drafting earns: each step's cycle (from one
// result of the conversation to the next: drafting, sending, the pass) and the tokens it gave,
// as moving averages for steps with a draft and steps without.
//
// - While steps with drafts are measured to give tokens faster than plain steps, every step
//   drafts max_draft tokens: misses and all, drafting pays, and longer drafts catch longer runs;
//   but one step in 32 goes plain, to measure plain steps again.
// - Otherwise (or before both are measured) k follows what the drafts earn: +1 after a draft
//   accepted whole, one past the accepted part after a partial one; and drafts rejected outright
//   twice in a row stop drafting for a while, doubling each time (1, 2, 4 ... 64 steps), so a
//   source that never agrees costs a draft now and then, not one every step. The rests are also
//   when plain steps are measured.
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
  // A step went without a draft (resting, or the source had none); `clean`: carrying nothing a
  // draft left either (recurrent stages' re-sent tokens), so it may measure plain steps afresh.
  void plain_step(bool clean = true);
  // One step's cycle took `seconds` and gave `tokens`, with `drafted` tokens that drafting made
  // it carry (its draft, and the accepted part of a draft cut short that recurrent stages compute
  // again; 0: a plain step).
  void timed(int drafted, int tokens, double seconds);
  // Whether steps with drafts are measured to give tokens faster than plain steps.
  bool pays() const;

 private:
  DraftPaceOptions options_;
  int k_;
  int misses_ = 0;  // drafts in a row with nothing accepted
  int rest_ = 0;    // steps left without drafting
  // Moving averages (0: not measured yet): a plain step's cycle; a drafting step's cycle and
  // the tokens it gave.
  double plain_s_ = 0, draft_s_ = 0, draft_tokens_ = 0;
  int since_plain_ = 0;  // drafting steps since the last plain one
  bool probe_ = false;   // the plain step in flight measures plain steps afresh
};

}  // namespace hearth::cluster
