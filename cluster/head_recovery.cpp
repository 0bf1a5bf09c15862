// A device of the ready pipeline was lost: the head plans again on the devices left, sends the
// weights that moved, and replays every open conversation there; when the devices left cannot
// hold the model, the conversations wait (--recovery-wait) for a device to join or come back.
#include <spdlog/spdlog.h>

#include "cluster/head.h"

namespace hearth::cluster {

namespace {

// A new plan for the same model: its facts and history carried over, its stages to be planned.
std::unique_ptr<LaunchedPlan> successor(LaunchedPlan& old, uint64_t id, const std::string& reason) {
  auto p = std::make_unique<LaunchedPlan>();
  p->id = id;
  p->model_path = old.model_path;
  p->model_hash = old.model_hash;
  p->file = std::move(old.file);
  p->config = old.config;
  p->tokenizer = std::move(old.tokenizer);
  p->spec = old.spec;
  carry_choices(old, *p);
  p->events.add(reason);
  p->started = std::chrono::steady_clock::now();
  return p;
}

}  // namespace

void Head::recover(const std::string& lost_node_id, const std::string& reason) {
  spdlog::warn("head: {}: planning again on the devices left", reason);
  if (next_ && next_->rebalance) abandon_next("a device was lost while it staged", ErrorCategory::LOST_DEVICE);
  std::vector<CarriedSession> carried = scheduler_ ? scheduler_->suspend() : std::vector<CarriedSession>{};
  carried.insert(carried.end(), std::make_move_iterator(carried_.begin()), std::make_move_iterator(carried_.end()));
  carried_.clear();
  scheduler_.reset();
  std::unique_ptr<LaunchedPlan> old = std::move(plan_);
  ports_.stage.unload();
  plan_ = successor(*old, next_plan_id_++, reason);
  try {
    forget_stale_speeds();
    Device head_with_draft;
    const std::vector<const Device*> devices = planning_devices(*plan_, registry_.candidates(plan_->wanted), head_with_draft);
    plan_->plan = plan_by_planner(plan_->spec, devices, registry_.link_table(devices), plan_->partition);
    for (const auto& line : partitioner::describe_plan(plan_->plan)) spdlog::info("re-plan: {}", line);
    // Stages of the old plan on devices still up get their new assignment (which replaces the
    // old stage); those no longer used are told to unload.
    for (const auto& s : old->stages) {
      bool used = false;
      for (const auto& a : plan_->plan.stages) used |= devices[static_cast<size_t>(a.device)]->node_id == s.node_id;
      if (!used && s.node_id != lost_node_id && s.node_id != self_.node_id) send_stop(s.node_id, old->id);
    }
    plan_->events.add("re-planned on " + std::to_string(plan_->plan.stages.size()) + " device(s); replaying " +
                      std::to_string(carried.size()) + " conversation(s)");
    assign_stages(*plan_, devices, /*staged=*/false);
    start_serving();
    for (auto& c : carried) scheduler_->resume(std::move(c));  // they run once the stages are ready
  } catch (const std::exception& e) {
    scheduler_.reset();
    wait_for_device(std::move(carried), reason + ", and the devices left cannot run the model (" + e.what() + ")");
  }
}

// The device may come back (a link that heals, a daemon restarted): the conversations wait for
// it up to --recovery-wait, then fail.
void Head::wait_for_device(std::vector<CarriedSession> carried, const std::string& why) {
  carried_ = std::move(carried);
  const int wait = self_.recovery_wait_s;
  if (carried_.empty() || wait <= 0) {
    plan_->failure = why + ": start another device and run `hearth launch` again";
    plan_->move_to(LaunchState::kFailed);
    spdlog::error("head: {}", plan_->failure);
    fail_carried(plan_->failure, ErrorCategory::LOST_DEVICE);
    return;
  }
  const auto now = ports_.clock.now();
  if (recovery_deadline_ < now) recovery_deadline_ = now + std::chrono::seconds(wait);
  plan_->failure = why + ": " + std::to_string(carried_.size()) + " conversation(s) wait for a device to join or come back";
  plan_->move_to(LaunchState::kWaitingForDevice);
  spdlog::error("head: {}", plan_->failure);
}

void Head::retry_recovery(const std::string& why) {
  if (carried_.empty() || !plan_ || plan_->state() != LaunchState::kWaitingForDevice) return;
  spdlog::info("head: {}: planning again for the {} waiting conversation(s)", why, carried_.size());
  recover("", why);
}

void Head::check_recovery_deadline() {
  if (carried_.empty() || ports_.clock.now() <= recovery_deadline_) return;
  const std::string why = (plan_ ? plan_->failure : std::string("a device was lost")) + "; no device came within " +
                          std::to_string(self_.recovery_wait_s) + " s: start another device and run `hearth launch` again";
  spdlog::error("head: {}", why);
  if (plan_) {
    plan_->failure = why;
    if (plan_->state() != LaunchState::kFailed) plan_->move_to(LaunchState::kFailed);
  }
  fail_carried(why, ErrorCategory::LOST_DEVICE);
}

void Head::fail_carried(const std::string& why, ErrorCategory category) {
  for (const auto& c : carried_)
    emit({.client = c.client,
          .request_id = c.request_id,
          .done = true,
          .error = why,
          .category = category,
          .finish_reason = "error"});
  carried_.clear();
}

}  // namespace hearth::cluster
