// The head's launches: check and plan before anything that serves is touched, assign each device
// its layers, serve the weights they ask for, follow their progress, and unload.
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <xxhash.h>

#include <algorithm>
#include <filesystem>
#include <thread>

#include "cluster/activation_codec.h"
#include "cluster/wire_choice.h"
#include "cluster/wire_convert.h"
#include "runtime/model/kv_layout.h"
#include "runtime/model/kv_rows.h"
#include "cluster/head.h"
#include "transport/printable.h"
#include "runtime/model/model_spec_gguf.h"

namespace hearth::cluster {

namespace wire = transport::wire;

namespace {

constexpr uint32_t kMaxWeightChunk = 8u << 20;
constexpr int kDefaultMaxBatch = 256;
constexpr int kFirstDraft = 4;  // tokens a conversation's first draft holds

}  // namespace

// Everything that can refuse a launch (the file, the split, the memory) is checked before
// anything is sent. Then the launch stages beside the model that serves: devices receive their
// weights while the old plan keeps answering, and only when every device has them does the head
// commit (see try_commit): a launch that fails on the way leaves the old model serving.
void Head::on_launch(const std::string& client, uint64_t request_id, wire::LaunchRequest::Reader r) {
  bool staging = false;  // next_ is this launch's
  try {
    if (next_ && next_->rebalance) abandon_next("a launch replaced it", ErrorCategory::UNAVAILABLE);
    if (next_ || (plan_ && plan_->launching())) throw Failure(ErrorCategory::CONFLICT, "a launch is already in progress");
    auto p = open_model(r.getModelPath().cStr());
    p->launcher = client;
    p->launcher_request = request_id;
    p->partition = partition_options(r, *p);
    for (auto n : r.getDevices()) p->wanted.emplace_back(n.cStr());
    forget_stale_speeds();
    Device head_with_draft;
    const std::vector<const Device*> devices = planning_devices(*p, registry_.candidates(p->wanted), head_with_draft);
    const partitioner::LinkTable links = registry_.link_table(devices);
    const bool sized_by_client = r.getCtx() > 0 || r.getStreams() > 0;
    p->split_by_user = r.getSplit().size() > 0;
    p->plan = !p->split_by_user ? fit_plan(*p, devices, links, sized_by_client)
                                : plan_by_split(r.getSplit().cStr(), p->spec, devices, links, p->partition);
    for (const auto& line : partitioner::describe_plan(p->plan)) spdlog::info("plan: {}", line);
    next_ = std::move(p);
    staging = true;
    assign_stages(*next_, devices, /*staged=*/true);
    next_->stages[0].state = StageState::kStaged;  // the head maps its layers from the file at the commit
    announce_plan(*next_);
    try_commit();
  } catch (const std::exception& e) {
    spdlog::warn("head: launch failed: {}", e.what());
    if (staging && next_) abandon_next(e.what(), category_of(e));  // nothing half-staged is left behind
    else reply_launch_failure(client, request_id, e.what(), category_of(e));
  }
}

std::vector<const Device*> Head::planning_devices(const LaunchedPlan& p, std::vector<const Device*> devices,
                                                  Device& head_with_draft) const {
  for (auto& d : devices)
    if (d->is_self && p.draft_bytes > 0) {
      head_with_draft = *d;
      head_with_draft.profile.usable_memory_bytes =
          std::max(0.0, d->profile.usable_memory_bytes - static_cast<double>(p.draft_bytes));
      d = &head_with_draft;
    }
  return devices;
}

void Head::reply_launch_failure(const std::string& client, uint64_t request_id, const std::string& why, ErrorCategory category) {
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<wire::Envelope>();
  env.setRequestId(request_id);
  auto reply = env.initLaunchReply();
  reply.setOk(false);
  reply.setMessage(why);
  reply.setCategory(category);
  ports_.outbox.send(client, b);
}

// The planner's choice. With the defaults (no --ctx, no --streams) that do not fit, the largest
// context and stream count that do, said in the plan's events; when nothing fits, or the client's
// sizes do not, the error says which sizes would, if any.
partitioner::PartitionPlan Head::fit_plan(LaunchedPlan& p, const std::vector<const Device*>& devices,
                                          const partitioner::LinkTable& links, bool sized_by_client) {
  const int ctx = p.partition.ctx, streams = p.partition.streams;
  std::optional<Failure> first;
  for (const auto& [c, k] : fallback_sizes(ctx, streams)) {
    partitioner::PartitionOptions o = p.partition;
    o.ctx = c;
    o.streams = k;
    std::optional<partitioner::PartitionPlan> plan;
    try {
      plan = plan_by_planner(p.spec, devices, links, o);
    } catch (const Failure& f) {
      if (f.category() != ErrorCategory::NO_CAPACITY) throw;
      if (!first) first = f;
      continue;
    }
    if (!first) return *plan;
    const std::string sizes = "--ctx " + std::to_string(c) + " --streams " + std::to_string(k);
    if (sized_by_client) throw Failure(ErrorCategory::NO_CAPACITY, std::string(first->what()) + ": " + sizes + " would fit");
    p.partition = o;
    p.options.n_ctx = c;
    p.options.max_sequences = k;
    const std::string chosen = sizes + ": the largest that fit the devices (" + std::to_string(ctx) + " tokens and " +
                               std::to_string(streams) + " streams did not)";
    p.events.add(chosen);
    spdlog::info("head: {}", chosen);
    return *plan;
  }
  throw Failure(ErrorCategory::NO_CAPACITY, std::string(first->what()) + "; not even --ctx 256 --streams 1 fits: " +
                                                what_would_fit(p, devices));
}

// The devices that would make a model fit, named: those --devices left out (when all of them
// together hold it), and those whose own --memory-limit caps what they offer.
std::string Head::what_would_fit(const LaunchedPlan& p, const std::vector<const Device*>& devices) const {
  if (!p.wanted.empty()) {
    const std::vector<const Device*> all = registry_.candidates({});
    if (all.size() > devices.size()) {
      partitioner::PartitionOptions smallest = p.partition;
      smallest.ctx = std::min(smallest.ctx, 256);
      smallest.streams = 1;
      try {
        plan_by_planner(p.spec, all, registry_.link_table(all), smallest);
        std::string names;
        for (const Device* d : all)
          if (std::find(devices.begin(), devices.end(), d) == devices.end()) names += (names.empty() ? "" : ", ") + d->profile.name;
        return "with the devices --devices left out (" + names + ") it fits: launch without --devices, or add them";
      } catch (const Failure&) {
      }
    }
  }
  std::string capped;
  for (const Device* d : registry_.candidates({}))
    if (d->memory.basis == profiles::kMemoryLimitBasis) capped += (capped.empty() ? "" : ", ") + d->profile.name;
  std::string advice = "add a device";
  if (!capped.empty()) advice += ", or raise the --memory-limit of " + capped + " (it caps what they offer)";
  return advice + "; `hearth devices` shows what each device offers";
}

// The model's file, config, vocabulary and hash (hashed once per path, size and mtime).
std::unique_ptr<LaunchedPlan> Head::open_model(const std::string& model_path) {
  struct stat st {};
  if (::stat(model_path.c_str(), &st) != 0) {
    // Not a file: a model of the library, by name ("hearth launch -m qwen3-8b-q4_k_m").
    const std::string name = std::filesystem::path(model_path).filename().string();
    library_.scan();
    if (const LibraryModel* m = library_.find(name); m != nullptr && m->path != model_path) return open_model(m->path);
    throw Failure(ErrorCategory::NOT_FOUND, "the model file " + model_path + " does not exist on the head, nor is " + name +
                                                " a model of its library (`hearth models` lists them)");
  }
  auto p = std::make_unique<LaunchedPlan>(LaunchState::kStaging);
  p->id = next_plan_id_++;
  p->model_path = model_path;
  p->started = std::chrono::steady_clock::now();
  if (!S_ISREG(st.st_mode)) throw Failure(ErrorCategory::BAD_REQUEST, model_path + " is not a file");
  p->file = std::make_unique<runtime::GgufFile>(runtime::GgufFile::open(model_path));
  p->config = runtime::read_model_config(*p->file);
  p->tokenizer = std::make_unique<runtime::Tokenizer>(runtime::load_vocab(p->file->metadata()));
  const std::string key = model_path + ":" + std::to_string(st.st_size) + ":" + std::to_string(st.st_mtime);
  if (!hash_cache_.count(key)) hash_cache_[key] = hash_file(model_path);
  p->model_hash = hash_cache_[key];
  p->spec = runtime::model_spec_from_gguf(*p->file, p->config);
  return p;
}

partitioner::PartitionOptions Head::partition_options(wire::LaunchRequest::Reader r, LaunchedPlan& p) const {
  const int ctx = r.getCtx() > 0 ? static_cast<int>(r.getCtx()) : std::min(p.config.n_ctx_train, 4096);
  const int streams = r.getStreams() > 0 ? static_cast<int>(r.getStreams()) : 4;
  // f16 unless the launch says otherwise: half of f32's memory for a logit difference of about
  // 1e-2 (the note on issue 15 has the figures per model).
  const runtime::TensorType kv = kv_type_from_wire(r.getKvType()).value_or(runtime::TensorType::F16);
  if (const std::string why = runtime::kv_type_unfit(kv, p.config, 0, p.config.n_layer); !why.empty())
    throw Failure(ErrorCategory::BAD_REQUEST, why);
  p.options = {.n_ctx = ctx, .max_batch = kDefaultMaxBatch, .max_sequences = streams, .kv_type = kv};
  partitioner::PartitionOptions opt;
  try {
    p.wire_type = apply_wire_choice(r.getWireType(), p.config.n_embd, opt);
  } catch (const std::invalid_argument& e) {
    throw Failure(ErrorCategory::BAD_REQUEST, e.what());
  }
  choose_draft(r, p);
  p.options.drafts = opt.drafts = !p.draft.empty();
  // The plan minimises a pass with the draft a conversation starts with (DraftPaceOptions).
  if (opt.drafts) opt.draft_tokens = std::min(kFirstDraft, p.draft_max);
  const std::string objective = r.getObjective().size() ? r.getObjective().cStr() : "latency";
  const auto parsed = partitioner::objective_from_string(objective);
  if (!parsed) throw Failure(ErrorCategory::BAD_REQUEST, "unknown objective '" + objective + "'");
  opt.objective = *parsed;
  opt.ctx = ctx;
  opt.streams = streams;
  opt.max_batch = kDefaultMaxBatch;  // the stages' step, which sizes sliding layers' rings
  opt.kv_bytes_per_elem = runtime::kv_bytes_per_element(kv);
  return opt;
}

// Checked at launch, so that a wrong choice is the launch's error, not the serving's.
void Head::choose_draft(wire::LaunchRequest::Reader r, LaunchedPlan& p) const {
  p.draft = r.getDraft().cStr();
  if (p.draft == "none") p.draft.clear();
  if (r.getDraftMax() > 0) p.draft_max = static_cast<int>(std::min<uint32_t>(r.getDraftMax(), kDefaultMaxBatch / 2));
  if (p.draft.empty()) return;
  try {
    // Built once to check it (the file, its vocabulary, its layers), with the smallest cache and
    // one thread: the launch may still choose a smaller context and stream count (fit_plan), so
    // the source that serves is built with the final sizes in start_serving.
    DraftTarget check = draft_target(p);
    check.n_ctx = std::min(check.n_ctx, 64);
    check.max_sequences = 1;
    check.threads = 1;
    make_draft_source(p.draft, check);
    if (is_draft_model(p.draft)) p.draft_bytes = std::filesystem::file_size(p.draft);
  } catch (const std::invalid_argument& e) {
    throw Failure(ErrorCategory::BAD_REQUEST, e.what());
  }
}

DraftTarget Head::draft_target(const LaunchedPlan& p) const {
  return {.vocab = p.tokenizer->vocab(),
          .n_ctx = p.options.n_ctx,
          .max_sequences = p.options.max_sequences,
          .threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))};
}

