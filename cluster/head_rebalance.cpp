// A plan that follows the devices: when a stage keeps computing at another speed than its plan
// expects, or the links take another time (cluster/drift.h), the head plans again with the
// measured speeds, or with the links measured again, and, when that pays,
// stages the new plan beside the serving one (the moved layers stream while tokens keep coming)
// and switches between two tokens, the open conversations replayed on the new stages.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "cluster/head.h"
#include "partitioner/evaluate.h"

namespace hearth::cluster {

namespace {

// A window closes after this long, once every stage decoded kDriftSteps steps in it.
constexpr auto kDriftWindow = std::chrono::seconds(1);
constexpr uint64_t kDriftSteps = 8;
// Hysteresis: a re-balance must be predicted to save this much of a token's time, and this many
// ms (a small model's stages jitter by more than they weigh), and one follows another only after
// kRebalanceRest: replaying the conversations costs a prefill each.
constexpr double kMinGain = 0.2;
constexpr double kMinGainMs = 1.0;
constexpr auto kRebalanceRest = std::chrono::seconds(30);
// Decode passes the drafts watch measures before it judges: drafting rests up to 64 steps after
// drafts that fail, so a few hundred passes show a source's real share of plain ones.
constexpr uint64_t kDraftWindow = 256;
// How long the head waits for the links measured again after the links drifted: at least this,
// and 2 s per link measured (the devices measure one at a time, cluster/probe_queue.h; a link of
// a home takes 0.2-1.5 s). A report lost still ends the wait at the deadline, with the figures
// that came.
constexpr auto kReprobeWait = std::chrono::seconds(15);
constexpr auto kReprobeLink = std::chrono::seconds(2);
// And measures them again only this long after the last time.
constexpr auto kReprobeRest = std::chrono::seconds(60);
// How long a speed measured on a device that no longer runs a stage still counts.
constexpr auto kSpeedMemory = std::chrono::minutes(10);

// "head 0-1, a 2-6, b 7": the plan's layer ranges by device.
std::string ranges_text(const partitioner::PartitionPlan& plan, const std::vector<const Device*>& devices) {
  std::string s;
  for (const auto& a : plan.stages) {
    if (a.last_layer <= a.first_layer) continue;
    s += fmt::format("{}{} {}", s.empty() ? "" : ", ", devices[static_cast<size_t>(a.device)]->profile.name, a.first_layer);
    if (a.last_layer - 1 > a.first_layer) s += fmt::format("-{}", a.last_layer - 1);
  }
  return s;
}

bool same_stages(const LaunchedPlan& serving, const partitioner::PartitionPlan& plan, const std::vector<const Device*>& devices) {
  if (serving.stages.size() != plan.stages.size()) return false;
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    const auto& a = plan.stages[i];
    const auto& s = serving.stages[i];
    if (devices[static_cast<size_t>(a.device)]->node_id != s.node_id || a.first_layer != s.spec.first_layer ||
        a.last_layer != s.spec.last_layer)
      return false;
  }
  return true;
}

}  // namespace

void Head::forget_stale_speeds() {
  std::vector<std::string> measuring;
  if (plan_)
    for (const auto& s : plan_->stages) measuring.push_back(s.node_id);
  registry_.forget_speeds(kSpeedMemory, measuring);
}

