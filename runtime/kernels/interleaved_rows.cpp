#include "runtime/kernels/interleaved_rows.h"

#include <cstring>
#include <stdexcept>
#include <string>

namespace hearth::runtime {

namespace {

constexpr size_t kHeaderBytes = 128;  // d, dmin, the scale vectors
static_assert(kHeaderBytes + kInterleavedRows * sizeof(BlockQ4_K::qs) == kQ4_KInterleavedBlockBytes);
static_assert(16 + kInterleavedRows * sizeof(BlockQ4_0::qs) == kQ4_0InterleavedBlockBytes);

// Calls copy(offset_in_rows, offset_in_group, bytes) for every piece of the permutation of one
// group: the one description both directions use.
template <class F>
void q4_0_pieces(size_t row_bytes, F copy) {
  const size_t nb = row_bytes / sizeof(BlockQ4_0);
  for (size_t b = 0; b < nb; ++b) {
    const size_t group = b * kQ4_0InterleavedBlockBytes;
    for (int r = 0; r < kInterleavedRows; ++r) {
      const size_t row = static_cast<size_t>(r) * row_bytes + b * sizeof(BlockQ4_0);
      copy(row + offsetof(BlockQ4_0, d), group + static_cast<size_t>(2 * r), 2);
      for (size_t i = 0; i < 4; ++i)
        copy(row + offsetof(BlockQ4_0, qs) + 4 * i, group + 16 + 32 * i + static_cast<size_t>(4 * r), 4);
    }
  }
}

template <class F>
void q4_k_pieces(size_t row_bytes, F copy) {
  const size_t nb = row_bytes / sizeof(BlockQ4_K);
  for (size_t b = 0; b < nb; ++b) {
    const size_t group = b * kQ4_KInterleavedBlockBytes;
    for (int r = 0; r < kInterleavedRows; ++r) {
      const size_t row = static_cast<size_t>(r) * row_bytes + b * sizeof(BlockQ4_K);
      const auto r2 = static_cast<size_t>(2 * r), r4 = static_cast<size_t>(4 * r);
      copy(row + offsetof(BlockQ4_K, d), group + r2, 2);
      copy(row + offsetof(BlockQ4_K, dmin), group + 16 + r2, 2);
      for (size_t v = 0; v < 3; ++v) copy(row + offsetof(BlockQ4_K, scales) + 4 * v, group + 32 + 32 * v + r4, 4);
      for (size_t c = 0; c < 4; ++c)
        for (size_t i = 0; i < 8; ++i)
          copy(row + offsetof(BlockQ4_K, qs) + 32 * c + 4 * i, group + kHeaderBytes + 32 * (8 * c + i) + r4, 4);
    }
  }
}

template <class F>
void pieces(TensorType type, size_t row_bytes, F copy) {
  if (type == TensorType::Q4_0) q4_0_pieces(row_bytes, copy);
  else if (type == TensorType::Q4_K) q4_k_pieces(row_bytes, copy);
  else throw std::invalid_argument("no interleaved layout for " + std::string(tensor_type_name(type)) + " rows");
}

}  // namespace

bool interleavable(TensorType type) { return type == TensorType::Q4_0 || type == TensorType::Q4_K; }

void interleave_rows(TensorType type, uint8_t* rows, size_t row_bytes, uint8_t* scratch) {
  std::memcpy(scratch, rows, kInterleavedRows * row_bytes);
  pieces(type, row_bytes, [&](size_t from, size_t to, size_t n) { std::memcpy(rows + to, scratch + from, n); });
}

void deinterleave_rows(TensorType type, uint8_t* rows, size_t row_bytes, uint8_t* scratch) {
  std::memcpy(scratch, rows, kInterleavedRows * row_bytes);
  pieces(type, row_bytes, [&](size_t from, size_t to, size_t n) { std::memcpy(rows + from, scratch + to, n); });
}

}  // namespace hearth::runtime