void Head::assign_stages(LaunchedPlan& p, const std::vector<const Device*>& devices, bool staged) {
  // A token's trip, less its stages: its hops; and a drafting pass's (the plan's draft and its
  // token), less its stages' steps. A stage's step at one row, a draft's and a micro-batch's.
  const partitioner::Prediction& predicted = p.plan.predicted;
  const bool drafts = predicted.draft_pass_ms > 0;
  const double draft_rows = 1 + p.partition.draft_tokens;
  double one_ms = predicted.ms_per_token, draft_ms = predicted.draft_pass_ms;
  for (const auto& a : p.plan.stages) one_ms -= a.stage_time_s * 1e3, draft_ms -= a.draft_step_time_s * 1e3;
  p.expected_links = StepTime(std::max(0.0, one_ms));
  if (drafts) p.expected_links.with(draft_rows, std::max(0.0, draft_ms));
  for (const auto& a : p.plan.stages) {
    PlannedStage s;
    s.node_id = devices[static_cast<size_t>(a.device)]->node_id;
    s.spec = {a.first_layer, a.last_layer, a.has_embedding, a.has_output};
    s.planned = StepTime(a.stage_time_s * 1e3);
    if (drafts) s.planned.with(draft_rows, a.draft_step_time_s * 1e3);
    // (A point past the last only: batched_step_time_s is 0 where a micro-batch is a draft's pass.)
    s.planned.with(predicted.batched_rows, a.batched_step_time_s * 1e3);
    s.expected_ms = a.stage_time_s * 1e3;
    s.speed = devices[static_cast<size_t>(a.device)]->speed;
    if (!a.has_output) s.wire_type = hop_wire_type(p.wire_type, a.compressed_hop);
    p.stages.push_back(std::move(s));
  }
  if (p.stages.empty() || p.stages.front().node_id != self_.node_id)
    throw Failure(ErrorCategory::INTERNAL, "the plan does not start on the head");
  std::vector<std::string> plan_keys;  // who may push into each stage
  for (const auto& st : p.stages) plan_keys.push_back(registry_.at(st.node_id).public_key);
  for (size_t i = 1; i < p.stages.size(); ++i) {
    PlannedStage& s = p.stages[i];
    s.file = std::make_unique<StageFile>(*p.file, p.config, s.spec);
    s.bytes_total = s.file->size();
    send_assignment(p, i, plan_keys, staged);
  }
}