// Called every tick: closes a window of decode steps when it is long enough, and hands it to the
// plan's drift watch.
void Head::watch_drift() {
  if (!plan_ || !plan_->ready() || plan_->split_by_user || next_ || !scheduler_) return;
  const auto now = ports_.clock.now();
  if (plan_->reprobe) {
    if (now >= plan_->reprobe->deadline) replan_after_reprobe();
    return;
  }
  auto& mark = plan_->drift_mark;
  if (mark.size() == plan_->stages.size() && now - plan_->drift_mark_at < kDriftWindow) return;  // the loop ticks often
  std::vector<StepCount> counts;
  for (const auto& s : plan_->stages) counts.push_back(steps_of(s));
  const SchedulerTotals& t = scheduler_->totals();
  const StepCount passes =
      StepCount{t.lone_passes, t.lone_passes, t.lone_pass_ns} +
      (plan_->expected_links.batched() ? StepCount{t.lone_draft_passes, t.lone_draft_rows, t.lone_draft_ns} : StepCount{});
  const auto restart = [&] {
    mark = counts;
    plan_->drift_pass_mark = passes;
    plan_->drift_mark_at = now;
  };
  if (mark.size() != counts.size()) return restart();
  std::vector<StageWindow> window;
  std::vector<double> vs_plan;  // each stage's time over the plan's for the same steps
  for (size_t i = 0; i < counts.size(); ++i) {
    const std::optional<StepCount> steps = counts[i].since(mark[i]);
    if (!steps) return restart();            // a daemon restarted
    if (steps->steps < kDriftSteps) return;  // idle, or a heartbeat late: the window stays open
    const PlannedStage& s = plan_->stages[i];
    const double rows = steps->mean_rows();
    vs_plan.push_back(steps->vs_plan(s.planned));
    window.push_back({.device = registry_.at(s.node_id).profile.name,
                      .expected_ms = s.expected_ms,
                      .measured_ms = s.planned.one_ms() * vs_plan.back(),
                      .speed = s.speed,
                      .rows = rows});
  }
  // The links: a lone pass's cycle less its stages' compute (the plan's for its rows, at each
  // stage's measured pace), when enough passes were lone ones.
  LinksWindow links{.expected_ms = plan_->expected_links.one_ms()};
  const std::optional<StepCount> lone = passes.since(plan_->drift_pass_mark);
  if (!lone) return restart();  // another scheduler's counts
  if (lone->steps >= kDriftSteps && plan_->stages.size() > 1) {
    links.rows = lone->mean_rows();
    double stages_ms = 0;
    for (size_t i = 0; i < counts.size(); ++i) stages_ms += plan_->stages[i].planned.at(links.rows) * vs_plan[i];
    links.measured_ms = plan_->expected_links.links_as_one(std::max(0.0, lone->mean_ms() - stages_ms), links.rows);
  }
  restart();
  if (auto drift = plan_->drift.observe(window, links)) on_drift(*drift);
}

// A stage off its plan: its measured speed is the device's figure from now on, and the plan is
// re-balanced when the planner, given it, predicts enough of a gain. The links off with every
// stage on plan: which link changed is not known yet, so every device measures its links again
// first (a probe costs the pipeline a second or so of its bandwidth: at most once a minute).
void Head::on_drift(const Drift& drift) {
  LaunchedPlan& serving = *plan_;
  for (size_t i = 0; i < serving.stages.size(); ++i) registry_.set_speed(serving.stages[i].node_id, drift.speeds[i]);
  const auto now = ports_.clock.now();
  // Measured again lately: what drifts now is the time around the figures (a busy device's
  // messages waiting for its CPU, a step's overheads), not a link the probes would find changed.
  if (drift.stages_off || !drift.links_off || (last_reprobe_ && now - *last_reprobe_ < kReprobeRest)) return replan(drift);
  last_reprobe_ = now;
  // Every device measures its links to every other, not only the pipeline's hops: a device whose
  // Wi-Fi got slow is slow to reach from anywhere, and the plan that avoids it needs that too.
  LaunchedPlan::Reprobe reprobe{.drift = drift, .deadline = now + kReprobeWait};
  const std::vector<const Device*> devices = registry_.candidates(serving.wanted);
  for (const Device* d : devices) {
    if (d->is_self) continue;  // the head measures nothing itself: its links are its workers' figures
    std::vector<const Device*> targets;
    for (const Device* o : devices)
      if (o != d) targets.push_back(o);
    request_probe(d->node_id, targets);
    reprobe.waiting.insert(d->node_id);
  }
  if (reprobe.waiting.empty()) return replan(drift);  // the head alone: no link to measure
  const auto links = static_cast<int>(reprobe.waiting.size() * (devices.size() - 1));
  reprobe.deadline = now + std::max<std::chrono::seconds>(kReprobeWait, kReprobeLink * links);
  const std::string why = fmt::format("{}; measuring the links again", drift.figures);
  spdlog::info("head: {}", why);
  serving.events.add(why);
  serving.reprobe = std::move(reprobe);
}

