// A persistent pool of worker threads for data-parallel loops (rows of a matmul, attention heads).
//
//   ThreadPool pool(2);
//   pool.run(n_chunks, [&](int i) { ...chunk i... });   // the calling thread works too
//
// Workers spin briefly before sleeping, because a decode step issues a few hundred short
// parallel loops and a condition-variable wake-up per loop would cost more than the work.
// Thread safety: run() may be called from one thread at a time.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
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
  void run(int n_tasks, const std::function<void(int)>& fn);

 private:
  void worker_loop();
  void drain();

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  const std::function<void(int)>* job_ = nullptr;
  int n_tasks_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> next_task_{0};
  std::atomic<int> busy_workers_{0};
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;
};

// Number of hardware threads, at least 1.
int hardware_threads();

}  // namespace hearth::runtime