// plan_'s stages have (or are getting) their weights: the head maps its own layers and the
// conversations are scheduled; they run once every stage reports ready.
void Head::start_serving() {
  LaunchedPlan& p = *plan_;
  const bool alone = p.stages.size() == 1;
  ports_.stage.load(p.id, p.model_path, p.stages[0].spec, p.options,
                    {.endpoint = alone ? "" : registry_.at(p.stages[1].node_id).data_endpoint,
                     .key = alone ? self_.public_key : registry_.at(p.stages[1].node_id).public_key,
                     .wire_type = p.stages[0].wire_type},
                    p.stages[0].planned);
  p.stages[0].state = StageState::kReady;
  p.stages[0].resident_bytes = ports_.host.resident_bytes();
  // How far back every stage can take a sequence (the same options on every stage): a draft is
  // never longer than that.
  const runtime::KvLayout caches = runtime::kv_layout(p.config, 0, p.config.n_layer, p.options.n_ctx, p.options.max_batch);
  const int max_draft = std::max(1, std::min(p.draft_max, caches.max_draft));
  scheduler_ = std::make_unique<Scheduler>(
      ports_.stage, *p.tokenizer, p.options.n_ctx, static_cast<int>(p.stages.size()), p.options.max_sequences, caches,
      [this](const GenerationEvent& e) { emit(e); }, make_draft_source(p.draft, draft_target(p)),
      DraftPaceOptions{.max_draft = max_draft, .first_draft = std::min(kFirstDraft, max_draft)});
  if (alone) launch_finished(p, true, "");
}

