// How a matmul's output rows are cut into tasks for the thread pool: "guided" scheduling, each
// task a share of the rows not yet assigned, so tasks start large and shrink to a small granule.
//
// Why not equal tasks: each task starts a new stream through the weights, and decode runs about
// a hundred matmuls per token. With 8 equal tasks per thread (the split before this one), decode
// of a TinyLlama-shaped Q4_K model at 2 threads read its weights at 0.75 of the machine's read
// bandwidth, and at 0.80 with these tasks (medians of 8-10 runs, docs/performance.md). Equal tasks
// of one per thread would leave a whole share waiting when the OS deschedules a thread (another
// process, a phone's governor); here the shrinking tasks let the thread that runs take over what
// is left (with a busy loop on one of the 2 cores, decode was no slower than with 8 equal tasks).
#pragma once

#include <array>
#include <cstdint>
#include <utility>

namespace hearth::runtime {

class RowSplit {
 public:
  static constexpr int kMaxTasks = 256;
  // n_rows rows over n_threads threads; every task but the last holds a multiple of `granule`
  // rows (whole register tiles; kernels may pair rows, so even).
  RowSplit() = default;  // no rows
  RowSplit(int64_t n_rows, int n_threads, int64_t granule = 16);
  int tasks() const { return n_tasks_; }
  // Rows [first, second) of task i.
  std::pair<int64_t, int64_t> rows(int task) const { return {start_[task], start_[task + 1]}; }

 private:
  std::array<int64_t, kMaxTasks + 1> start_{};
  int n_tasks_ = 0;
};

}  // namespace hearth::runtime
