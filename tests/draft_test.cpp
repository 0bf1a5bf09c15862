// Speculative decoding's parts that need no model: the n-gram drafter, the check of a draft
// against logits (and that it samples the target's distribution), and the draft pace.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "cluster/draft_pace.h"
#include "cluster/draft_source.h"
#include "runtime/model/draft_check.h"
#include "runtime/model/ngram_draft.h"
#include "tests/test_util.h"

using namespace hearth;
using runtime::SamplingParams;

namespace {

using Ids = std::vector<int32_t>;

// Row j of a (draft + 1) x V block: logits whose softmax is `probs` (the same every row).
std::vector<float> rows_of(const std::vector<double>& probs, size_t rows) {
  std::vector<float> out;
  for (size_t r = 0; r < rows; ++r)
    for (double p : probs) out.push_back(static_cast<float>(std::log(p)));
  return out;
}

SamplingParams pure(uint64_t seed) { return {.temperature = 1.0f, .top_k = 0, .top_p = 1.f, .min_p = 0.f, .seed = seed}; }

}  // namespace

TEST_SUITE("draft") {
  TEST_CASE("the n-gram drafter proposes what followed the latest earlier occurrence of the longest suffix") {
    // "1 2 3 4 5 ... 1 2 3" -> 4 5 (the 3-gram matches, at the start).
    CHECK(runtime::ngram_draft(Ids{1, 2, 3, 4, 5, 9, 9, 1, 2, 3}, 2) == Ids{4, 5});
    // The most recent occurrence wins: "2 3" was followed by 7 last time.
    CHECK(runtime::ngram_draft(Ids{2, 3, 4, 8, 2, 3, 7, 6, 2, 3}, 3) == Ids{7, 6, 2});
    // A longer match beats a more recent shorter one.
    CHECK(runtime::ngram_draft(Ids{1, 2, 3, 5, 9, 2, 3, 6, 1, 2, 3}, 1) == Ids{5});
    // The continuation may run into the suffix itself, and stops at the history's end.
    CHECK(runtime::ngram_draft(Ids{7, 7, 7, 7}, 5) == Ids{7});
    CHECK(runtime::ngram_draft(Ids{1, 2, 8, 1, 2}, 5) == Ids{8, 1, 2});
    // A single token matches too, unless the options ask for more.
    CHECK(runtime::ngram_draft(Ids{5, 1, 5}, 4) == Ids{1, 5});
    CHECK(runtime::ngram_draft(Ids{5, 1, 5}, 4, {.min_ngram = 2}).empty());
    // Nothing repeats, k = 0, no history: no draft.
    CHECK(runtime::ngram_draft(Ids{1, 2, 3, 4}, 4).empty());
    CHECK(runtime::ngram_draft(Ids{1, 2, 3, 1, 2}, 0).empty());
    CHECK(runtime::ngram_draft(Ids{}, 3).empty());
    CHECK(runtime::ngram_draft(Ids{4}, 3).empty());
  }

  TEST_CASE("a draft is checked row by row: accepted while the samples agree, then the target's own token") {
    const size_t V = 5;
    // Greedy: row 0 -> 2, row 1 -> 4, row 2 -> 1.
    std::vector<float> rows(3 * V, 0.f);
    rows[0 * V + 2] = 1.f, rows[1 * V + 4] = 1.f, rows[2 * V + 1] = 1.f;
    runtime::Sampler greedy({.temperature = 0});
    auto v = runtime::check_draft(greedy, rows, V, Ids{2, 4});
    CHECK(v.accepted == 2);
    CHECK(v.token == 1);
    runtime::Sampler again({.temperature = 0});
    v = runtime::check_draft(again, rows, V, Ids{2, 3});
    CHECK(v.accepted == 1);
    CHECK(v.token == 4);  // the correction
    runtime::Sampler none({.temperature = 0});
    v = runtime::check_draft(none, std::span<const float>(rows).first(V), V, Ids{});
    CHECK(v.accepted == 0);
    CHECK(v.token == 2);
    runtime::Sampler bad({.temperature = 0});
    CHECK_THROWS_AS(runtime::check_draft(bad, rows, V, Ids{2}), std::invalid_argument);
  }

  TEST_CASE("checking a draft samples the target's distribution, and draws as plain sampling does") {
    // Speculative sampling must not bend the distribution: whatever the draft, the first token
    // out is distributed as the target's softmax. 20000 seeds, a chi-square test with 4 degrees
    // of freedom (critical value 18.47 at p = 0.001), for a likely and an unlikely draft token.
    const std::vector<double> probs{0.4, 0.3, 0.15, 0.1, 0.05};
    const auto rows = rows_of(probs, 3);
    for (int32_t drafted : {0, 4}) {
      CAPTURE(drafted);
      std::vector<double> counts(probs.size(), 0);
      const int n = 20000;
      int accepted = 0;
      for (int seed = 0; seed < n; ++seed) {
        runtime::Sampler s(pure(static_cast<uint64_t>(seed)));
        const auto v = runtime::check_draft(s, rows, probs.size(), Ids{drafted, drafted});
        const int32_t first = v.accepted > 0 ? drafted : v.token;
        counts[static_cast<size_t>(first)] += 1;
        accepted += v.accepted > 0 ? 1 : 0;
        // The same seed without a draft draws the same first token: one draw per token.
        runtime::Sampler plain(pure(static_cast<uint64_t>(seed)));
        REQUIRE(plain.sample(std::span<const float>(rows).first(probs.size())) == first);
      }
      double chi2 = 0;
      for (size_t i = 0; i < probs.size(); ++i) chi2 += std::pow(counts[i] - n * probs[i], 2) / (n * probs[i]);
      CHECK(chi2 < 18.47);
      // Acceptance at the draft token's probability (within 4 standard deviations).
      const double p = probs[static_cast<size_t>(drafted)];
      CHECK(std::abs(accepted - n * p) < 4 * std::sqrt(n * p * (1 - p)));
    }
  }

  TEST_CASE("the draft pace grows on full acceptance, shrinks on a partial one, and rests after misses") {
    cluster::DraftPace pace({.max_draft = 6, .first_draft = 4});
    CHECK(pace.next() == 4);
    pace.checked(4, 4);
    CHECK(pace.next() == 5);
    pace.checked(5, 5);
    pace.checked(6, 6);
    CHECK(pace.next() == 6);  // at most max_draft
    pace.checked(6, 2);
    CHECK(pace.next() == 3);  // one past what was accepted
    pace.checked(3, 0);
    CHECK(pace.next() == 1);
    pace.checked(1, 0);  // two misses in a row: rest one step
    CHECK(pace.next() == 0);
    pace.plain_step();
    CHECK(pace.next() == 1);
    pace.checked(1, 0);  // the third: rest two steps
    pace.plain_step();
    CHECK(pace.next() == 0);
    pace.plain_step();
    CHECK(pace.next() == 1);
    // A source that never agrees ends up drafting once in 65 steps.
    for (int i = 0; i < 20; ++i) {
      pace.checked(1, 0);
      int rested = 0;
      while (pace.next() == 0) pace.plain_step(), ++rested;
      if (i == 19) CHECK(rested == 64);
    }
    pace.checked(1, 1);  // an acceptance ends the misses
    CHECK(pace.next() == 2);
    cluster::DraftPace off({.max_draft = 0});
    CHECK(off.next() == 0);
  }

  TEST_CASE("the draft pace drafts fully, misses and all, while drafting steps are measured to give tokens faster") {
    // A small model over Wi-Fi: 30 ms a step whatever it carries.
    cluster::DraftPace pace({.max_draft = 8, .first_draft = 4});
    pace.checked(4, 0);
    pace.checked(1, 0);
    CHECK(pace.next() == 0);  // resting: not measured yet
    CHECK_FALSE(pace.pays());
    pace.timed(0, 1, 0.030);
    pace.plain_step();
    pace.timed(1, 2, 0.031);  // 2 tokens in 31 ms
    CHECK(pace.pays());
    pace.checked(1, 0);
    CHECK(pace.next() == 8);  // no rest, the whole draft
    pace.checked(8, 2);
    CHECK(pace.next() == 8);
    // Drafting steps that give one token in 45 ms (a large model on CPUs, a draft that misses):
    // the averages turn, and misses rest again.
    for (int i = 0; i < 30; ++i) pace.timed(8, 1, 0.045);
    CHECK_FALSE(pace.pays());
    pace.checked(8, 0);
    CHECK(pace.next() == 1);
    pace.checked(1, 0);
    CHECK(pace.next() == 0);
  }

  TEST_CASE("while drafting pays, a plain step now and then measures plain steps again") {
    cluster::DraftPace pace({.max_draft = 4, .first_draft = 4});
    pace.timed(0, 1, 0.400);  // a plain step slow once (the machine busy)
    pace.timed(4, 1, 0.180);  // drafts that never agree, each step one token
    REQUIRE(pace.pays());
    int drafting = 0;
    while (pace.next() > 0 && drafting < 100) {
      pace.checked(4, 0);
      pace.timed(4, 1, 0.180);
      ++drafting;
    }
    CHECK(drafting == 32);
    pace.plain_step();
    pace.timed(0, 1, 0.085);  // what a plain step takes now
    CHECK_FALSE(pace.pays());
    pace.checked(4, 0);
    pace.checked(4, 0);
    CHECK(pace.next() == 0);  // resting
  }

  TEST_CASE("draft sources: none, ngram and an oracle from a file; anything else is refused with the choices") {
    const runtime::Vocab vocab;
    const auto make = [&](const std::string& choice) { return cluster::make_draft_source(choice, {.vocab = vocab}); };
    CHECK(make("") == nullptr);
    CHECK(make("none") == nullptr);
    CHECK(make("ngram")->name() == "ngram");
    CHECK_THROWS_WITH_AS(make("medusa"), doctest::Contains("none, ngram, a draft model FILE.gguf, or oracle:FILE"),
                         std::invalid_argument);
    CHECK_THROWS_AS(make("oracle:/nonexistent/ids.txt"), std::invalid_argument);
    test::TempDir dir;
    const std::string ids = dir.file("ids.txt");
    const auto write = [&](const std::string& text) { test::write_bytes(ids, std::vector<uint8_t>(text.begin(), text.end())); };
    write("5 6 7\n8 9\n");
    auto oracle = make("oracle:" + ids);
    // The history ends with the recording's first tokens (after a prompt it does not know).
    CHECK(oracle->propose(1, Ids{1, 2, 5, 6}, 2) == Ids{7, 8});
    CHECK(oracle->propose(1, Ids{3, 5}, 9) == Ids{6, 7, 8, 9});
    CHECK(oracle->propose(1, Ids{3, 5, 6, 7, 8}, 4) == Ids{9});
    CHECK(oracle->propose(1, Ids{5, 6, 7, 8, 9}, 4).empty());  // the recording is over
    CHECK(oracle->propose(1, Ids{5, 7}, 2).empty());           // left the recording
    write("5 six 7\n");
    CHECK_THROWS_WITH_AS(make("oracle:" + ids), doctest::Contains("other than token ids"), std::invalid_argument);
  }
}