// The staged launch replaces the serving plan once every device has its weights, and once the
// conversations of the old model have finished, or kDrainWait has passed (those still running
// then end with an error that says why). The switch itself is an unmap and a map on every device.
void Head::try_commit() {
  if (!next_ || !next_->staged_everywhere()) return;
  const auto now = ports_.clock.now();
  if (!next_->staged_at) next_->staged_at = now;
  if (scheduler_ && scheduler_->has_work() && !next_->rebalance && now - *next_->staged_at < kDrainWait) return;
  std::unique_ptr<LaunchedPlan> p = std::move(next_);
  spdlog::info("head: every device has the weights of {}: switching to it", p->config.name);
  // A re-balance carries the conversations over, to replay them; a launch of a model ends them.
  std::vector<CarriedSession> carried;
  if (p->rebalance && scheduler_) carried = scheduler_->suspend();
  if (p->rebalance && plan_) {
    p->events = plan_->events;  // with what happened while it staged
    p->events.add("re-balanced; replaying " + std::to_string(carried.size()) + " conversation(s)");
  }
  unload_all("the model was replaced by " + p->config.name + " (hearth launch): send the request again");
  plan_ = std::move(p);
  plan_->move_to(LaunchState::kLoading);
  // The switch failed: the launch fails, said to its client, and so do the conversations a
  // re-balance carried (they would otherwise wait for nothing).
  const auto fail_switch = [&](const std::string& why, ErrorCategory category) {
    fail_plan(why, category);
    carried_ = std::move(carried);
    fail_carried(why, category);
  };
  for (size_t i = 1; i < plan_->stages.size(); ++i) {
    capnp::MallocMessageBuilder b;
    b.initRoot<wire::Envelope>().initCommit().setPlanId(plan_->id);
    plan_->stages[i].state = StageState::kLoading;
    if (!ports_.outbox.send(plan_->stages[i].node_id, b))
      return fail_switch("device " + registry_.at(plan_->stages[i].node_id).profile.name + " is unreachable",
                         ErrorCategory::LOST_DEVICE);
  }
  try {
    start_serving();
    for (auto& c : carried) scheduler_->resume(std::move(c));  // they run once the stages are ready
  } catch (const std::exception& e) {
    // The head cannot map its own layers.
    fail_switch(std::string("the head cannot load its stage: ") + e.what(), category_of(e));
  }
}

