#include "runtime/model/layer_pager.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace hearth::runtime {

namespace {

// A matrix of a layer, and how many of the bytes from its first one to read (more than its own for experts).
struct PageableMatrix {
  WeightMatrix* m;
  uint64_t bytes;  // from m's first byte: one matrix, or every expert's (a fused tensor's halves interleave)
};

std::vector<PageableMatrix> pageable(LayerWeights& w, PagedPart part) {
  std::vector<PageableMatrix> out;
  const auto add = [&](WeightMatrix& m, uint64_t bytes) {
    if (m.data != nullptr && m.n_out > 0) out.push_back({&m, bytes});
  };
  for (WeightMatrix* m : {&w.w_gate, &w.w_up, &w.w_down, &w.gate_shexp, &w.up_shexp, &w.down_shexp}) add(*m, m->bytes());
  // Experts back to back, or (Gemma 4's fused gate-up tensor) the gate or up rows of each, a
  // stride apart: the span from the first expert's rows to the last's, the other half's rows
  // between them read too.
  for (ExpertMatrix* e : {&w.gate_exps, &w.up_exps, &w.down_exps}) {
    const uint64_t stride = e->stride ? e->stride : e->first.bytes();
    if (e->n_expert > 0) add(e->first, stride * static_cast<uint64_t>(e->n_expert - 1) + e->first.bytes());
  }
  if (part == PagedPart::FfnAndAttention)
    for (WeightMatrix* m : {&w.wq, &w.wk, &w.wv, &w.wo, &w.ssm_qkv, &w.ssm_z, &w.ssm_beta, &w.ssm_alpha, &w.ssm_out})
      add(*m, m->bytes());
  return out;
}

// Bytes a buffer needs for one layer's paged matrices, each read widened to kDirectAlign.
uint64_t buffer_bytes_of(const StageWeights& weights, int layer, PagedPart part) {
  LayerWeights w = weights.layer(layer);
  uint64_t n = 0;
  for (const PageableMatrix& p : pageable(w, part)) n += DirectReader::span_bytes(weights.file_offset(p.m->data), p.bytes);
  return n;
}

uint64_t paged_bytes_of(const StageWeights& weights, int layer, PagedPart part) {
  LayerWeights w = weights.layer(layer);
  uint64_t n = 0;
  for (const PageableMatrix& p : pageable(w, part)) n += p.bytes;
  return n;
}

// k of the stage's layers, spread evenly: the middle one of each k-th of the stage.
std::vector<int> spread(const StageSpec& spec, int k) {
  const int n = spec.last_layer - spec.first_layer;
  std::vector<int> layers;
  for (int i = 0; i < k; ++i) layers.push_back(spec.first_layer + static_cast<int>((2 * i + 1) * static_cast<int64_t>(n) / (2 * k)));
  return layers;
}

std::string megabytes(uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MB", static_cast<double>(bytes) / 1e6);
  return text;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

PagingCost paging_cost(const StageWeights& weights, const PagingPlan& plan) {
  PagingCost c;
  uint64_t widest = 0;
  for (int l : plan.layers) {
    c.paged_bytes += paged_bytes_of(weights, l, plan.part);
    widest = std::max(widest, buffer_bytes_of(weights, l, plan.part));
  }
  c.buffer_bytes = plan.layers.empty() ? 0 : 2 * widest;
  c.resident_bytes = weights.mapped_bytes() - c.paged_bytes + c.buffer_bytes;
  return c;
}

PagingPlan choose_paging(const StageWeights& weights, uint64_t budget) {
  if (weights.mapped_bytes() <= budget) return {};
  const StageSpec& spec = weights.spec();
  const int n = spec.last_layer - spec.first_layer;
  uint64_t least = weights.mapped_bytes();
  for (PagedPart part : {PagedPart::Ffn, PagedPart::FfnAndAttention})
    for (int k = 1; k <= n; ++k) {
      const PagingPlan plan{spread(spec, k), part};
      const uint64_t resident = paging_cost(weights, plan).resident_bytes;
      if (resident <= budget) return plan;
      least = std::min(least, resident);
    }
  throw std::invalid_argument("the stage's weights need at least " + megabytes(least) +
                              " in memory even with every layer's matrices read from storage (the budget is " +
                              megabytes(budget) + "): give it more memory or fewer layers");
}

LayerPager::LayerPager(const StageWeights& weights, const PagingPlan& plan) : plan_(plan), reader_(weights.path()) {
  const StageSpec& spec = weights.spec();
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    const int l = plan.layers[i];
    if (l < spec.first_layer || l >= spec.last_layer || (i > 0 && l <= plan.layers[i - 1]))
      throw std::invalid_argument("paging plan: layer " + std::to_string(l) + " is not a new layer of the stage [" +
                                  std::to_string(spec.first_layer) + ", " + std::to_string(spec.last_layer) + ")");
  }
  layers_.resize(plan.layers.size());  // sized once: pieces point into the views
  uint64_t widest = 0;
  for (size_t i = 0; i < layers_.size(); ++i) {
    PagedLayer& p = layers_[i];
    p.layer = plan.layers[i];
    p.view = weights.layer(p.layer);
    uint64_t at = 0;
    for (const PageableMatrix& m : pageable(p.view, plan.part)) {
      const uint64_t offset = weights.file_offset(m.m->data), bytes = m.bytes;
      p.pieces.push_back({&m.m->data, offset, bytes, at});
      at += DirectReader::span_bytes(offset, bytes);
    }
    widest = std::max(widest, at);
  }
  for (Slot& s : slots_) s.buffer = AlignedBuffer(widest);
  std::vector<std::pair<uint64_t, uint64_t>> paged;
  for (const PagedLayer& p : layers_)
    for (const Piece& piece : p.pieces) paged.emplace_back(piece.file_offset, piece.file_offset + piece.bytes);
  std::sort(paged.begin(), paged.end());
  weights.prepare_for_paging(paged);
  for (const auto& [begin, end] : paged) reader_.drop_cached(begin, end - begin);  // read before the plan was known
  stats_.direct = reader_.direct();
  thread_ = std::thread([this] { read_loop(); });
  if (!layers_.empty()) {
    std::lock_guard lock(mu_);
    request(0, 0);
  }
}

LayerPager::~LayerPager() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  work_.notify_all();
  thread_.join();
}

