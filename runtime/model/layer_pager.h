// Layers whose largest matrices stay on storage and are read again as each pass reaches them:
// how a device runs a share of a model larger than its memory (issue 19).
//
//   PagingPlan plan = choose_paging(*weights, budget_bytes);
//   Stage stage(weights, {.paging = plan}, pool);  // the stage owns a LayerPager
//
// A reader thread reads paged layers into two buffers, always the next paged layer while the
// stage computes the current one (and, past the last, the first again for the next pass), so a
// pass costs about max(compute, storage read) rather than their sum. The matrices are the same
// bytes the mapping would give, so a paged stage computes exactly what a resident one does.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "runtime/format/direct_reader.h"
#include "runtime/model/weights.h"

namespace hearth::runtime {

// Which matrices of a paged layer stay on storage. Norms, biases and routers always stay in memory.
enum class PagedPart {
  Ffn,               // the feed-forward's (dense, experts, shared expert): the largest
  FfnAndAttention,   // and the attention's (or the delta-net's) too
};

struct PagingPlan {
  std::vector<int> layers;  // paged layers, ascending, within the stage
  PagedPart part = PagedPart::Ffn;
  bool empty() const { return layers.empty(); }
};

struct PagingCost {
  uint64_t resident_bytes = 0;  // mapped weights that are not paged, plus the two read buffers
  uint64_t paged_bytes = 0;     // read from storage by every pass (each paged layer once)
  uint64_t buffer_bytes = 0;    // the two read buffers (in resident_bytes)
};

PagingCost paging_cost(const StageWeights& weights, const PagingPlan& plan);

// The plan that pages the fewest bytes while the stage's weights fit `budget` bytes: the FFN
// matrices of as few layers as can do, spread evenly over the stage so reads interleave with
// resident layers' compute; then attention too. Empty when everything fits. Throws
// std::invalid_argument, naming the least budget that would do, when nothing does.
PagingPlan choose_paging(const StageWeights& weights, uint64_t budget);

struct PagerStats {
  uint64_t bytes_read = 0;    // from storage
  uint64_t layers_read = 0;
  double read_seconds = 0;    // the reader's time in reads
  double wait_seconds = 0;    // the stage's time waiting for a layer (reads not hidden by compute)
  bool direct = false;        // reads bypass the page cache (O_DIRECT)
};

class LayerPager {
 public:
  // Starts the reader on the first paged layer. Throws std::invalid_argument for a plan outside
  // the stage, std::runtime_error when the model file cannot be opened.
  LayerPager(const StageWeights& weights, const PagingPlan& plan);
  ~LayerPager();
  LayerPager(const LayerPager&) = delete;
  LayerPager& operator=(const LayerPager&) = delete;

  bool pages(int layer) const;
  // The layer's weights with its paged matrices in a read buffer, valid until release(layer).
  // Waits for the read; rethrows (std::runtime_error) a read that failed. One layer at a time.
  const LayerWeights& acquire(int layer);
  void release(int layer);
  PagerStats stats() const;
  const PagingPlan& plan() const { return plan_; }

 private:
  struct Piece {                 // one paged matrix (all of a 3-D tensor's experts)
    const uint8_t** target;      // its data pointer in the layer's view
    uint64_t file_offset, bytes;
    uint64_t buffer_offset;      // where its read starts in a buffer (kDirectAlign-aligned)
  };
  struct PagedLayer {
    int layer;
    LayerWeights view;  // the stage's weights of the layer, paged pointers aimed at a buffer
    std::vector<Piece> pieces;
  };
  enum class SlotState { Empty, Loading, Ready, InUse };
  struct Slot {
    AlignedBuffer buffer;
    int index = -1;  // into layers_
    SlotState state = SlotState::Empty;
  };

  int index_of(int layer) const;
  void request(int slot, int index);  // REQUIRES: mu_ held
  void read_loop();
  void read_layer(int slot);

  PagingPlan plan_;
  std::vector<PagedLayer> layers_;
  DirectReader reader_;
  Slot slots_[2];
  mutable std::mutex mu_;
  std::condition_variable work_, done_;
  std::deque<int> pending_;  // slots to read, in order
  bool stop_ = false;
  std::exception_ptr error_;
  PagerStats stats_;
  std::thread thread_;  // last: starts once everything above exists
};

}  // namespace hearth::runtime