// The staged launch failed (a device lost, a full disk, a refused assignment): its devices drop
// what they staged, its client is told, and the serving plan is untouched.
void Head::abandon_next(const std::string& reason, ErrorCategory category) {
  std::unique_ptr<LaunchedPlan> p = std::move(next_);
  spdlog::error("head: launch of {} failed: {}", p->config.name, reason);
  for (size_t i = 1; i < p->stages.size(); ++i) send_stop(p->stages[i].node_id, p->id);
  if (!p->launcher.empty()) reply_launch_failure(p->launcher, p->launcher_request, reason, category);
  if (plan_) plan_->events.add("a launch of " + p->config.name + " failed, this model kept serving: " + reason);
}

// The client sees the plan before any weights move: the transfer can take minutes.
void Head::announce_plan(const LaunchedPlan& p) {
  if (p.launcher.empty()) return;
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<wire::Envelope>();
  env.setRequestId(p.launcher_request);
  fill_plan(p, env.initLaunchProgress().initPlan());
  ports_.outbox.send(p.launcher, b);
}

void Head::send_assignment(const LaunchedPlan& p, size_t i, const std::vector<std::string>& plan_keys, bool staged) {
  const PlannedStage& s = p.stages[i];
  const bool last = i + 1 == p.stages.size();
  capnp::MallocMessageBuilder b;
  auto a = b.initRoot<wire::Envelope>().initAssignment();
  a.setPlanId(p.id);
  a.setModelHash(p.model_hash);
  a.setModelName(p.config.name);
  a.setFirstLayer(static_cast<uint32_t>(s.spec.first_layer));
  a.setLastLayer(static_cast<uint32_t>(s.spec.last_layer));
  a.setHasEmbedding(false);
  a.setHasOutput(s.spec.has_output);
  a.setStageFileBytes(s.file->size());
  a.setStageFileHash(s.file->header_hash());
  // The last stage returns tokens to the head.
  a.setNextEndpoint(last ? self_.data_endpoint : registry_.at(p.stages[i + 1].node_id).data_endpoint);
  a.setNextKey(last ? self_.public_key : plan_keys[i + 1]);
  auto keys = a.initMemberKeys(static_cast<unsigned>(plan_keys.size()));
  for (unsigned k = 0; k < plan_keys.size(); ++k) keys.set(k, plan_keys[k]);
  a.setNCtx(static_cast<uint32_t>(p.options.n_ctx));
  a.setMaxBatch(static_cast<uint32_t>(p.options.max_batch));
  a.setMaxSequences(static_cast<uint32_t>(p.options.max_sequences));
  a.setNEmbd(static_cast<uint32_t>(p.config.n_embd));
  a.setStaged(staged);
  a.setKvType(kv_type_to_wire(p.options.kv_type));
  a.setWireType(dtype_to_wire(s.wire_type));
  a.setDrafts(p.options.drafts);
  auto points = a.initStepPlan(static_cast<unsigned>(s.planned.points.size()));
  for (unsigned k = 0; k < points.size(); ++k)
    points[k].setRows(s.planned.points[k].rows), points[k].setMs(s.planned.points[k].ms);
  if (!ports_.outbox.send(s.node_id, b))
    throw Failure(ErrorCategory::LOST_DEVICE, "device " + registry_.at(s.node_id).profile.name + " is unreachable");
}

