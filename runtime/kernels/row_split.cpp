#include "runtime/kernels/row_split.h"

#include <algorithm>
#include <stdexcept>

namespace hearth::runtime {

RowSplit::RowSplit(int64_t n_rows, int n_threads, int64_t granule) {
  if (n_rows < 0 || n_threads < 1 || granule < 1) throw std::invalid_argument("RowSplit: bad arguments");
  int64_t r = 0;
  while (r < n_rows) {
    const int64_t left = n_rows - r;
    // 1 / threads of the rows left: the first task takes a thread's equal share, the next ones
    // ever less, so whoever finishes first finds work until the last granules.
    int64_t take = std::max(left / n_threads / granule * granule, granule);
    if (left - take < granule) take = left;      // no task of a few rows after this one
    if (n_tasks_ == kMaxTasks - 1) take = left;  // the last slot takes the rest
    start_[static_cast<size_t>(n_tasks_++)] = r;
    r += std::min(take, left);
  }
  start_[static_cast<size_t>(n_tasks_)] = n_rows;
}

}  // namespace hearth::runtime