int LayerPager::index_of(int layer) const {
  const auto it = std::lower_bound(plan_.layers.begin(), plan_.layers.end(), layer);
  return it != plan_.layers.end() && *it == layer ? static_cast<int>(it - plan_.layers.begin()) : -1;
}

bool LayerPager::pages(int layer) const { return index_of(layer) >= 0; }

void LayerPager::request(int slot, int index) {
  slots_[slot].index = index;
  slots_[slot].state = SlotState::Loading;
  pending_.push_back(slot);
  work_.notify_one();
}

const LayerWeights& LayerPager::acquire(int layer) {
  const int index = index_of(layer);
  if (index < 0) throw std::invalid_argument("layer " + std::to_string(layer) + " is not paged");
  const auto start = std::chrono::steady_clock::now();
  std::unique_lock lock(mu_);
  for (const Slot& slot : slots_)
    if (slot.state == SlotState::InUse && slot.index != index)
      throw std::logic_error("LayerPager: layer " + std::to_string(layer) + " acquired before layer " +
                             std::to_string(layers_[static_cast<size_t>(slot.index)].layer) + " was released");
  int s = -1;
  for (int i = 0; i < 2; ++i)
    if (slots_[i].index == index && slots_[i].state != SlotState::Empty) s = i;
  if (s < 0) {  // out of the usual order (a pass that stopped early): read it into a free buffer
    done_.wait(lock, [&] { return slots_[0].state != SlotState::Loading || slots_[1].state != SlotState::Loading; });
    s = slots_[0].state != SlotState::Loading ? 0 : 1;
    request(s, index);
  }
  done_.wait(lock, [&] { return slots_[s].state != SlotState::Loading || error_; });
  stats_.wait_seconds += seconds_since(start);
  if (error_) std::rethrow_exception(error_);
  slots_[s].state = SlotState::InUse;
  const int next = (index + 1) % static_cast<int>(layers_.size());
  Slot& other = slots_[1 - s];
  if (next != index && other.index != next && other.state != SlotState::Loading && other.state != SlotState::InUse)
    request(1 - s, next);
  lock.unlock();
  PagedLayer& p = layers_[static_cast<size_t>(index)];
  for (const Piece& piece : p.pieces)
    *piece.target = slots_[s].buffer.data() + piece.buffer_offset + piece.file_offset % kDirectAlign;
  return p.view;
}

void LayerPager::release(int layer) {
  const int index = index_of(layer);
  std::lock_guard lock(mu_);
  for (Slot& s : slots_)
    if (s.index == index && s.state == SlotState::InUse) s.state = SlotState::Ready;
}

PagerStats LayerPager::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void LayerPager::read_loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    work_.wait(lock, [&] { return stop_ || !pending_.empty(); });
    if (stop_) return;
    const int s = pending_.front();
    pending_.pop_front();
    lock.unlock();
    const auto start = std::chrono::steady_clock::now();
    std::exception_ptr error;
    try {
      read_layer(s);
    } catch (...) {
      error = std::current_exception();
    }
    const double seconds = seconds_since(start);
    lock.lock();
    const PagedLayer& p = layers_[static_cast<size_t>(slots_[s].index)];
    if (error) {
      error_ = error;
      slots_[s].state = SlotState::Empty;
    } else {
      slots_[s].state = SlotState::Ready;
      for (const Piece& piece : p.pieces) stats_.bytes_read += piece.bytes;
      ++stats_.layers_read;
    }
    stats_.read_seconds += seconds;
    stats_.direct = reader_.direct();
    done_.notify_all();
  }
}

// Runs on the reader thread, without the lock: the slot is Loading, which nothing else touches.
void LayerPager::read_layer(int s) {
  const PagedLayer& p = layers_[static_cast<size_t>(slots_[s].index)];
  for (const Piece& piece : p.pieces) reader_.read(piece.file_offset, piece.bytes, slots_[s].buffer.data() + piece.buffer_offset);
}

}  // namespace hearth::runtime
