// A token's Q8_0 activations as the x86 tables' Q4_0 kernels read them: each block's bytes with
// its scale already in f32 and Q4_0's offset already summed, so that the kernels, which take
// weights eight or sixteen rows at a time, do that work once per token instead of once per row
// group. The x86 tables read it; pack() makes it once per matmul and token.
#pragma once

#include <cstdint>

#include "runtime/format/tensor_type.h"

namespace hearth::runtime {

struct SummedQ8Block {
  int8_t q[kQ8_0Block];
  float d;
  // -8 * (the sum of q): Q4_0 stores w + 8 (0..15), so the exact integer dot product of a block
  // is sum(stored * q) + offset.
  int32_t offset;
};
static_assert(sizeof(SummedQ8Block) == 40);

// Defined in kernels.cpp, compiled for the baseline CPU: an inline definition here would be
// compiled into the AVX2 file too, and the linker may keep either copy (with its fp16_to_fp32).
void pack_summed_q8(const BlockQ8_0* x, SummedQ8Block* out, int nb);

}  // namespace hearth::runtime
