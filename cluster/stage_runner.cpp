#include "cluster/stage_runner.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "cluster/activation_codec.h"
#include "cluster/wire_convert.h"
#include "runtime/gpu/gpu.h"
#include "runtime/model/stage_budget.h"
#include "runtime/model/weights.h"

namespace hearth::cluster {

namespace wire = transport::wire;
using Steady = std::chrono::steady_clock;

StageRunner::StageRunner(const transport::SocketFactory& sockets, runtime::ThreadPool& pool, DropStats& drops,
                         std::string device_name, std::string gpu, uint64_t memory_budget, Reports reports)
    : sockets_(sockets),
      pool_(pool),
      drops_(drops),
      device_name_(std::move(device_name)),
      gpu_(std::move(gpu)),
      memory_budget_(memory_budget),
      reports_(std::move(reports)) {}

void StageRunner::load(uint64_t plan_id, const std::string& model_path, const runtime::StageSpec& spec,
                       const runtime::StageOptions& options, const NextHop& next, const StepTime& planned) {
  unload();
  auto st = std::make_unique<Loaded>();
  st->file = std::make_unique<runtime::GgufFile>(runtime::GgufFile::open(model_path));
  const runtime::ModelConfig cfg = runtime::read_model_config(*st->file);
  auto weights = std::make_shared<runtime::StageWeights>(*st->file, cfg, spec);
  const double mapped_mb = weights->mapped_bytes() / 1e6;
  runtime::StageOptions with_gpu = options;
  // A graphics card's weights leave RAM (their mapped pages are clean and dropped under pressure),
  // so the RAM budget is for the rest, as the planner counts it (CostModel::gpu_share). Paging
  // and a GPU do not combine: a stage that must page even so runs on the CPU alone.
  st->gpu = runtime::choose_stage_gpu(gpu_, *weights);
  const bool card = st->gpu && st->gpu->info().kind != "integrated" && st->gpu->info().kind != "cpu";
  uint64_t weight_room = 0;
  with_gpu.paging = paging_for(weights, options, card ? st->gpu->placement().bytes : 0, weight_room);
  if (!with_gpu.paging.empty() && st->gpu) {
    spdlog::info("the stage pages: its GPU is not used");
    st->gpu.reset();
    with_gpu.paging = paging_for(weights, options, 0, weight_room);
  }
  with_gpu.offload = st->gpu ? &st->gpu->offload() : nullptr;
  with_gpu.layers = st->gpu ? st->gpu->layers() : nullptr;
  runtime::lay_out_for_cpu(*weights, with_gpu, weight_room, pool_);
  st->host = std::make_unique<StageHost>(std::move(weights), with_gpu, pool_);
  if (const std::string why = wire_type_unfit(next.wire_type, static_cast<size_t>(cfg.hidden_width(spec.last_layer)));
      !why.empty())
    throw std::invalid_argument(why);
  st->next_endpoint = next.endpoint;
  st->wire_type = next.wire_type;
  st->planned = planned;
  if (!next.endpoint.empty()) st->push.emplace(sockets_.connect_push(next.endpoint, {.send_hwm = 64, .server_key = next.key}));
  stage_ = std::move(st);
  plan_id_ = plan_id;
  spdlog::info("stage ready: layers [{}, {}), {:.1f} MB mapped, next {}{}", spec.first_layer, spec.last_layer, mapped_mb,
               next.endpoint.empty() ? "none" : next.endpoint,
               spec.has_output || next.wire_type == runtime::TensorType::F32
                   ? ""
                   : " (activations as " + std::string(runtime::tensor_type_name(next.wire_type)) + ")");
}

// What the stage must page to stay within this device's memory: nothing for most stages. The
// planner gives a device more than its memory only where its storage makes up the rest; the stage
// measures its own caches and buffers, so it pages what its own count says does not fit. One that
// cannot fit even so is loaded whole, as before paging existed, with a warning.
runtime::PagingPlan StageRunner::paging_for(const std::shared_ptr<runtime::StageWeights>& weights,
                                            const runtime::StageOptions& options, uint64_t off_ram_bytes, uint64_t& weight_room) {
  weight_room = 0;
  if (memory_budget_ == 0) return {};
  weight_room = 1;  // unless the count below says how much
  try {
    const runtime::StageBudget budget = runtime::budget_stage(weights, options, memory_budget_ + off_ram_bytes, pool_);
    const runtime::PagingPlan& plan = budget.paging;
    weight_room = memory_budget_ + off_ram_bytes - budget.other_bytes;
    if (!plan.empty())
      spdlog::info("paging {} of the stage's {} layers from {} ({} MB read per step): its weights do not fit {} MB",
                   plan.layers.size(), weights->spec().last_layer - weights->spec().first_layer, weights->path(),
                   runtime::paging_cost(*weights, plan).paged_bytes / 1000000, memory_budget_ / 1000000);
    return plan;
  } catch (const std::invalid_argument& e) {
    spdlog::warn("the stage may not fit this device's memory ({}); loaded whole", e.what());
    return {};
  }
}

void StageRunner::unload() {
  if (stage_) spdlog::info("unloading the stage of plan {}", plan_id_.load());
  stage_.reset();
  pending_.clear();
  plan_id_ = 0;
}

// ---- in ----

void StageRunner::accept_forward(wire::Forward::Reader f, zmq::message_t* payload) {
  if (!stage_ || f.getPlanId() != plan_id_) {
    drops_.out_of_plan++;
    spdlog::debug("dropped a forward for plan {}", f.getPlanId());
    return;
  }
  const StageHost& host = *stage_->host;
  const auto& cfg = host.config();
  if (host.spec().has_embedding) throw std::invalid_argument("the first stage takes no forwards");
  const auto dtype = dtype_from_wire(f.getDtype());
  const auto width = static_cast<size_t>(cfg.hidden_width(host.spec().first_layer));
  if (!dtype || f.getNEmbd() != width) throw std::invalid_argument("forward with a dtype or width this stage does not use");
  const auto chunks = f.getChunks();
  const auto tokens = f.getTokens();
  if (chunks.size() == 0 || chunks.size() > static_cast<unsigned>(host.max_batch()))
    throw std::invalid_argument("forward with " + std::to_string(chunks.size()) + " chunks");
  Batch b;
  uint64_t total = 0;
  for (auto c : chunks) {
    if (c.getNTokens() == 0 || c.getNTokens() > static_cast<uint32_t>(host.max_batch()))
      throw std::invalid_argument("chunk with " + std::to_string(c.getNTokens()) + " tokens");
    BatchChunk bc{c.getSeq(), static_cast<int>(c.getPos()), static_cast<int>(c.getNTokens()), c.getIsPrompt(), c.getWantToken(),
                  {}, c.getRestarts()};
    if (bc.starts()) bc.sampling = from_wire(c.getSampling());
    if (c.getDrafts() >= c.getNTokens() || (c.getDrafts() > 0 && !c.getWantToken()))
      throw std::invalid_argument("chunk of " + std::to_string(c.getNTokens()) + " tokens with a draft of " +
                                  std::to_string(c.getDrafts()));
    bc.drafts = static_cast<int>(c.getDrafts());
    total += c.getNTokens();
    b.chunks.push_back(bc);
  }
  if (total > static_cast<uint64_t>(host.max_batch()) || tokens.size() != total)
    throw std::invalid_argument("forward token count does not match its chunks");
  b.hidden.resize(total * width);
  try {
    if (payload == nullptr) throw std::invalid_argument("forward without its payload");
    decode_activations(*dtype, {payload->data<uint8_t>(), payload->size()}, width, b.hidden);
  } catch (const std::invalid_argument&) {
    drops_.bad_payload++;
    throw;
  }
  for (int32_t t : tokens) b.tokens.push_back(t);
  pending_.push_back({std::move(b), {}});
}

void StageRunner::accept_release(wire::Release::Reader r) {
  if (!stage_ || r.getPlanId() != plan_id_) {
    drops_.out_of_plan++;
    return;
  }
  Pending marker;
  for (uint64_t s : r.getSeqs()) marker.released.push_back(s);
  pending_.push_back(std::move(marker));
}

// ---- compute ----

void StageRunner::process() {
  while (!pending_.empty() && stage_) {
    Pending item = std::move(pending_.front());
    pending_.pop_front();
    if (item.batch.chunks.empty()) {
      release(item.released);
      continue;
    }
    // Merge the batches that follow into one pass over the weights, while they fit and no
    // sequence appears twice.
    Batch& batch = item.batch;
    std::set<uint64_t> seqs;
    for (const auto& c : batch.chunks) seqs.insert(c.seq);
    while (!pending_.empty()) {
      const Batch& next = pending_.front().batch;
      if (next.chunks.empty()) break;
      if (batch.n_tokens() + next.n_tokens() > stage_->host->max_batch()) break;
      bool clash = false;
      for (const auto& c : next.chunks) clash |= seqs.count(c.seq) > 0;
      if (clash) break;
      for (const auto& c : next.chunks) seqs.insert(c.seq), batch.chunks.push_back(c);
      batch.tokens.insert(batch.tokens.end(), next.tokens.begin(), next.tokens.end());
      batch.hidden.insert(batch.hidden.end(), next.hidden.begin(), next.hidden.end());
      pending_.pop_front();
    }
    run_batch(std::move(batch));
  }
}

StageOutput StageRunner::compute(const Batch& batch) {
  const auto t0 = Steady::now();
  StageOutput out = stage_->host->run(batch);
  const auto ns = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Steady::now() - t0).count());
  work_.batches++;
  work_.tokens += static_cast<uint64_t>(batch.n_tokens());
  work_.compute_ns += ns;
  // A step of one token of one stream: what the plan predicts a stage's step to cost. Decode
  // steps of more than one row (several streams, a draft) apart: they cost more, and the drift
  // watch compares them with the plan's step at their rows.
  const bool decodes = std::none_of(batch.chunks.begin(), batch.chunks.end(), [](const BatchChunk& c) { return c.is_prompt; });
  // (Within a step of hours: the loader refuses plans past that, the cast stays defined.)
  const auto planned_ns = [&] { return static_cast<uint64_t>(std::clamp(stage_->planned.at(batch.n_tokens()), 0.0, 1e7) * 1e6); };
  if (batch.n_tokens() == 1) {
    work_.decode_steps++;
    work_.decode_ns += ns;
    work_.decode_planned_ns += planned_ns();
  } else if (decodes) {
    work_.batched_steps++;
    work_.batched_rows += static_cast<uint64_t>(batch.n_tokens());
    work_.batched_ns += ns;
    work_.batched_planned_ns += planned_ns();
  }
  count_paging();
  return out;
}