LaunchedPlan* Head::plan_with_id(uint64_t id) {
  if (plan_ && plan_->id == id) return plan_.get();
  if (next_ && next_->id == id) return next_.get();
  return nullptr;
}

void Head::on_weight_request(const std::string& identity, wire::WeightRequest::Reader r) {
  const LaunchedPlan* p = plan_with_id(r.getPlanId());
  if (p == nullptr) {
    ports_.host.count_out_of_plan();
    return;
  }
  for (const auto& s : p->stages) {
    if (s.node_id != identity || !s.file) continue;
    if (r.getLength() == 0 || r.getLength() > kMaxWeightChunk || r.getOffset() > s.file->size() ||
        r.getLength() > s.file->size() - r.getOffset())
      throw std::invalid_argument("weight request outside the stage file");
    // Read straight into the message ZeroMQ sends (no copy, one chunk at a time here; the
    // device keeps a few requests in flight).
    zmq::message_t chunk(r.getLength());
    s.file->read(r.getOffset(), {chunk.data<uint8_t>(), chunk.size()});
    capnp::MallocMessageBuilder b;
    auto c = b.initRoot<wire::Envelope>().initWeightChunk();
    c.setPlanId(p->id);
    c.setOffset(r.getOffset());
    c.setChecksum(XXH3_64bits(chunk.data(), chunk.size()));
    ports_.outbox.send(identity, b, std::move(chunk));
    return;
  }
  ports_.host.count_out_of_plan();
}

namespace {

StageState stage_state(wire::LoadStatus::State s) {
  switch (s) {
    case wire::LoadStatus::State::RECEIVING: return StageState::kReceiving;
    case wire::LoadStatus::State::LOADING: return StageState::kLoading;
    case wire::LoadStatus::State::READY: return StageState::kReady;
    case wire::LoadStatus::State::FAILED: return StageState::kFailed;
    case wire::LoadStatus::State::STAGED: return StageState::kStaged;
  }
  throw std::invalid_argument("load status with an unknown state");
}

}  // namespace

