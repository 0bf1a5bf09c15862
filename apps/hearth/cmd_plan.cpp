// `hearth plan`: which device should run which layers of a model, and what that is predicted to
// cost. Reads device profiles (profiles/devices/*.json or `hearth profile --json` output), a model
// (a GGUF file or a preset shape) and the links between devices, then runs the partitioner.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "apps/hearth/commands.h"
#include "apps/hearth/kv_type_option.h"
#include "apps/hearth/wire_type_option.h"
#include "cluster/wire_choice.h"
#include "partitioner/partitioner.h"
#include "profiles/profiler.h"
#include "runtime/format/gguf.h"
#include "runtime/model/model_config.h"
#include "runtime/model/model_spec_gguf.h"

namespace hearth::cli {

namespace {

namespace pt = partitioner;

// Context a GGUF model is planned for when --ctx is not given: the runtime's own default.
constexpr int kDefaultMaxCtx = 4096;

struct PlanArgs {
  std::string model;
  std::string preset;
  std::string type = "q4_0";
  std::vector<std::string> devices;
  std::vector<std::string> links;
  std::string objective = "latency";
  std::string algorithm = "dp";
  int ctx = 0;  // 0 = the model's training context (at most 4096), 4096 for presets
  int streams = 1;
  int prompt_tokens = 512;
  int draft_tokens = 0;
  double tokens_per_pass = 0;
  bool json = false;
  std::string kv_type = kDefaultKvType;
  std::string wire_type = "f32";
};

// How the plan's hops carry activations: the type of all of them, or (auto) per hop.
struct Wire {
  std::optional<runtime::TensorType> fixed;
  std::string of(const pt::StageAssignment& a) const {
    return std::string(runtime::tensor_type_name(cluster::hop_wire_type(fixed, a.compressed_hop)));
  }
};

struct Device {
  pt::DeviceProfile profile;
  std::string path;
  std::string stem;  // file name without .json: a short handle for --link
};

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read device profile " + path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::vector<Device> load_devices(const std::vector<std::string>& paths) {
  std::vector<Device> devices;
  for (const std::string& path : paths) {
    Device d;
    try {
      d.profile = profiles::device_profile_from_json(read_text(path));
    } catch (const std::runtime_error& e) {
      throw std::runtime_error("device profile " + path + ": " + e.what());
    }
    d.path = path;
    d.stem = std::filesystem::path(path).stem().string();
    devices.push_back(std::move(d));
  }
  // The same profile may describe several devices (two Raspberry Pis): number the repeats so
  // every device has its own name in the plan and in --link.
  std::vector<std::string> original;
  for (const Device& d : devices) original.push_back(d.profile.name);
  for (size_t i = 0; i < devices.size(); ++i) {
    const auto seen = std::count(original.begin(), original.begin() + static_cast<std::ptrdiff_t>(i), original[i]);
    if (seen > 0) devices[i].profile.name += " #" + std::to_string(seen + 1);
  }
  return devices;
}

// Index of the device `text` names: its profile name (exact, then case-insensitive) or its
// file name without .json when that is unambiguous; -1 if none.
int find_device(const std::vector<Device>& devices, const std::string& text) {
  for (size_t i = 0; i < devices.size(); ++i)
    if (devices[i].profile.name == text) return static_cast<int>(i);
  for (size_t i = 0; i < devices.size(); ++i)
    if (lower(devices[i].profile.name) == lower(text)) return static_cast<int>(i);
  int found = -1;
  for (size_t i = 0; i < devices.size(); ++i) {
    if (devices[i].stem != text) continue;
    if (found >= 0) return -1;
    found = static_cast<int>(i);
  }
  return found;
}

std::string device_list(const std::vector<Device>& devices) {
  std::string s;
  for (const Device& d : devices) s += (s.empty() ? "'" : ", '") + d.profile.name + "' (" + d.stem + ")";
  return s;
}

double parse_number(const std::string& text, const std::string& what, const std::string& spec) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || !std::isfinite(v))
    throw std::runtime_error("--link '" + spec + "': " + what + " '" + text + "' is not a number");
  return v;
}

