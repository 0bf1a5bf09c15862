#include "runtime/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <mutex>

namespace hearth::runtime {

namespace {

// Rows per task: enough tasks for the pool to balance, few enough that the per-task overhead
// stays small against a row's work.
int64_t rows_per_task(int64_t n_out, int n_threads) {
  return std::max<int64_t>(16, (n_out + n_threads * 8 - 1) / (n_threads * 8));
}

// OpenBLAS runs inside our own pool's tasks, one slice of rows each, so its own threads would
// only compete with ours.
void single_thread_blas() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

// Batches at least this large go to sgemm for f32 weights; below it, the dot kernels are faster.
constexpr int kSgemmMinTokens = 8;

// x in the weight's dot type: f32, Q8_0 or Q8_K blocks.
float dot_row(const WeightMatrix& w, int64_t r, const float* x, const void* xq, const KernelTable& k) {
  const int n = static_cast<int>(w.n_in);
  switch (w.type) {
    case TensorType::F32: return k.dot_f32(reinterpret_cast<const float*>(w.row(r)), x, n);
    case TensorType::F16: return k.dot_f16(reinterpret_cast<const uint16_t*>(w.row(r)), x, n);
    case TensorType::BF16: return k.dot_bf16(reinterpret_cast<const uint16_t*>(w.row(r)), x, n);
    case TensorType::Q8_0: return k.dot_q8_0(reinterpret_cast<const BlockQ8_0*>(w.row(r)), static_cast<const BlockQ8_0*>(xq), n / kQ8_0Block);
    case TensorType::Q4_0: return k.dot_q4_0(reinterpret_cast<const BlockQ4_0*>(w.row(r)), static_cast<const BlockQ8_0*>(xq), n / kQ4_0Block);
    case TensorType::Q5_0: return k.dot_q5_0(reinterpret_cast<const BlockQ5_0*>(w.row(r)), static_cast<const BlockQ8_0*>(xq), n / kQ5_0Block);
    case TensorType::Q4_K: return k.dot_q4_k(reinterpret_cast<const BlockQ4_K*>(w.row(r)), static_cast<const BlockQ8_K*>(xq), n / kQK);
    case TensorType::Q5_K: return k.dot_q5_k(reinterpret_cast<const BlockQ5_K*>(w.row(r)), static_cast<const BlockQ8_K*>(xq), n / kQK);
    case TensorType::Q6_K: return k.dot_q6_k(reinterpret_cast<const BlockQ6_K*>(w.row(r)), static_cast<const BlockQ8_K*>(xq), n / kQK);
    default: return 0.f;  // unreachable: StageWeights refuses other types
  }
}

}  // namespace

MatmulScratch::MatmulScratch(int max_tokens, int64_t max_n_in)
    : q8_(static_cast<size_t>(max_tokens) * static_cast<size_t>(max_n_in / kQ8_0Block + 1)),
      q8k_(static_cast<size_t>(max_tokens) * static_cast<size_t>(max_n_in / kQK + 1)) {}

void matmul(const WeightMatrix& w, const float* x, int n_tokens, float* y, MatmulScratch& scratch,
            ThreadPool& pool, const KernelTable& k) {
  const int64_t per_task = rows_per_task(w.n_out, pool.size());
  const int n_tasks = static_cast<int>((w.n_out + per_task - 1) / per_task);

  if (w.type == TensorType::F32 && n_tokens >= kSgemmMinTokens) {
    single_thread_blas();
    pool.run(n_tasks, [&](int task) {
      const int64_t r0 = task * per_task, r1 = std::min(w.n_out, r0 + per_task);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n_tokens, static_cast<int>(r1 - r0),
                  static_cast<int>(w.n_in), 1.f, x, static_cast<int>(w.n_in),
                  reinterpret_cast<const float*>(w.row(r0)), static_cast<int>(w.n_in), 0.f, y + r0,
                  static_cast<int>(w.n_out));
    });
    return;
  }

  const TensorType xt_type = dot_type(w.type);
  const auto x_of = [&](int t) -> const void* {
    switch (xt_type) {
      case TensorType::Q8_0: return scratch.q8(t, w.n_in);
      case TensorType::Q8_K: return scratch.q8k(t, w.n_in);
      default: return nullptr;
    }
  };
  if (xt_type == TensorType::Q8_0)
    pool.run(n_tokens, [&](int t) { k.quantize_q8_0(x + t * w.n_in, scratch.q8(t, w.n_in), static_cast<int>(w.n_in)); });
  else if (xt_type == TensorType::Q8_K)
    pool.run(n_tokens, [&](int t) { k.quantize_q8_k(x + t * w.n_in, scratch.q8k(t, w.n_in), static_cast<int>(w.n_in)); });
  pool.run(n_tasks, [&](int task) {
    const int64_t r0 = task * per_task, r1 = std::min(w.n_out, r0 + per_task);
    // Tokens in the inner loop: a task's rows stay in cache while every token passes over them.
    for (int t = 0; t < n_tokens; ++t) {
      const float* xt = x + t * w.n_in;
      const void* xq = x_of(t);
      float* yt = y + t * w.n_out;
      for (int64_t r = r0; r < r1; ++r) yt[r] = dot_row(w, r, xt, xq, k);
    }
  });
}

}  // namespace hearth::runtime