void Head::on_load_status(const std::string& identity, wire::LoadStatus::Reader st) {
  LaunchedPlan* p = plan_with_id(st.getPlanId());
  if (p == nullptr || (p->state() != LaunchState::kLoading && p->state() != LaunchState::kStaging)) return;
  for (auto& s : p->stages) {
    if (s.node_id != identity) continue;
    s.state = stage_state(st.getState());
    if (st.getBytesTotal() > 0) s.bytes_done = st.getBytesDone();
    if (s.state == StageState::kReady || s.state == StageState::kStaged) s.bytes_done = s.bytes_total;  // also from a local copy
    s.resident_bytes = st.getResidentBytes();
    s.message = transport::printable(st.getMessage().cStr(), 1000);  // it reaches logs and terminals
    report_progress(*p, s);
    if (s.state == StageState::kFailed) {
      const std::string why = "device " + registry_.at(identity).profile.name + " could not load its stage: " + s.message;
      if (p == next_.get()) abandon_next(why, ErrorCategory::INTERNAL);
      else fail_plan(why, ErrorCategory::INTERNAL);
      return;
    }
  }
  if (p == next_.get()) try_commit();
  else if (std::all_of(p->stages.begin(), p->stages.end(), [](const PlannedStage& s) { return s.state == StageState::kReady; }))
    launch_finished(*p, true, "");
}

void Head::report_progress(const LaunchedPlan& p, const PlannedStage& s) {
  if (p.launcher.empty()) return;
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<wire::Envelope>();
  env.setRequestId(p.launcher_request);
  auto pr = env.initLaunchProgress();
  pr.setDevice(registry_.at(s.node_id).profile.name);
  pr.setBytesDone(s.bytes_done);
  pr.setBytesTotal(s.bytes_total);
  pr.setState(to_string(s.state));
  ports_.outbox.send(p.launcher, b);
}

void Head::launch_finished(LaunchedPlan& p, bool ok, const std::string& message, ErrorCategory category) {
  if (ok) {
    p.move_to(LaunchState::kReady);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - p.started).count();
    spdlog::info("head: plan {} ready in {:.1f} s", p.id, s);
  }
  if (p.launcher.empty()) return;
  if (!ok) {
    reply_launch_failure(p.launcher, p.launcher_request, message, category);
  } else {
    capnp::MallocMessageBuilder b;
    auto env = b.initRoot<wire::Envelope>();
    env.setRequestId(p.launcher_request);
    auto reply = env.initLaunchReply();
    reply.setOk(true);
    reply.setMessage(message);
    fill_plan(p, reply.initPlan());
    ports_.outbox.send(p.launcher, b);
  }
  p.launcher.clear();
}

void Head::fail_plan(const std::string& reason, ErrorCategory category) {
  if (!plan_ || plan_->state() == LaunchState::kFailed) return;
  spdlog::error("head: {}", reason);
  const bool was_launching = plan_->state() == LaunchState::kLoading;
  plan_->failure = reason;
  plan_->move_to(LaunchState::kFailed);
  if (scheduler_) scheduler_->fail(reason, category);
  if (was_launching) launch_finished(*plan_, false, reason, category);
}

void Head::unload_all(const std::string& why) {
  if (scheduler_) scheduler_->fail(why, ErrorCategory::UNAVAILABLE);
  fail_carried(why, ErrorCategory::UNAVAILABLE);  // conversations that waited for a device
  scheduler_.reset();
  if (plan_)
    for (const auto& s : plan_->stages)
      if (s.node_id != self_.node_id) send_stop(s.node_id, plan_->id);
  ports_.stage.unload();
  plan_.reset();
}

void Head::send_stop(const std::string& node_id, uint64_t plan_id) {
  capnp::MallocMessageBuilder b;
  b.initRoot<wire::Envelope>().initStopRequest().setPlanId(plan_id);
  ports_.outbox.send(node_id, b);
}

}  // namespace hearth::cluster
