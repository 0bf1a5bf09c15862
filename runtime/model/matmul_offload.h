// Matrix products that another processor computes (a GPU, runtime/gpu) for the weights it holds.
//
// The stage asks holds() for each product and sends the ones held here, the rest to the CPU
// tables: a device whose GPU memory is short keeps its later layers on the CPU. The interface is
// the model's own, so the stage knows nothing of the GPU API, and tests can stand in for it.
#pragma once

#include <span>

#include "runtime/model/matmul.h"
#include "runtime/model/weights.h"

namespace hearth::runtime {

class MatmulOffload {
 public:
  virtual ~MatmulOffload() = default;
  // Whether w's products run here (its weights were uploaded).
  virtual bool holds(const WeightMatrix& w) const = 0;
  // For every target, y[t * w.n_out + r] = dot(row r of w, x[t * w.n_in ...]), t < n_tokens.
  // REQUIRES: holds() each weight, all of the same n_in. Throws std::runtime_error when the
  // device fails (the caller may go on with the CPU).
  virtual void matmul(std::span<const MatmulTarget> targets, const float* x, int n_tokens) = 0;
};

}  // namespace hearth::runtime