struct LinkOverride {
  int a = 0, b = 0;
  pt::Link link;
};

// "A,B,MBIT_S,MS". Device names may contain commas ("x86 laptop, Ryzen 7 ..."), so the two
// numbers are taken from the right and "A,B" is split at the comma that leaves two known names.
LinkOverride parse_link(const std::string& spec, const std::vector<Device>& devices) {
  const auto c2 = spec.rfind(',');
  const auto c1 = c2 == std::string::npos || c2 == 0 ? std::string::npos : spec.rfind(',', c2 - 1);
  if (c1 == std::string::npos)
    throw std::runtime_error("--link '" + spec + "': expected A,B,MBIT_S,MS (two device names, Mbit/s, one-way ms)");
  const double mbit = parse_number(spec.substr(c1 + 1, c2 - c1 - 1), "bandwidth", spec);
  const double ms = parse_number(spec.substr(c2 + 1), "latency", spec);
  if (mbit <= 0 || ms < 0) throw std::runtime_error("--link '" + spec + "': bandwidth must be positive and latency not negative");
  const std::string names = spec.substr(0, c1);
  for (size_t comma = names.find(','); comma != std::string::npos; comma = names.find(',', comma + 1)) {
    const int a = find_device(devices, names.substr(0, comma));
    const int b = find_device(devices, names.substr(comma + 1));
    if (a < 0 || b < 0) continue;
    if (a == b) throw std::runtime_error("--link '" + spec + "' names the same device twice");
    return {a, b, pt::Link{mbit * 1e6 / 8, ms / 1e3}};
  }
  throw std::runtime_error("--link '" + spec + "': '" + names + "' is not two known devices; devices are " +
                           device_list(devices) + " (by profile name or file name)");
}

std::string describe_link(const pt::Link& l) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%.0f Mbit/s, %.2g ms one way", l.bandwidth_bytes_per_s * 8 / 1e6, l.latency_s * 1e3);
  return buf;
}

struct Links {
  pt::LinkTable table;
  std::string statement;  // which default the plan used, for people
  std::string source;     // "access_links" or "default_link", for --json
  std::vector<LinkOverride> overrides;
};

Links build_links(const std::vector<Device>& devices, const std::vector<pt::DeviceProfile>& profiles,
                  const std::vector<std::string>& specs) {
  Links l;
  const bool any_access = std::any_of(profiles.begin(), profiles.end(), [](const auto& p) { return p.link.has_value(); });
  if (any_access) {
    l.table = pt::link_table_from_access_links(profiles);
    l.source = "access_links";
    l.statement = "pairs not given with --link use the profiles' access links (the slower bandwidth, latencies added)";
    const bool all_access = std::all_of(profiles.begin(), profiles.end(), [](const auto& p) { return p.link.has_value(); });
    if (!all_access)
      l.statement += "; profiles without a link use kDefaultAccessLink (" + describe_link(pt::kDefaultAccessLink) + ")";
  } else {
    l.source = "default_link";
    l.statement = "pairs not given with --link use kDefaultLink (" + describe_link(pt::kDefaultLink) +
                  "): no profile has a measured 'link'";
  }
  for (const std::string& spec : specs) {
    LinkOverride o = parse_link(spec, devices);
    l.table.set_both(o.a, o.b, o.link);
    l.overrides.push_back(o);
  }
  return l;
}

struct Model {
  pt::ModelSpec spec;
  std::optional<runtime::ModelConfig> config;  // for a file (a preset has only its shape)
  std::string description;
  int ctx_default = kDefaultMaxCtx;
};

