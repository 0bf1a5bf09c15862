#include "runtime/model/kv_rows.h"

#include <algorithm>
#include <cctype>

#include "runtime/kernels/half.h"

namespace hearth::runtime {

bool is_kv_type(TensorType t) { return t == TensorType::F32 || t == TensorType::F16 || t == TensorType::Q8_0; }

std::optional<TensorType> kv_type_from_name(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower == "f32") return TensorType::F32;
  if (lower == "f16") return TensorType::F16;
  if (lower == "q8_0") return TensorType::Q8_0;
  return std::nullopt;
}

std::string kv_type_unfit(TensorType t, int head_dim) {
  if (!is_kv_type(t)) return "a KV cache holds f32, f16 or q8_0, not " + std::string(tensor_type_name(t));
  if (t == TensorType::Q8_0 && head_dim % kQ8_0Block != 0)
    return "a q8_0 KV cache needs heads whose size is a multiple of 32; this model's are " + std::to_string(head_dim) +
           ": use --kv-type f16";
  return "";
}

std::string kv_type_unfit(TensorType t, const ModelConfig& c, int first_layer, int last_layer) {
  if (!is_kv_type(t)) return kv_type_unfit(t, 0);
  for (int l = first_layer; l < last_layer; ++l)
    if (!c.is_recurrent(l))
      if (std::string why = kv_type_unfit(t, c.layer_head_dim(l)); !why.empty()) return why;
  return "";
}

double kv_bytes_per_element(TensorType t) { return static_cast<double>(kv_row_bytes(t, kQ8_0Block)) / kQ8_0Block; }

size_t kv_row_bytes(TensorType t, int n) {
  switch (t) {
    case TensorType::F16: return static_cast<size_t>(n) * 2;
    case TensorType::Q8_0: return static_cast<size_t>(n / kQ8_0Block) * sizeof(BlockQ8_0);
    default: return static_cast<size_t>(n) * sizeof(float);
  }
}

F32Rows read_rows(const KvRows& rows, int p0, int n_rows, int n, float* tile, const KernelTable& k) {
  const uint8_t* first = rows.data + static_cast<size_t>(rows.row(p0)) * rows.row_bytes;
  if (rows.type == TensorType::F32) return {reinterpret_cast<const float*>(first), rows.row_bytes / sizeof(float)};
  for (int r = 0; r < n_rows; ++r) {
    const uint8_t* row = first + static_cast<size_t>(r) * rows.row_bytes;
    float* out = tile + static_cast<size_t>(r) * static_cast<size_t>(n);
    if (rows.type == TensorType::F16) {
      k.f16_to_f32(reinterpret_cast<const uint16_t*>(row), out, n);
    } else {
      const auto* b = reinterpret_cast<const BlockQ8_0*>(row);
      for (int i = 0; i < n / kQ8_0Block; ++i) {
        const float d = fp16_to_fp32(b[i].d);
        for (int j = 0; j < kQ8_0Block; ++j) out[i * kQ8_0Block + j] = d * static_cast<float>(b[i].qs[j]);
      }
    }
  }
  return {tile, static_cast<size_t>(n)};
}

}  // namespace hearth::runtime