// A device of a re-probe reported its links (head.cpp took the figures): plan again once all did.
void Head::reprobe_reported(const std::string& node_id, const std::string& figures) {
  if (!plan_ || !plan_->reprobe || plan_->reprobe->waiting.erase(node_id) == 0) return;
  auto& said = plan_->reprobe->figures;
  if (!figures.empty()) said += (said.empty() ? "" : ", ") + figures;
  // A launch staging meanwhile is the client's: the deadline's re-plan waits for it to end.
  if (plan_->reprobe->waiting.empty() && !next_) replan_after_reprobe();
}

void Head::replan_after_reprobe() {
  Drift drift = std::move(plan_->reprobe->drift);
  if (!plan_->reprobe->figures.empty()) drift.figures += " (measured again: " + plan_->reprobe->figures + ")";
  plan_->reprobe.reset();
  plan_->drift_mark.clear();  // the next window opens now, without the probes' traffic
  replan(drift);
}

void Head::replan(const Drift& drift) {
  LaunchedPlan& serving = *plan_;
  // A token's time as measured: its stages, and its links where they drifted (else as expected:
  // a measured trip also holds the loop's and the messages' overheads, which no plan predicts,
  // and would make every plan for a stage's drift look like a gain).
  double measured_ms = drift.links_off ? drift.links_ms : serving.expected_links.one_ms();
  for (const double ms : drift.measured_ms) measured_ms += ms;
  forget_stale_speeds();
  const Verdict v = follow(drift.figures, measured_ms, [](const partitioner::Prediction& p) { return p.ms_per_token; });
  if (v != Verdict::kStays) return;
  // What was measured is what to expect from now on, so that only a further change counts as drift.
  // The links' share only when it drifted: beside a busy stage alone it also holds that device's
  // messages waiting for its CPU, and the next links drift would be judged against that. (When
  // both drifted, the measured share, that wait included, is the best figure there is.)
  for (size_t i = 0; i < serving.stages.size(); ++i) {
    serving.stages[i].expected_ms = drift.measured_ms[i];
    serving.stages[i].speed = drift.speeds[i];
  }
  if (drift.links_off) serving.expected_links.shift_to(drift.links_ms);
}

Head::Verdict Head::follow(const std::string& figures, double serving_ms,
                           const std::function<double(const partitioner::Prediction&)>& cost, const char* unit) {
  if (next_) return Verdict::kWaits;  // a launch stages: it is the client's, not to be replaced
  LaunchedPlan& serving = *plan_;
  const std::vector<const Device*> devices = registry_.candidates(serving.wanted);
  std::optional<partitioner::PartitionPlan> candidate;
  std::string verdict;
  try {
    Device head_copy;
    candidate = plan_by_planner(serving.spec, planning_devices(serving, devices, head_copy), registry_.link_table(devices),
                                serving.partition);
  } catch (const Failure& f) {
    verdict = std::string("no plan fits the measured figures (") + f.what() + ")";
  }
  const double candidate_ms = candidate ? cost(candidate->predicted) : 0;
  const double gain = serving_ms - candidate_ms;
  if (candidate && same_stages(serving, *candidate, devices)) verdict = "the planner keeps the same layers";
  else if (candidate && gain < std::max(kMinGainMs, kMinGain * serving_ms))
    verdict = fmt::format("re-planning would save {:.2f} ms of {:.2f}", std::max(0.0, gain), serving_ms);
  const auto now = ports_.clock.now();
  if (verdict.empty() && last_rebalance_ && now - *last_rebalance_ < kRebalanceRest) {
    spdlog::info("head: {}; a re-balance waits: the last was less than {} s ago", figures, kRebalanceRest.count());
    return Verdict::kWaits;  // the watch measures again, and a later drift may re-balance
  }
  if (!verdict.empty()) {
    const std::string stays = fmt::format("{}; {}: the plan stays", figures, verdict);
    serving.events.add(stays);
    spdlog::info("head: {}", stays);
    return Verdict::kStays;
  }
  last_rebalance_ = now;
  const std::string why =
      fmt::format("re-balancing: {}; decoding at about {:.2f} {}; the plan for the measured figures ({}) predicts {:.2f}",
                  figures, serving_ms, unit, ranges_text(*candidate, devices), candidate_ms);
  spdlog::warn("head: {}", why);
  serving.events.add(why);
  stage_rebalance(std::move(*candidate), devices);
  return Verdict::kMoves;
}

