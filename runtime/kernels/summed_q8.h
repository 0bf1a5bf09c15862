// A token's Q8_0 activations as the x86 tables' Q4_0 kernels read them: each block's bytes with
// its scale already in f32 and Q4_0's offset already summed, so that the kernels, which take
// weights eight or sixteen rows at a time, do that work once per token instead of once per row
// group. Only the x86 kernel files include it; pack() makes it once per matmul and token.
#pragma once

#include <cstdint>

#include "runtime/format/tensor_type.h"
#include "runtime/kernels/half.h"

namespace hearth::runtime {

struct SummedQ8Block {
  int8_t q[kQ8_0Block];
  float d;
  // -8 * (the sum of q): Q4_0 stores w + 8 (0..15), so the exact integer dot product of a block
  // is sum(stored * q) + offset.
  int32_t offset;
};
static_assert(sizeof(SummedQ8Block) == 40);

inline void pack_summed_q8(const BlockQ8_0* x, SummedQ8Block* out, int nb) {
  for (int b = 0; b < nb; ++b) {
    int32_t sum = 0;
    for (int j = 0; j < kQ8_0Block; ++j) {
      out[b].q[j] = x[b].qs[j];
      sum += x[b].qs[j];
    }
    out[b].d = fp16_to_fp32(x[b].d);
    out[b].offset = -8 * sum;
  }
}

}  // namespace hearth::runtime
