// A persistent pool of worker threads for data-parallel loops (rows of a matmul, attention heads).
//
//   ThreadPool pool(2);
//   pool.run(n_chunks, [&](int i) { ...chunk i... });   // the calling thread works too
//
// A loop ends when its last task has finished, not when every worker has checked in: a worker
// that the OS has descheduled (another process on a small device, a phone's governor) costs
// that loop nothing unless it holds a task, whereas a barrier on all workers would make every
// one of a decode step's hundred loops wait for it. Tasks are claimed one at a time, so the
// threads that do run share the work between them.
//
// Idle workers spin briefly (100 us) before sleeping, because a decode step issues about a hundred
// short loops and a condition-variable wake-up per loop would cost more than the work. run() takes any
// callable by reference (no std::function), so a loop allocates nothing.
// Thread safety: run() may be called from one thread at a time.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace hearth::runtime {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  // Runs fn(i) for every i in [0, n_tasks); returns when all have finished. Exceptions thrown by
  // fn are rethrown here (the first one).
  template <class F>
  void run(int n_tasks, F&& fn) {
    using Fn = std::remove_reference_t<F>;
    run_tasks(n_tasks, const_cast<void*>(static_cast<const void*>(&fn)), [](void* f, int i) { (*static_cast<Fn*>(f))(i); });
  }

 private:
  using Call = void (*)(void*, int);
  // The job of one generation. Two slots alternate, so a late worker still reading the previous
  // job's slot never sees it rewritten under it (a slot is reused two generations later, and a
  // claim validates its generation first).
  struct Slot {
    std::atomic<void*> fn{nullptr};
    std::atomic<Call> call{nullptr};
    std::atomic<int> n_tasks{0};
  };
  void run_tasks(int n_tasks, void* fn, Call call);
  // Claims and runs tasks of generation `gen` until none is left.
  void work(uint32_t gen);
  void worker_loop();

  std::vector<std::thread> workers_;
  Slot slots_[2];
  std::mutex mutex_;
  std::condition_variable wake_;
  std::exception_ptr error_;  // guarded by mutex_
  std::atomic<bool> stop_{false};
  // Each on its own cache line: workers poll state_ while tasks complete into done_.
  // state_ = generation << 32 | next task index.
  alignas(64) std::atomic<uint64_t> state_{0};
  alignas(64) std::atomic<int> done_{0};
  alignas(64) std::atomic<int> sleepers_{0};
};

// Number of hardware threads, at least 1.
int hardware_threads();

}  // namespace hearth::runtime
