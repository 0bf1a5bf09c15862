#include "runtime/kernels/thread_pool.h"

#include <chrono>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace hearth::runtime {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// How long an idle worker spins before it sleeps. Long enough to bridge the gap between two
// loops of one decode step (a few microseconds) and between two decode steps (sampling, tens of
// microseconds); short, because on a shared device a spinning worker burns the CPU share that the
// scheduler then takes from the thread doing the work.
constexpr auto kSpin = std::chrono::microseconds(100);

// Pauses the waiting caller spins before it yields its core, in case the thread it waits for
// is runnable on it.
constexpr int kSpinsBeforeYield = 2000;

constexpr uint32_t generation_of(uint64_t state) { return static_cast<uint32_t>(state >> 32); }
constexpr uint32_t index_of(uint64_t state) { return static_cast<uint32_t>(state); }

}  // namespace

int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

ThreadPool::ThreadPool(int n_threads) {
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::work(uint32_t gen) {
  const Slot& slot = slots_[gen & 1];
  uint64_t s = state_.load(std::memory_order_acquire);
  for (;;) {
    if (generation_of(s) != gen) return;
    // Read before the claim; the claim's success proves they belong to `gen` (its slot is only
    // rewritten after the next generation is published, which would fail the exchange).
    const int n = slot.n_tasks.load(std::memory_order_relaxed);
    void* fn = slot.fn.load(std::memory_order_relaxed);
    const Call call = slot.call.load(std::memory_order_relaxed);
    const uint32_t i = index_of(s);
    if (static_cast<int>(i) >= n) return;
    if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    try {
      call(fn, static_cast<int>(i));
    } catch (...) {
      std::lock_guard lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    done_.fetch_add(1, std::memory_order_acq_rel);
    s = state_.load(std::memory_order_acquire);
  }
}

void ThreadPool::run_tasks(int n_tasks, void* fn, Call call) {
  if (n_tasks <= 0) return;
  if (workers_.empty() || n_tasks == 1) {
    for (int i = 0; i < n_tasks; ++i) call(fn, i);
    return;
  }
  // Every task of the previous generation has finished, so nothing reads done_ or claims.
  const uint32_t gen = generation_of(state_.load(std::memory_order_relaxed)) + 1;
  Slot& slot = slots_[gen & 1];
  slot.fn.store(fn, std::memory_order_relaxed);
  slot.call.store(call, std::memory_order_relaxed);
  slot.n_tasks.store(n_tasks, std::memory_order_relaxed);
  done_.store(0, std::memory_order_relaxed);
  error_ = nullptr;
  state_.store(static_cast<uint64_t>(gen) << 32, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard lock(mutex_);
    wake_.notify_all();
  }
  work(gen);
  for (int spins = 0; done_.load(std::memory_order_acquire) != n_tasks;) {
    cpu_relax();
    if (++spins % kSpinsBeforeYield == 0) std::this_thread::yield();
  }
  if (error_) std::rethrow_exception(error_);
}

void ThreadPool::worker_loop() {
  uint32_t seen = 0;
  for (;;) {
    // Spin, then sleep, until a new generation (a new job) or stop is published.
    const auto spin_until = std::chrono::steady_clock::now() + kSpin;
    int spins = 0;
    uint32_t gen;
    while ((gen = generation_of(state_.load(std::memory_order_acquire))) == seen) {
      if (stop_.load(std::memory_order_relaxed)) return;
      cpu_relax();
      if (++spins % 64 == 0 && std::chrono::steady_clock::now() > spin_until) {
        std::unique_lock lock(mutex_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, [&] { return stop_.load() || generation_of(state_.load(std::memory_order_seq_cst)) != seen; });
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
      }
    }
    seen = gen;
    work(gen);
  }
}

}  // namespace hearth::runtime
