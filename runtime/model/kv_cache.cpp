#include "runtime/model/kv_cache.h"

#include <algorithm>
#include <cstddef>
#include <new>
#include <stdexcept>
#include <string>

namespace hearth::runtime {

namespace {

// Both halves of a conversation's cache, or an error that says what was asked for (a huge
// --ctx used to surface as "std::bad_alloc").
HugePageVector<uint8_t> allocate(size_t n, size_t n_layers, int n_ctx) {
  try {
    return HugePageVector<uint8_t>(n);
  } catch (const std::bad_alloc&) {
    throw std::runtime_error("the KV cache of one conversation (" + std::to_string(n_layers) + " layers, " +
                             std::to_string(n_ctx) + " tokens, " + std::to_string(2 * n / 1000000) +
                             " MB) does not fit in this device's memory: use a smaller context (--ctx)");
  }
}

// Bytes per half: the sum over layers of their rows (each layer's start and row size recorded).
size_t layout(const std::vector<int>& rows, const std::vector<int>& dims, TensorType type, std::vector<size_t>& row_bytes,
              std::vector<size_t>& starts) {
  size_t n = 0;
  for (size_t l = 0; l < dims.size(); ++l) {
    const int d = dims[l];
    if (type == TensorType::Q8_0 && d % kQ8_0Block != 0)
      throw std::invalid_argument("a q8_0 KV cache needs rows of a multiple of 32 elements, not " + std::to_string(d));
    starts.push_back(n);
    row_bytes.push_back(kv_row_bytes(type, d));
    n += static_cast<size_t>(rows[l]) * row_bytes.back();
  }
  return n;
}

}  // namespace

KvCache::KvCache(int n_ctx, const std::vector<int>& layer_kv_dims, const std::vector<int64_t>& layer_state_floats,
                 TensorType type, const std::vector<int>& layer_rows)
    : n_ctx_(n_ctx), type_(type), kv_dims_(layer_kv_dims) {
  if (!is_kv_type(type)) throw std::invalid_argument(kv_type_unfit(type, 0));
  if (!layer_rows.empty() && layer_rows.size() != layer_kv_dims.size())
    throw std::invalid_argument("KvCache: rows for " + std::to_string(layer_rows.size()) + " layers, dims for " +
                                std::to_string(layer_kv_dims.size()));
  rows_ = layer_rows.empty() ? std::vector<int>(kv_dims_.size(), n_ctx) : layer_rows;
  for (int& r : rows_) r = std::clamp(r, 1, n_ctx);
  const size_t n = layout(rows_, kv_dims_, type, row_bytes_, layer_start_);
  k_ = allocate(n, kv_dims_.size(), n_ctx);
  v_ = allocate(n, kv_dims_.size(), n_ctx);
  size_t states = 0;
  for (int64_t f : layer_state_floats) {
    state_start_.push_back(states);
    state_size_.push_back(static_cast<size_t>(f));
    states += static_cast<size_t>(f);
  }
  state_.assign(states, 0.f);
}

void KvCache::expect_checkpoint(int len) {
  saved_.resize(state_.size());
  checkpoint_ = len;
}

void KvCache::save_checkpoint_now(int len) {
  saved_ = state_;
  checkpoint_ = len;
}

void KvCache::save_checkpoint(int l, int pos) {
  if (pos + 1 != checkpoint_) return;
  const auto layer = static_cast<size_t>(l);
  const auto from = state_.begin() + static_cast<std::ptrdiff_t>(state_start_[layer]);
  std::copy(from, from + static_cast<std::ptrdiff_t>(state_size_[layer]),
            saved_.begin() + static_cast<std::ptrdiff_t>(state_start_[layer]));
}

KvRows KvCache::rows_of(const HugePageVector<uint8_t>& half, int l) const {
  const auto layer = static_cast<size_t>(l);
  const int rows = rows_[layer];
  return {half.data() + layer_start_[layer], row_bytes_[layer], type_, rows < n_ctx_ ? rows : 0};
}

void KvCache::store(int l, int pos, const float* key, const float* value, const KernelTable& k) {
  const auto layer = static_cast<size_t>(l);
  const size_t at = layer_start_[layer] + static_cast<size_t>(pos % rows_[layer]) * row_bytes_[layer];
  const int n = kv_dims_[layer];
  switch (type_) {
    case TensorType::F16:
      quantize_row(TensorType::F16, key, &k_[at], n);
      quantize_row(TensorType::F16, value, &v_[at], n);
      break;
    case TensorType::Q8_0:
      k.quantize_q8_0(key, reinterpret_cast<BlockQ8_0*>(&k_[at]), n);
      k.quantize_q8_0(value, reinterpret_cast<BlockQ8_0*>(&v_[at]), n);
      break;
    default:
      std::copy_n(key, n, reinterpret_cast<float*>(&k_[at]));
      std::copy_n(value, n, reinterpret_cast<float*>(&v_[at]));
  }
}

}  // namespace hearth::runtime