Model load_model(const PlanArgs& a) {
  Model m;
  if (!a.preset.empty()) {
    pt::ModelShape shape = *pt::preset_shape(a.preset);
    shape.weight_type = a.type;
    m.spec = pt::model_spec_from_shape(shape);
    m.description = a.preset + " (preset shape, " + a.type + ")";
    return m;
  }
  const runtime::GgufFile file = runtime::GgufFile::open(a.model);
  const runtime::ModelConfig& config = m.config.emplace(runtime::read_model_config(file));
  m.spec = runtime::model_spec_from_gguf(file, config);
  m.description = a.model + " (" + config.name + ", " + m.spec.weight_type + ")";
  if (config.n_ctx_train > 0) m.ctx_default = std::min(config.n_ctx_train, kDefaultMaxCtx);
  return m;
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string layers_text(const pt::StageAssignment& s) {
  std::string t = s.last_layer == s.first_layer ? "none"
                                                : std::to_string(s.first_layer) + "-" + std::to_string(s.last_layer - 1) + " (" +
                                                      std::to_string(s.last_layer - s.first_layer) + ")";
  if (s.has_embedding) t += " +embd";
  if (s.has_output) t += " +head";
  return t;
}

// "0-19 (20) +head, 3.9 of 4.0 GB": the stage's first layers whose products its device's GPU runs.
std::string gpu_text(const pt::StageAssignment& s, const pt::DeviceProfile& device) {
  if (!device.gpu) return "-";
  if (s.gpu_layers == 0 && !s.gpu_output) return "none";
  std::string t = s.gpu_layers > 0 ? std::to_string(s.first_layer) + "-" + std::to_string(s.first_layer + s.gpu_layers - 1) +
                                         " (" + std::to_string(s.gpu_layers) + ")"
                                   : "";
  if (s.gpu_output) t += t.empty() ? "+head" : " +head";
  return t + ", " + pt::format_bytes(s.gpu_weight_bytes) + " of " + pt::format_bytes(device.gpu->memory_bytes);
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows)
    for (size_t c = 0; c < r.size(); ++c) {
      if (width.size() <= c) width.push_back(0);
      width[c] = std::max(width[c], r[c].size());
    }
  for (const auto& r : rows) {
    std::string line;
    for (size_t c = 0; c < r.size(); ++c) {
      // Text columns (device, layers) align left, figures right.
      const bool left = c == 1 || c == 2;
      const std::string pad(width[c] - r[c].size(), ' ');
      line += (c ? "  " : "") + (left ? r[c] + pad : pad + r[c]);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
  }
}

void print_plan(const pt::PartitionPlan& plan, const std::vector<pt::DeviceProfile>& profiles, const Model& model,
                const pt::PartitionOptions& o, const Links& links, const std::string& kv_type, const Wire& wire) {
  const pt::Prediction& p = plan.predicted;
  std::printf("model     %s: %d blocks, %s of weights\n", model.description.c_str(), model.spec.n_layers,
              pt::format_bytes(pt::total_weight_bytes(model.spec)).c_str());
  if (model.spec.n_expert > 0) {
    double blocks = 0;
    for (double b : model.spec.layer_weight_bytes) blocks += b;
    std::printf("          mixture of experts: %d experts per block, %d per token; a decoded token reads %s of the blocks' %s\n",
                model.spec.n_expert, model.spec.n_expert_used, pt::format_bytes(pt::active_weight_bytes(model.spec)).c_str(),
                pt::format_bytes(blocks).c_str());
  }
  std::printf("workload  objective %s, algorithm %s; KV cache %s for %d tokens x %d stream(s); %d-token prompt\n",
              std::string(pt::to_string(o.objective)).c_str(), std::string(pt::to_string(o.algorithm)).c_str(),
              std::string(runtime::tensor_type_name(kv_type_named(kv_type))).c_str(), o.ctx, o.streams, o.prompt_tokens);
  std::printf("links     %s; activations on the wire as %s\n", links.statement.c_str(),
              wire.fixed ? std::string(runtime::tensor_type_name(*wire.fixed)).c_str() : "f16 over links below 1 Gbit/s, else f32");
  for (const LinkOverride& l : links.overrides)
    std::printf("          --link %s <-> %s: %s\n", profiles[l.a].name.c_str(), profiles[l.b].name.c_str(),
                describe_link(l.link).c_str());
  std::printf("\n");

  // A column for the GPUs' share only where a used device has one: "memory" is then its RAM.
  const bool gpus = std::any_of(plan.stages.begin(), plan.stages.end(),
                                [&](const pt::StageAssignment& a) { return profiles[a.device].gpu.has_value(); });
  std::vector<std::vector<std::string>> rows{
      {"stage", "device", "layers", "weights", "KV", "memory", "headroom", "paged", "step ms", "hop ms"}};
  if (gpus) rows[0].insert(rows[0].begin() + 4, "on its GPU");
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    const pt::StageAssignment& a = plan.stages[s];
    const double usable = profiles[a.device].usable_memory_bytes;
    rows.push_back({std::to_string(s), a.device_name, layers_text(a), pt::format_bytes(a.weight_bytes),
                    pt::format_bytes(a.kv_bytes), pt::format_bytes(a.memory_bytes),
                    pt::format_bytes(a.headroom_bytes) + fmt(" (%.0f%%)", 100 * a.headroom_bytes / usable),
                    a.paged_bytes > 0 ? pt::format_bytes(a.paged_bytes) + fmt(" (%.1f ms)", a.paged_time_s * 1e3) : "-",
                    fmt("%.2f", a.stage_time_s * 1e3) + (static_cast<int>(s) == p.bottleneck_stage ? "*" : ""),
                    fmt("%.2f", a.hop_time_s * 1e3) + (s + 1 == plan.stages.size() ? " ->head" : " " + wire.of(a))});
    if (gpus) rows.back().insert(rows.back().begin() + 4, gpu_text(a, profiles[a.device]));
  }
  print_table(rows);
  std::printf("\n");
  std::printf("predicted %.1f ms/token for one stream (%.1f tokens/s)\n", p.ms_per_token, 1e3 / p.ms_per_token);
  if (o.streams > 1)
    std::printf("          %.1f tokens/s over %d streams (micro-batch %d, %.1f ms/token per stream), period %.1f ms set by %s\n",
                p.tokens_per_s, o.streams, p.micro_batch, p.stream_ms_per_token, p.period_ms,
                p.bottleneck_stage >= 0 ? ("stage " + std::to_string(p.bottleneck_stage) + " (*)").c_str() : "a link");
  std::printf("          TTFT %.0f ms for a %d-token prompt (%d prefill chunk(s))\n", p.ttft_ms, o.prompt_tokens,
              p.prefill_chunks);
  if (o.draft_tokens > 0) {
    std::printf("          a pass with a draft of %d tokens: %.1f ms", o.draft_tokens, p.draft_pass_ms);
    if (p.draft_ms_per_token > 0)
      std::printf(", %.1f ms/token (%.1f tokens/s) at %.2f tokens per pass", p.draft_ms_per_token, 1e3 / p.draft_ms_per_token,
                  o.tokens_per_pass);
    std::printf("\n");
  }
  if (!plan.left_out_reasons.empty()) {
    std::printf("left out\n");
    for (const std::string& r : plan.left_out_reasons) std::printf("  %s\n", r.c_str());
  }
  if (!plan.exact) std::printf("note: the search used its fast path; the optimum is not guaranteed\n");
}

