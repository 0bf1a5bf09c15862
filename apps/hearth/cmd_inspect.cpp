// `hearth inspect`: what a GGUF file holds.
#include <cstdio>
#include <map>
#include <memory>

#include "apps/hearth/commands.h"
#include "runtime/format/gguf.h"

namespace hearth::cli {

namespace {

std::string show_value(const runtime::GgufValue& v) {
  using runtime::GgufType;
  if (auto* a = std::get_if<runtime::GgufArray>(&v.value)) {
    std::string s = "[" + std::string(runtime::gguf_type_name(a->elem_type)) + " x " + std::to_string(a->items.size()) + "]";
    if (!a->items.empty() && a->elem_type != GgufType::ARRAY)
      s += " " + show_value(a->items[0]) + (a->items.size() > 1 ? ", ..." : "");
    return s;
  }
  if (auto* s = std::get_if<std::string>(&v.value)) return s->size() > 80 ? "\"" + s->substr(0, 77) + "...\"" : "\"" + *s + "\"";
  if (auto* u = std::get_if<uint64_t>(&v.value)) return std::to_string(*u);
  if (auto* i = std::get_if<int64_t>(&v.value)) return std::to_string(*i);
  if (auto* d = std::get_if<double>(&v.value)) return std::to_string(*d);
  return std::get<bool>(v.value) ? "true" : "false";
}

// The N of "blk.N.*", or -1.
int layer_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  const size_t dot = name.find('.', 4);
  if (dot == std::string::npos || dot == 4 || name.find_first_not_of("0123456789", 4) != dot) return -1;
  return std::stoi(name.substr(4, dot - 4));
}

void inspect(const std::string& path, bool show_tensors) {
  const runtime::GgufFile f = runtime::GgufFile::open(path);
  std::printf("%s: GGUF v%u, %zu metadata keys, %zu tensors, alignment %llu, data at byte %llu\n\n", path.c_str(), f.version(),
              f.metadata().all().size(), f.tensors().size(), static_cast<unsigned long long>(f.alignment()),
              static_cast<unsigned long long>(f.data_offset()));
  for (const auto& [k, v] : f.metadata().all()) std::printf("  %-44s %s\n", k.c_str(), show_value(v).c_str());

  // Bytes per layer: what a pipeline stage holding that layer must store.
  std::map<int, uint64_t> per_layer;
  uint64_t other = 0, total = 0;

  for (const auto& t : f.tensors()) {
    if (const int layer = layer_of(t.name); layer >= 0) per_layer[layer] += t.n_bytes;
    else other += t.n_bytes;
    total += t.n_bytes;
  }
  std::printf("\n  %-10s %14s\n", "layer", "bytes");
  for (const auto& [l, b] : per_layer) std::printf("  %-10d %14llu\n", l, static_cast<unsigned long long>(b));
  std::printf("  %-10s %14llu\n  %-10s %14llu\n", "non-layer", static_cast<unsigned long long>(other), "total",
              static_cast<unsigned long long>(total));
  if (!show_tensors) return;
  std::printf("\n");
  for (const auto& t : f.tensors()) {
    std::string shape;
    for (auto d : t.shape) shape += (shape.empty() ? "" : " x ") + std::to_string(d);
    std::printf("  %-36s %-6s %-20s %12llu bytes at %llu\n", t.name.c_str(),
                std::string(runtime::tensor_type_name(t.type)).c_str(), shape.c_str(), static_cast<unsigned long long>(t.n_bytes),
                static_cast<unsigned long long>(t.offset));
  }
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  struct Args {
    std::string path;
    bool no_tensors = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("inspect", "Show a GGUF file's metadata, tensors and bytes per layer");
  cmd->add_option("file", a->path, "GGUF file")->required()->check(CLI::ExistingFile);
  cmd->add_flag("--no-tensors", a->no_tensors, "Do not list every tensor");
  cmd->callback([a] { inspect(a->path, !a->no_tensors); });
}

}  // namespace hearth::cli
