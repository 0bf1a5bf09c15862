// Weight rows stored interleaved by eights, a layout chosen at load for kernels that take 8 rows
// in the lanes of one vector (Q4_0 and Q4_K, the AVX2 and AVX-512 tables).
//
// Why: a decode step streams every weight once, and the AVX2 Q4_K kernel over rows as the file
// stores them spent ~90 instructions per row and super-block (scales unpacked row by row, 8
// partial lanes per row added up at the end): instruction-bound below the memory's read rate.
// With 8 rows' bytes side by side, one 32-byte load holds 4 bytes of each row, the scales of 8
// rows unpack with a handful of vector operations, and each lane ends a block holding its row's
// exact integer sum: ~35 instructions per row and super-block, 1.9x the kernel's speed in cache
// and 1.5x from memory on one core (docs/performance.md). Q4_0's kernels transposed 8 rows per
// block in registers; now the bytes come that way. The results are the same bits (the same exact
// integers, then the same float operations per output; tests/interleaved_rows_test.cpp).
//
// The layout is a permutation of the matrix's bytes within each group of 8 rows, so it takes
// exactly the memory of the original and can be made in place (StageWeights::hold_in_memory).
#pragma once

#include <cstddef>
#include <cstdint>

#include "runtime/format/tensor_type.h"

namespace hearth::runtime {

// How a weight matrix's rows lie in memory.
enum class RowLayout : uint8_t {
  kRows,          // as the GGUF file stores them: row after row
  kInterleaved8,  // groups of 8 rows, each group super-block by super-block (below)
};

// Q4_K rows interleaved by eights. A group of 8 rows (8 x row_bytes bytes, where row r started)
// holds, for each super-block b in order, 1152 bytes (8 x 144):
//   [0, 16)      the 8 rows' d (f16), row 0 first
//   [16, 32)     their dmin
//   [32, 128)    the 12 scale bytes of each row as three 32-byte vectors: vector v holds bytes
//                4v..4v+3 of row r at 4r..4r+3
//   [128, 1152)  the 128 quant bytes of each row as 32 vectors: vector 8c + i holds bytes
//                32c + 4i .. 32c + 4i + 3 of row r at 4r..4r+3
// Row r of a matrix whose rows are interleaved is no longer at data + r * row_bytes: only the
// groups are (rows 8g..8g+7 start at data + 8g * row_bytes).
//
// Q4_0 rows interleaved by eights: for each block b in order, 144 bytes (8 x 18):
//   [0, 16)     the 8 rows' d (f16), row 0 first
//   [16, 144)   their 16 quant bytes as 4 vectors: vector i holds bytes 4i..4i+3 of row r at 4r
inline constexpr int kInterleavedRows = 8;
inline constexpr size_t kQ4_KInterleavedBlockBytes = kInterleavedRows * sizeof(BlockQ4_K);
inline constexpr size_t kQ4_0InterleavedBlockBytes = kInterleavedRows * sizeof(BlockQ4_0);

// Whether `type` has an interleaved layout at all (Q4_0, Q4_K).
bool interleavable(TensorType type);

// Rewrites one group of 8 rows of an interleavable type (at `rows`, row_bytes each) into the
// interleaved layout, in place; `scratch` holds 8 x row_bytes bytes.
void interleave_rows(TensorType type, uint8_t* rows, size_t row_bytes, uint8_t* scratch);
// The inverse: one interleaved group back to 8 rows (tests, and anyone who needs the rows again).
void deinterleave_rows(TensorType type, uint8_t* rows, size_t row_bytes, uint8_t* scratch);

}  // namespace hearth::runtime