nlohmann::json plan_json(const pt::PartitionPlan& plan, const std::vector<pt::DeviceProfile>& profiles, const Model& model,
                         const pt::PartitionOptions& o, const Links& links, const Wire& wire) {
  using nlohmann::json;
  json stages = json::array();
  for (const pt::StageAssignment& a : plan.stages)
    stages.push_back({{"device", a.device_name},
                      {"device_index", a.device},
                      {"first_layer", a.first_layer},
                      {"last_layer", a.last_layer},
                      {"has_embedding", a.has_embedding},
                      {"has_output", a.has_output},
                      {"weight_bytes", a.weight_bytes},
                      {"kv_bytes", a.kv_bytes},
                      {"memory_bytes", a.memory_bytes},
                      {"usable_memory_bytes", profiles[a.device].usable_memory_bytes},
                      {"headroom_bytes", a.headroom_bytes},
                      {"paged_bytes", a.paged_bytes},
                      {"paged_ms", a.paged_time_s * 1e3},
                      {"compute_time_ms", a.compute_time_s * 1e3},
                      {"stage_time_ms", a.stage_time_s * 1e3},
                      {"hop_time_ms", a.hop_time_s * 1e3},
                      {"wire_type", a.has_output ? "" : wire.of(a)},
                      {"gpu_layers", a.gpu_layers},
                      {"gpu_output", a.gpu_output},
                      {"gpu_weight_bytes", a.gpu_weight_bytes}});
  const pt::Prediction& p = plan.predicted;
  json overrides = json::array();
  for (const LinkOverride& l : links.overrides)
    overrides.push_back({{"a", profiles[l.a].name},
                         {"b", profiles[l.b].name},
                         {"bandwidth_bytes_per_s", l.link.bandwidth_bytes_per_s},
                         {"latency_s", l.link.latency_s}});
  return {{"model",
           {{"name", model.spec.name},
            {"description", model.description},
            {"n_layers", model.spec.n_layers},
            {"weight_type", model.spec.weight_type},
            {"total_weight_bytes", pt::total_weight_bytes(model.spec)},
            {"active_block_bytes", pt::active_weight_bytes(model.spec)},
            {"n_expert", model.spec.n_expert},
            {"n_expert_used", model.spec.n_expert_used}}},
          {"options",
           {{"objective", pt::to_string(o.objective)},
            {"algorithm", pt::to_string(o.algorithm)},
            {"ctx", o.ctx},
            {"streams", o.streams},
            {"prompt_tokens", o.prompt_tokens},
            {"draft_tokens", o.draft_tokens},
            {"tokens_per_pass", o.tokens_per_pass},
            {"kv_bytes_per_elem", o.kv_bytes_per_elem}}},
          {"links", {{"default", links.source}, {"statement", links.statement}, {"overrides", overrides}}},
          {"stages", stages},
          {"predicted",
           {{"ms_per_token", p.ms_per_token},
            {"tokens_per_s", p.tokens_per_s},
            {"stream_ms_per_token", p.stream_ms_per_token},
            {"micro_batch", p.micro_batch},
            {"period_ms", p.period_ms},
            {"bottleneck_stage", p.bottleneck_stage},
            {"ttft_ms", p.ttft_ms},
            {"prefill_chunks", p.prefill_chunks},
            {"draft_pass_ms", p.draft_pass_ms},
            {"draft_ms_per_token", p.draft_ms_per_token}}},
          {"left_out", plan.left_out_reasons},
          {"exact", plan.exact}};
}

