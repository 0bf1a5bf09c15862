// measure_gpu(): the planner's figures of a GPU, from the shaders a stage runs (gpu.h).
#include <algorithm>
#include <chrono>
#include <vector>

#include "runtime/gpu/gpu.h"
#include "runtime/gpu/vulkan_device.h"
#include "runtime/gpu/vulkan_matmul.h"

namespace hearth::runtime {

namespace {

constexpr int64_t kRowElements = 4096;  // a 7B-class model's rows
constexpr int kPrefillTokens = 64;
constexpr int kRepeats = 5;
constexpr uint64_t kCpuDeviceMatrixBytes = 2u << 20;

// Rows of `type` of kRowElements each, about `bytes` in all, of arbitrary bytes: a product's time
// does not depend on the values (a NaN scale costs what 1.0 does).
struct SyntheticMatrix {
  std::vector<uint8_t> data;
  WeightMatrix w;
  SyntheticMatrix(TensorType type, uint64_t bytes, int64_t n_in = kRowElements) {
    w.type = type;
    w.n_in = n_in;
    w.row_bytes = row_bytes(type, static_cast<uint64_t>(n_in));
    w.n_out = std::max<int64_t>(1, static_cast<int64_t>(bytes / w.row_bytes));
    data.resize(w.bytes());
    uint32_t x = 2463534242u;
    for (uint8_t& b : data) {  // xorshift32
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      b = static_cast<uint8_t>(x);
    }
    w.data = data.data();
  }
};

// The median seconds of one product of w over n_tokens, after one to warm up.
double product_seconds(VulkanMatmul& matmul, const WeightMatrix& w, int n_tokens) {
  std::vector<float> x(static_cast<size_t>(w.n_in * n_tokens), 0.5f), y(static_cast<size_t>(w.n_out * n_tokens));
  const MatmulTarget target{&w, y.data()};
  matmul.matmul(std::span(&target, 1), x.data(), n_tokens);
  std::vector<double> times;
  for (int r = 0; r < kRepeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    matmul.matmul(std::span(&target, 1), x.data(), n_tokens);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::nth_element(times.begin(), times.begin() + kRepeats / 2, times.end());
  return times[kRepeats / 2];
}

}  // namespace

GpuSpeeds measure_gpu(const std::string& choice, uint64_t matrix_bytes) {
  VulkanDevice device(parse_gpu_choice(choice));
  GpuSpeeds s;
  s.info = device.info();
  s.budget_bytes = default_gpu_budget(s.info.memory_bytes);
  // A CPU device (lavapipe) is measured as a functional check only: small matrices keep it quick.
  if (s.info.kind == "cpu") matrix_bytes = std::min<uint64_t>(matrix_bytes, kCpuDeviceMatrixBytes);
  // Each type on its own VulkanMatmul, so that one matrix at a time is on the GPU.
  for (const TensorType type : {TensorType::F32, TensorType::F16, TensorType::Q8_0, TensorType::Q4_0, TensorType::Q4_K,
                                TensorType::Q5_K, TensorType::Q6_K}) {
    VulkanMatmul matmul(device);
    const SyntheticMatrix m(type, matrix_bytes);
    matmul.upload(m.w);
    s.decode_bytes_per_s[std::string(tensor_type_name(type))] =
        static_cast<double>(m.w.bytes()) / product_seconds(matmul, m.w, 1);
    if (type == TensorType::Q8_0)
      s.prefill_flop_s =
          2.0 * static_cast<double>(m.w.n_in * m.w.n_out) * kPrefillTokens / product_seconds(matmul, m.w, kPrefillTokens);
  }
  VulkanMatmul matmul(device);
  const SyntheticMatrix tiny(TensorType::Q8_0, 0, 256);  // one row
  matmul.upload(tiny.w);
  s.submission_s = product_seconds(matmul, tiny.w, 1);
  return s;
}

}  // namespace hearth::runtime
