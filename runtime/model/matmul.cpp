#include "runtime/model/matmul.h"

#include <algorithm>
#include <array>
#include <stdexcept>

#include "runtime/model/ops.h"
#include "runtime/kernels/row_split.h"

namespace hearth::runtime {

namespace {

// Bytes of activations per gemm call inside a task: each call streams the task's rows from
// memory again. Quantized activations meet tiles that keep a few rows in L1 while every token
// passes, so theirs must stay in L2: about 256 KiB. Float activations (f32, and f16 for f16
// weights) meet the SIMD tables' tokens-outer tiles, which keep a block of rows in L2 themselves while the tokens
// stream past from L3 (kernel_tiles.h): 2 MiB of them, the weights streamed 8 times less often.
// TinyLlama f16, 2 threads, 2 MiB against 256 KiB: pp512 1.035x AVX2 and 1.02x AVX-512, pp2048
// 1.02-1.04x; without a limit pp512 gained as much but pp2048 ran 0.88x (23 MB of activations
// per call of the widest matrix, past this machine's 32 MB L3 beside the weights).
constexpr size_t kQuantizedActivationBudget = size_t{256} << 10;
constexpr size_t kFloatActivationBudget = size_t{2} << 20;

// The input of one matmul as its gemm kernel reads it, for every token.
struct Activations {
  const void* x;
  size_t stride;  // bytes between tokens
  size_t budget;  // bytes of them per gemm call
};

// Activations are shared by weights that read them the same way: the same dot type, and the
// same packed layout if the table packs (which it may do per weight type).
TensorType activation_key(const KernelTable& k, TensorType weight, int64_t n_in) {
  return k.packed_bytes(weight, static_cast<int>(n_in)) > 0 ? weight : dot_type(weight);
}

// Converts x for `weight` (all tokens, in parallel over tokens): to f16 for f16 weights, quantized
// to the dot type and packed if the table packs; f32 is used as is.
Activations prepare(TensorType weight, const float* x, int64_t n_in, int n_tokens, MatmulScratch& scratch, ThreadPool& pool,
                    const KernelTable& k) {
  const TensorType dt = dot_type(weight);
  if (dt == TensorType::F32) return {x, static_cast<size_t>(n_in) * sizeof(float), kFloatActivationBudget};
  const int n = static_cast<int>(n_in);
  const size_t packed = k.packed_bytes(weight, n);
  const auto one = [&](int t) {
    const float* xt = x + static_cast<int64_t>(t) * n_in;
    const void* blocks;
    if (dt == TensorType::F16) {
      k.f32_to_f16(xt, scratch.f16(t, n_in), n);
      return;
    }
    if (dt == TensorType::Q8_0) {
      k.quantize_q8_0(xt, scratch.q8(t, n_in), n);
      blocks = scratch.q8(t, n_in);
    } else {
      k.quantize_q8_k(xt, scratch.q8k(t, n_in), n);
      blocks = scratch.q8k(t, n_in);
    }
    if (packed > 0) k.pack(weight, blocks, scratch.packed(t, packed), n);
  };
  if (n_tokens == 1) one(0);
  else pool.run(n_tokens, one);
  if (dt == TensorType::F16)
    return {scratch.f16(0, n_in), static_cast<size_t>(MatmulScratch::f16_stride(n_in)) * sizeof(uint16_t),
            kFloatActivationBudget};
  if (packed > 0) return {scratch.packed(0, packed), packed, kQuantizedActivationBudget};
  if (dt == TensorType::Q8_0)
    return {scratch.q8(0, n_in), static_cast<size_t>(n_in / kQ8_0Block) * sizeof(BlockQ8_0), kQuantizedActivationBudget};
  return {scratch.q8k(0, n_in), static_cast<size_t>(n_in / kQK) * sizeof(BlockQ8_K), kQuantizedActivationBudget};
}

GemmKernel kernel_of(const KernelTable& k, const WeightMatrix& w) {
  const GemmKernel g = gemm_kernel(k, w.type, w.layout);
  if (g == nullptr)
    throw std::runtime_error("no " + std::string(k.name) + " kernel for weights of type " +
                             std::string(tensor_type_name(w.type)) +
                             (w.layout == RowLayout::kRows ? "" : " with interleaved rows"));
  return g;
}

// Rows [r0, r1) of w for every token, in token chunks that fit the activation budget.
void rows_times_tokens(const WeightMatrix& w, GemmKernel g, const Activations& a, int64_t r0, int64_t r1, int n_tokens,
                       float* y) {
  if (w.layout == RowLayout::kInterleaved8 && (r0 % kInterleavedRows != 0 || r1 % kInterleavedRows != 0))
    throw std::logic_error("matmul: a task of interleaved rows starts or ends inside a group");
  const int chunk = static_cast<int>(std::clamp<size_t>(a.budget / a.stride, 1, static_cast<size_t>(n_tokens)));
  for (int t = 0; t < n_tokens; t += chunk) {
    const int nt = std::min(chunk, n_tokens - t);
    g(w.row(r0), w.row_bytes, static_cast<int>(r1 - r0), static_cast<const uint8_t*>(a.x) + static_cast<size_t>(t) * a.stride,
      a.stride, nt, static_cast<int>(w.n_in), y + static_cast<int64_t>(t) * w.n_out + r0, static_cast<size_t>(w.n_out));
  }
}

}  // namespace

void gated(FfnActivation activation, float* gate, float* up, const float* gate_bias, const float* up_bias, size_t n) {
  if (gate_bias)
    for (size_t i = 0; i < n; ++i) gate[i] += gate_bias[i];
  if (up_bias)
    for (size_t i = 0; i < n; ++i) up[i] += up_bias[i];
  switch (activation) {
    case FfnActivation::SiLU: swiglu(gate, up, n); break;
    case FfnActivation::GeluTanh: geglu(gate, up, n); break;
    case FfnActivation::SwigluOai: swiglu_oai(gate, up, n); break;
  }
}

MatmulScratch::MatmulScratch(int max_tokens, int64_t max_n_in, bool f16_weights)
    : q8_(static_cast<size_t>(max_tokens) * static_cast<size_t>(max_n_in / kQ8_0Block + 1)),
      q8k_(static_cast<size_t>(max_tokens) * static_cast<size_t>(max_n_in / kQK + 1)),
      f16_(f16_weights ? static_cast<size_t>(max_tokens) * static_cast<size_t>(f16_stride(max_n_in)) : 0) {
  size_t packed = 0;
  for (const KernelTable* k : supported_kernels())
    for (TensorType t : kQuantizedWeightTypes)
      packed = std::max(packed, k->packed_bytes(t, static_cast<int>(max_n_in)));
  packed_.resize(static_cast<size_t>(max_tokens) * packed);
}

void matmul(const WeightMatrix& w, const float* x, int n_tokens, float* y, MatmulScratch& scratch, ThreadPool& pool,
            const KernelTable& k) {
  const MatmulTarget one[] = {{&w, y}};
  matmul_many(one, x, n_tokens, scratch, pool, k);
}

void matmul_many(std::span<const MatmulTarget> targets, const float* x, int n_tokens, MatmulScratch& scratch, ThreadPool& pool,
                 const KernelTable& k) {
  constexpr size_t kMax = 4;
  if (targets.empty() || targets.size() > kMax) throw std::invalid_argument("matmul_many takes 1 to 4 weights");
  const int64_t n_in = targets[0].w->n_in;
  const TensorType key = activation_key(k, targets[0].w->type, n_in);
  for (const MatmulTarget& t : targets) {
    if (t.w->n_in != n_in) throw std::invalid_argument("matmul_many: weights of different input sizes");
    if (activation_key(k, t.w->type, n_in) != key) {
      // Mixed weight types that read the input differently: one pass each.
      for (const MatmulTarget& one : targets) matmul_many({&one, 1}, x, n_tokens, scratch, pool, k);
      return;
    }
  }
  const Activations act = prepare(targets[0].w->type, x, n_in, n_tokens, scratch, pool, k);

  // Tasks are numbered through the targets in order: first[i] is target i's first task.
  std::array<int, kMax + 1> first{};
  std::array<RowSplit, kMax> split;
  std::array<GemmKernel, kMax> gemm{};
  for (size_t i = 0; i < targets.size(); ++i) {
    const WeightMatrix& w = *targets[i].w;
    split[i] = RowSplit(w.n_out, pool.size());
    first[i + 1] = first[i] + split[i].tasks();
    gemm[i] = kernel_of(k, w);
  }
  pool.run(first[targets.size()], [&](int task) {
    size_t i = 0;
    while (task >= first[i + 1]) ++i;
    const auto [r0, r1] = split[i].rows(task - first[i]);
    rows_times_tokens(*targets[i].w, gemm[i], act, r0, r1, n_tokens, targets[i].y);
  });
}

void matmul_swiglu(const WeightMatrix& gate, const WeightMatrix& up, const float* x, int n_tokens, float* gate_out, float* up_out,
                   MatmulScratch& scratch, ThreadPool& pool, const KernelTable& k, FfnActivation activation,
                   const float* gate_bias, const float* up_bias) {
  if (gate.n_in != up.n_in || gate.n_out != up.n_out) throw std::invalid_argument("matmul_swiglu: gate and up differ in shape");
  const int64_t n_in = gate.n_in, n_out = gate.n_out;
  const auto rows_of = [&](int t, int64_t r0, int64_t r1) {
    gated(activation, gate_out + t * n_out + r0, up_out + t * n_out + r0, gate_bias ? gate_bias + r0 : nullptr,
          up_bias ? up_bias + r0 : nullptr, static_cast<size_t>(r1 - r0));
  };
  if (activation_key(k, gate.type, n_in) != activation_key(k, up.type, n_in)) {
    matmul(gate, x, n_tokens, gate_out, scratch, pool, k);
    matmul(up, x, n_tokens, up_out, scratch, pool, k);
    for (int t = 0; t < n_tokens; ++t) rows_of(t, 0, n_out);
    return;
  }
  const Activations act = prepare(gate.type, x, n_in, n_tokens, scratch, pool, k);
  const GemmKernel gg = kernel_of(k, gate), gu = kernel_of(k, up);
  const RowSplit split(n_out, pool.size());
  pool.run(split.tasks(), [&](int task) {
    const auto [r0, r1] = split.rows(task);
    rows_times_tokens(gate, gg, act, r0, r1, n_tokens, gate_out);
    rows_times_tokens(up, gu, act, r0, r1, n_tokens, up_out);
    for (int t = 0; t < n_tokens; ++t) rows_of(t, r0, r1);
  });
}

void matmul_experts(std::span<const ExpertTarget> experts, const float* x, MatmulScratch& scratch, ThreadPool& pool,
                    const KernelTable& k, FfnActivation activation) {
  if (experts.empty()) return;
  const ExpertTarget& e0 = experts[0];
  const int64_t n_in = e0.gate->n_in, n_ff = e0.gate->n_out;
  if (activation_key(k, e0.gate->type, n_in) != activation_key(k, e0.up->type, n_in))
    throw std::invalid_argument("matmul_experts: gate and up read their input differently");
  const auto n = static_cast<int>(experts.size());

  // Gate and up of every expert over the one input: tasks numbered expert by expert.
  const Activations act = prepare(e0.gate->type, x, n_in, 1, scratch, pool, k);
  const GemmKernel gg = kernel_of(k, *e0.gate), gu = kernel_of(k, *e0.up), gd = kernel_of(k, *e0.down);
  const RowSplit ff_split(n_ff, pool.size());
  pool.run(n * ff_split.tasks(), [&](int task) {
    const ExpertTarget& e = experts[static_cast<size_t>(task / ff_split.tasks())];
    const auto [r0, r1] = ff_split.rows(task % ff_split.tasks());
    rows_times_tokens(*e.gate, gg, act, r0, r1, 1, e.gate_out);
    rows_times_tokens(*e.up, gu, act, r0, r1, 1, e.up_out);
    gated(activation, e.gate_out + r0, e.up_out + r0, e.gate_bias ? e.gate_bias + r0 : nullptr,
          e.up_bias ? e.up_bias + r0 : nullptr, static_cast<size_t>(r1 - r0));
  });

  // Each down projection reads its own expert's hidden row: converted together, as the rows of
  // n "tokens", then each expert's task reads its row.
  const Activations hidden = prepare(e0.down->type, e0.gate_out, n_ff, n, scratch, pool, k);
  const RowSplit out_split(e0.down->n_out, pool.size());
  pool.run(n * out_split.tasks(), [&](int task) {
    const int i = task / out_split.tasks();
    const ExpertTarget& e = experts[static_cast<size_t>(i)];
    const auto [r0, r1] = out_split.rows(task % out_split.tasks());
    const Activations own{static_cast<const uint8_t*>(hidden.x) + static_cast<size_t>(i) * hidden.stride, hidden.stride};
    rows_times_tokens(*e.down, gd, own, r0, r1, 1, e.y);
  });
}

}  // namespace hearth::runtime