void plan(const PlanArgs& a) {
  if (a.model.empty() == a.preset.empty()) throw std::runtime_error("give the model with --model FILE or --preset NAME");
  const Model model = load_model(a);
  const std::vector<Device> devices = load_devices(a.devices);
  std::vector<pt::DeviceProfile> profiles;
  for (const Device& d : devices) profiles.push_back(d.profile);
  const Links links = build_links(devices, profiles, a.links);

  pt::PartitionOptions o;
  o.objective = *pt::objective_from_string(a.objective);
  o.algorithm = *pt::algorithm_from_string(a.algorithm);
  o.ctx = a.ctx > 0 ? a.ctx : model.ctx_default;
  o.streams = a.streams;
  o.prompt_tokens = a.prompt_tokens;
  o.drafts = a.draft_tokens > 0;
  o.draft_tokens = a.draft_tokens;
  o.tokens_per_pass = a.tokens_per_pass;
  const runtime::TensorType kv = kv_type_named(a.kv_type);
  o.kv_bytes_per_elem = runtime::kv_bytes_per_element(kv);
  if (const std::string why = model.config ? runtime::kv_type_unfit(kv, *model.config, 0, model.config->n_layer)
                                           : runtime::kv_type_unfit(kv, model.spec.head_dim);
      !why.empty())
    throw std::runtime_error(why);

  const Wire wire{cluster::apply_wire_choice(wire_type_named(a.wire_type), model.spec.n_embd, o)};

  const pt::PlanResult r = pt::plan_partition(model.spec, profiles, links.table, o);
  if (!r.ok()) {
    if (a.json) {
      nlohmann::json j = {{"error", r.error.message}, {"missing_bytes", r.error.missing_bytes}};
      std::cout << j.dump(2) << "\n";
    }
    std::string hint;
    if (r.error.kind == pt::Infeasibility::insufficient_memory)
      hint = std::string(" (add a device, ") + (a.preset.empty() ? "a more quantized model file" : "a smaller --type") +
             ", a shorter --ctx or fewer --streams)";
    throw std::runtime_error("no plan: " + r.error.message + hint);
  }
  if (a.json) {
    std::cout << plan_json(*r.plan, profiles, model, o, links, wire).dump(2) << "\n";
    return;
  }
  print_plan(*r.plan, profiles, model, o, links, a.kv_type, wire);
}