// A drafting launch was planned for passes of draft_tokens + 1 rows: the draft a conversation
// starts with (head_launch.cpp). Once the drafts measure two tokens or more away from that, the
// measured figures replace it: a source that rarely agrees rests, and its passes are mostly
// plain ones, which a plan for one row serves better; one that keeps agreeing drafts the most it
// may. Every later plan (a drift's, a recovery's) uses them; this one moves when that pays.
void Head::watch_drafts() {
  if (!plan_ || !plan_->ready() || plan_->draft.empty() || plan_->split_by_user || next_ || !scheduler_ || plan_->reprobe) return;
  const SchedulerTotals& t = scheduler_->totals();
  const LaunchedPlan::DraftMark now{t.decode_passes, t.tokens_drafted, t.tokens_accepted};
  auto& mark = plan_->draft_mark;
  if (!mark || now.passes < mark->passes) {  // a new scheduler counts from 0
    mark = now;
    return;
  }
  const uint64_t passes = now.passes - mark->passes;
  if (passes < kDraftWindow) return;
  const double drafted = static_cast<double>(now.drafted - mark->drafted) / static_cast<double>(passes);
  const double tokens = 1 + static_cast<double>(now.accepted - mark->accepted) / static_cast<double>(passes);
  mark = now;
  const int k = static_cast<int>(std::lround(drafted));
  LaunchedPlan& serving = *plan_;
  if (std::abs(k - serving.partition.draft_tokens) < 2) return;
  const std::string figures = fmt::format("passes carry drafts of {:.1f} tokens and give {:.2f} (planned for drafts of {})",
                                          drafted, tokens, serving.partition.draft_tokens);
  forget_stale_speeds();
  const partitioner::PartitionOptions planned = serving.partition;
  serving.partition.draft_tokens = k;
  // A pass gives at most its draft and one token (the planner refuses more): a fractional
  // draft length rounded down can be outgiven by its acceptance.
  serving.partition.tokens_per_pass = k > 0 ? std::min(tokens, k + 1.0) : 0;
  // The serving plan's pass under the measured figures, as the planner predicts it: the same
  // prediction a candidate gets, so that the two compare.
  const auto cost = [k](const partitioner::Prediction& p) { return k > 0 ? p.draft_pass_ms : p.ms_per_token; };
  const std::vector<const Device*> devices = registry_.candidates(serving.wanted);
  Device head_copy;
  const std::vector<const Device*> planning = planning_devices(serving, devices, head_copy);
  partitioner::PartitionPlan current = serving.plan;
  for (size_t i = 0; i < serving.stages.size(); ++i) {
    const auto at =
        std::find_if(planning.begin(), planning.end(), [&](const Device* d) { return d->node_id == serving.stages[i].node_id; });
    if (at == planning.end()) return;  // a device of the plan is gone: recovery's to re-plan
    current.stages[i].device = static_cast<int>(at - planning.begin());
  }
  const partitioner::Prediction predicted =
      partitioner::evaluate_plan(serving.spec, profiles_of(planning), registry_.link_table(devices), serving.partition, current);
  // A re-balance that must wait (the last was less than kRebalanceRest ago) is tried again when
  // the next window closes: the figures it would move for stay unapplied until then.
  if (follow(figures, cost(predicted), cost, k > 0 ? "ms a pass" : "ms/token") == Verdict::kWaits) serving.partition = planned;
}

// The new plan stages beside the serving one like a launch with no client; try_commit switches
// to it as soon as every device has its weights.
void Head::stage_rebalance(partitioner::PartitionPlan plan, const std::vector<const Device*>& devices) {
  const LaunchedPlan& serving = *plan_;
  try {
    auto p = open_model(serving.model_path);
    carry_choices(serving, *p);
    p->rebalance = true;
    p->plan = std::move(plan);
    for (const auto& line : partitioner::describe_plan(p->plan)) spdlog::info("re-balance: {}", line);
    next_ = std::move(p);
    assign_stages(*next_, devices, /*staged=*/true);
    next_->stages[0].state = StageState::kStaged;
    try_commit();
  } catch (const std::exception& e) {
    if (next_) abandon_next(std::string("the re-balance failed: ") + e.what(), category_of(e));
    else plan_->events.add(std::string("the re-balance failed: ") + e.what());
  }
}

}  // namespace hearth::cluster
