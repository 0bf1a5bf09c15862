#include "runtime/format/tensor_type.h"

#include <algorithm>
#include <array>
#include <cctype>

namespace hearth::runtime {

namespace {

struct Entry {
  uint32_t id;
  TensorTypeInfo info;
};

constexpr std::array kTypes = {
    Entry{0, {"f32", 1, 4, true}},
    Entry{1, {"f16", 1, 2, true}},
    Entry{2, {"q4_0", 32, 18, true}},
    Entry{3, {"q4_1", 32, 20, false}},
    Entry{6, {"q5_0", 32, 22, true}},
    Entry{7, {"q5_1", 32, 24, false}},
    Entry{8, {"q8_0", 32, 34, true}},
    Entry{9, {"q8_1", 32, 36, false}},
    Entry{10, {"q2_k", 256, 84, false}},
    Entry{11, {"q3_k", 256, 110, false}},
    Entry{12, {"q4_k", 256, 144, true}},
    Entry{13, {"q5_k", 256, 176, true}},
    Entry{14, {"q6_k", 256, 210, true}},
    Entry{15, {"q8_k", 256, 292, false}},
    Entry{24, {"i8", 1, 1, false}},
    Entry{25, {"i16", 1, 2, false}},
    Entry{26, {"i32", 1, 4, false}},
    Entry{27, {"i64", 1, 8, false}},
    Entry{28, {"f64", 1, 8, false}},
    Entry{30, {"bf16", 1, 2, true}},
    // The 4-bit table types of today's MoE releases: IQ4_NL/IQ4_XS ("dynamic" quants) and
    // gpt-oss's MXFP4.
    Entry{20, {"iq4_nl", 32, 18, true}},
    Entry{23, {"iq4_xs", 256, 136, true}},
    Entry{39, {"mxfp4", 32, 17, true}},
};

}  // namespace

std::optional<TensorTypeInfo> tensor_type_info(uint32_t type) {
  for (const auto& e : kTypes)
    if (e.id == type) return e.info;
  return std::nullopt;
}

std::string_view tensor_type_name(TensorType type) {
  auto info = tensor_type_info(static_cast<uint32_t>(type));
  return info ? info->name : std::string_view("unknown");
}

std::optional<TensorType> tensor_type_from_name(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const auto& e : kTypes)
    if (e.info.name == lower) return static_cast<TensorType>(e.id);
  return std::nullopt;
}

std::string computable_type_names() {
  std::string out;
  for (const auto& e : kTypes) {
    if (!e.info.computable) continue;
    if (!out.empty()) out += ", ";
    out += e.info.name;
  }
  return out;
}

uint64_t row_bytes(TensorType type, uint64_t n_elems) {
  auto info = tensor_type_info(static_cast<uint32_t>(type));
  return n_elems / info->block_elems * info->block_bytes;
}

}  // namespace hearth::runtime