std::vector<std::string> strings(const std::vector<std::string_view>& v) { return {v.begin(), v.end()}; }

}  // namespace

void add_plan_command(CLI::App& app) {
  auto a = std::make_shared<PlanArgs>();
  CLI::App* cmd =
      app.add_subcommand("plan",
                         "Split a model's layers over devices and predict ms/token, tokens/s and time to first token. "
                         "The KV cache is sized for --kv-type (f16: 2 bytes per element).");
  auto* model =
      cmd->add_option("-m,--model", a->model, "GGUF model file (sizes read from its tensor directory)")->check(CLI::ExistingFile);
  auto* preset = cmd->add_option("--preset", a->preset, "A well-known model shape instead of a file")
                     ->check(CLI::IsMember(partitioner::preset_names()));
  auto* type = cmd->add_option("--type", a->type, "Weight type of a --preset")
                   ->capture_default_str()
                   ->check(CLI::IsMember(strings(partitioner::weight_type_names())));
  model->excludes(preset);
  type->excludes(model);
  cmd->add_option("-d,--device", a->devices,
                  "Device profile JSON (profiles/devices/*.json, `hearth profile --json`); repeat per device, "
                  "the first is the head")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--link", a->links,
                  "A,B,MBIT_S,MS: link between devices A and B (profile names or file names), both directions; "
                  "MS is the one-way latency. Repeatable");
  cmd->add_option("--objective", a->objective, "What to optimise")
      ->capture_default_str()
      ->check(CLI::IsMember({"latency", "throughput", "ttft"}));
  cmd->add_option("--ctx", a->ctx, "Tokens of KV cache per stream (default: the model's context, at most 4096)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--streams", a->streams, "Concurrent streams (conversations)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--prompt-tokens", a->prompt_tokens, "Prompt length for the time to first token")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--algorithm", a->algorithm, "dp = optimal search; memory / equal = the splits other tools use")
      ->capture_default_str()
      ->check(CLI::IsMember({"dp", "exhaustive", "memory", "equal"}));
  cmd->add_option("--draft-tokens", a->draft_tokens,
                  "Speculative decoding (launch --draft): tokens a draft holds; the plan minimises a pass of that many "
                  "tokens + 1, and recurrent layers keep a second state per stream")
      ->check(CLI::Range(0, 128));
  cmd->add_option("--tokens-per-pass", a->tokens_per_pass,
                  "With --draft-tokens: tokens a pass gives on average (1 + the accepted part), for the prediction")
      ->check(CLI::Range(0.0, 129.0));
  cmd->add_flag("--json", a->json, "Print the plan as JSON");
  add_kv_type_option(cmd, a->kv_type);
  add_wire_type_option(cmd, a->wire_type);
  cmd->callback([a] { plan(*a); });
}

}  // namespace hearth::cli
