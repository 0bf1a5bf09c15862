#include "runtime/kernels/interleaved_rows.h"

#include <cstring>

namespace hearth::runtime {

namespace {

constexpr size_t kHeaderBytes = 128;  // d, dmin, the scale vectors
static_assert(kHeaderBytes + kInterleavedRows * sizeof(BlockQ4_K::qs) == kQ4_KInterleavedBlockBytes);

// Calls copy(block_offset_in_row, interleaved_offset_in_group, bytes) for every piece of the
// permutation of one group: the one description both directions use.
template <class F>
void for_each_piece(size_t row_bytes, F copy) {
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

}  // namespace

bool interleavable(TensorType type) { return type == TensorType::Q4_K; }

void interleave_q4_k(uint8_t* rows, size_t row_bytes, uint8_t* scratch) {
  const size_t bytes = kInterleavedRows * row_bytes;
  std::memcpy(scratch, rows, bytes);
  for_each_piece(row_bytes, [&](size_t from, size_t to, size_t n) { std::memcpy(rows + to, scratch + from, n); });
}

void deinterleave_q4_k(uint8_t* rows, size_t row_bytes, uint8_t* scratch) {
  const size_t bytes = kInterleavedRows * row_bytes;
  std::memcpy(scratch, rows, bytes);
  for_each_piece(row_bytes, [&](size_t from, size_t to, size_t n) { std::memcpy(rows + from, scratch + to, n); });
}

}  // namespace hearth::runtime