// The pager's figures are its own since the stage was loaded; the counters are the daemon's.
void StageRunner::count_paging() {
  const runtime::PagerStats now = stage_->host->pager_stats();
  runtime::PagerStats& seen = stage_->paged;
  const auto ns = [](double s) { return static_cast<uint64_t>(s * 1e9); };
  work_.paged_read_bytes += now.bytes_read - seen.bytes_read;
  work_.paged_read_ns += ns(now.read_seconds) - ns(seen.read_seconds);
  work_.paged_wait_ns += ns(now.wait_seconds) - ns(seen.wait_seconds);
  seen = now;
}

void StageRunner::run_batch(Batch batch) {
  StageOutput out;
  try {
    out = compute(batch);
  } catch (const std::invalid_argument& e) {
    drops_.malformed++;
    spdlog::warn("refused a batch: {}", e.what());
    report_refusal(batch, e.what());
    return;
  }
  if (!has_output()) push_forward(batch, out.hidden);
  else if (!reports_.sampled || !reports_.sampled(out.sampled)) send_result(out.sampled);
}

void StageRunner::report_refusal(const Batch& batch, const std::string& why) {
  capnp::MallocMessageBuilder b;
  auto err = b.initRoot<wire::Envelope>().initError();
  err.setPlanId(plan_id_);
  auto seqs = err.initSeqs(static_cast<unsigned>(batch.chunks.size()));
  for (unsigned i = 0; i < batch.chunks.size(); ++i) seqs.set(i, batch.chunks[i].seq);
  err.setMessage("stage " + device_name_ + ": " + why);
  err.setCategory(wire::ErrorCategory::BAD_REQUEST);
  reports_.to_head(b);
}

