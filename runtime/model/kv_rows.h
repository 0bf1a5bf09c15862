// The cached keys (or values) of one layer as attention reads them: one row per position, stored
// as f32, f16 or q8_0 (the cache's type), and read back a tile of positions at a time as f32
// (an f16 cache is read where it lies where the kernel table has kernels for halves).
//
// Reading back is exact (an f16 or a q8_0 element is a float), so attention over an f16 cache
// computes exactly what the f32 path computes on the rounded keys and values, with the same
// batch invariance: a row's result does not depend on the tile it was read in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include "runtime/format/tensor_type.h"
#include "runtime/kernels/kernels.h"
#include "runtime/model/model_config.h"

namespace hearth::runtime {

// The types a KV cache may hold: F32 (what the reference fixtures use), F16 (half the memory,
// the product's default) and Q8_0 (about a quarter, for rows whose heads are multiples of 32).
bool is_kv_type(TensorType t);
// "f32", "f16" or "q8_0" (any case); nullopt for anything else.
std::optional<TensorType> kv_type_from_name(std::string_view name);
// Why `t` cannot hold rows whose heads have head_dim elements, or "" when it can.
std::string kv_type_unfit(TensorType t, int head_dim);
// The same for the caches of layers [first_layer, last_layer) of a model (its recurrent layers
// keep a state, not a cache): what the head checks before planning and a stage before loading.
std::string kv_type_unfit(TensorType t, const ModelConfig& c, int first_layer, int last_layer);
// Bytes per cached element, for the planner's memory accounting: 4, 2 or 34/32.
double kv_bytes_per_element(TensorType t);
// Bytes of one cached row of n elements (n a multiple of the type's block).
size_t kv_row_bytes(TensorType t, int n);

// A sliding-window layer's cache is a ring: position p lives in row p % ring, so it holds only the
// latest `ring` positions (kv_cache_rows in partitioner/model_spec.h says how many it needs).
struct KvRows {
  const uint8_t* data = nullptr;  // row 0, at the first element read
  size_t row_bytes = 0;           // from one row to the next
  TensorType type = TensorType::F32;
  int ring = 0;  // rows of a ring; 0: position p is row p

  // The same rows from element `first` on (a head's slice): first a multiple of the type's block.
  KvRows from(int first) const { return {data + kv_row_bytes(type, first), row_bytes, type, ring}; }
  int row(int pos) const { return ring > 0 ? pos % ring : pos; }
  // Consecutive positions from `pos` on that lie in consecutive rows (up to the ring's wrap).
  int run(int pos) const { return ring > 0 ? ring - pos % ring : std::numeric_limits<int>::max(); }
};

// Rows as f32: where they start and the floats from one to the next.
struct F32Rows {
  const float* data;
  size_t stride;
};

// Positions [p0, p0 + n_rows) of `rows`, n elements each, as f32: the cache itself for f32, else
// converted into `tile` (room for n_rows x n floats). n_rows <= rows.run(p0).
F32Rows read_rows(const KvRows& rows, int p0, int n_rows, int n, float* tile, const KernelTable& k);

}  // namespace hearth::runtime