// ---- out ----

void StageRunner::send_result(const std::vector<SampledToken>& sampled) {
  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<wire::Envelope>().initResult();
  r.setPlanId(plan_id_);
  auto list = r.initTokens(static_cast<unsigned>(sampled.size()));
  for (unsigned i = 0; i < sampled.size(); ++i) {
    list[i].setSeq(sampled[i].seq);
    list[i].setToken(sampled[i].token);
    list[i].setAccepted(static_cast<uint32_t>(sampled[i].accepted));
  }
  if (!stage_->push->send(transport::encode(b), zmq::send_flags::none))
    spdlog::error("the head ({}) does not take results: tokens dropped", stage_->next_endpoint);
}

bool StageRunner::push_forward(const Batch& batch, const std::vector<float>& hidden) {
  capnp::MallocMessageBuilder b;
  auto f = b.initRoot<wire::Envelope>().initForward();
  f.setPlanId(plan_id_);
  const auto width = static_cast<size_t>(stage_->host->config().hidden_width(stage_->host->spec().last_layer));
  // A batch whose values f16 cannot hold goes as f32: exact, only larger.
  runtime::TensorType type = stage_->wire_type;
  zmq::message_t payload(encoded_bytes(type, hidden.size() / width, width));
  if (!encode_activations(type, hidden, width, {payload.data<uint8_t>(), payload.size()})) {
    type = runtime::TensorType::F32;
    payload = zmq::message_t(hidden.data(), hidden.size() * sizeof(float));
  }
  f.setDtype(dtype_to_wire(type));
  f.setNEmbd(static_cast<uint32_t>(width));
  auto chunks = f.initChunks(static_cast<unsigned>(batch.chunks.size()));
  for (unsigned i = 0; i < batch.chunks.size(); ++i) {
    const BatchChunk& c = batch.chunks[i];
    chunks[i].setSeq(c.seq);
    chunks[i].setPos(static_cast<uint32_t>(c.pos));
    chunks[i].setNTokens(static_cast<uint32_t>(c.n_tokens));
    chunks[i].setIsPrompt(c.is_prompt);
    chunks[i].setWantToken(c.want_token);
    chunks[i].setRestarts(c.restarts);
    chunks[i].setDrafts(static_cast<uint32_t>(c.drafts));
    if (c.starts()) to_wire(c.sampling, chunks[i].initSampling());
  }
  auto tokens = f.initTokens(static_cast<unsigned>(batch.tokens.size()));
  for (unsigned i = 0; i < batch.tokens.size(); ++i) tokens.set(i, batch.tokens[i]);
  const size_t bytes = payload.size();
  if (!stage_->push->send(transport::encode(b), zmq::send_flags::sndmore) ||
      !stage_->push->send(payload, zmq::send_flags::none)) {
    spdlog::error("the next stage ({}) does not take data: batch dropped", stage_->next_endpoint);
    return false;
  }
  work_.bytes_out += bytes;
  return true;
}

void StageRunner::release(const std::vector<uint64_t>& seqs) {
  if (!stage_) return;
  for (uint64_t s : seqs) stage_->host->release(s);
  if (!has_output()) push_release(seqs);
}

void StageRunner::push_release(const std::vector<uint64_t>& seqs) {
  if (!stage_ || !stage_->push) return;
  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<wire::Envelope>().initRelease();
  r.setPlanId(plan_id_);
  auto list = r.initSeqs(static_cast<unsigned>(seqs.size()));
  for (unsigned i = 0; i < seqs.size(); ++i) list.set(i, seqs[i]);
  if (!stage_->push->send(transport::encode(b), zmq::send_flags::none))
    spdlog::error("the next stage ({}) does not take data: release dropped", stage_->next_endpoint);
}

}  // namespace hearth::cluster
