// The controller commands that talk to a head: devices, launch, generate, status, stop.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "apps/hearth/commands.h"
#include "apps/hearth/head_client.h"
#include "apps/hearth/head_error.h"
#include "apps/hearth/kv_type_option.h"
#include "apps/hearth/wire_type_option.h"
#include "apps/hearth/launch_progress.h"
#include "transport/status_view.h"
#include "cluster/config.h"
#include "cluster/draft_source.h"
#include "cluster/wire_convert.h"
#include "runtime/text/tokenizer.h"
#include "transport/curve.h"

namespace hearth::cli {

namespace wire = transport::wire;

namespace {

// Sizes as people read them: GB from 1 GB up, MB below (small models and KV caches).
std::string gb(double bytes) {
  char buf[32];
  if (bytes >= 1e9) std::snprintf(buf, sizeof buf, "%.2f GB", bytes / 1e9);
  else std::snprintf(buf, sizeof buf, bytes >= 10e6 ? "%.0f MB" : "%.1f MB", bytes / 1e6);
  return buf;
}

// The layers [first, last) of a stage as an inclusive range ("0-1", "2-4"; "5" for one; "-" for none).
std::string layers(int first, int last) {
  if (last <= first) return "-";
  if (last == first + 1) return std::to_string(first);
  return std::to_string(first) + "-" + std::to_string(last - 1);
}

// Asks the head with the request `init` makes and returns `view` of its reply; with `print_json`
// also prints it (the commands' --json).
template <typename Init, typename View>
nlohmann::json ask_head(const HeadTarget& head, Init init, View view, bool print_json) {
  HeadClient c(head);
  capnp::MallocMessageBuilder b;
  init(b.initRoot<wire::Envelope>());
  nlohmann::json out;
  c.request(b, [&](wire::Envelope::Reader env) {
    out = view(env);
    return false;
  });
  if (print_json) std::cout << out.dump(2) << "\n";
  return out;
}

void devices(const HeadTarget& head, bool json) {
  const nlohmann::json out = ask_head(
      head, [](wire::Envelope::Builder e) { e.initDevicesRequest(); },
      [](wire::Envelope::Reader r) { return transport::devices_view(r.getDevicesReply()); }, json);
  if (json) return;
  std::printf("%-16s %-6s %-6s %-26s %12s %12s %12s %6s  %s\n", "DEVICE", "ROLE", "STATE", "ENDPOINT", "USABLE MEM", "MEM BW",
              "STORAGE", "CORES", "CPU");
  for (const auto& d : out) {
    // The data directory's cold read rate: what paging a layer from storage would cost.
    const double storage = d.value("storage_read_bytes_per_s", 0.0);
    char storage_text[32] = "-";
    // "*": the rate its paging sustained, learned by the head (explained below the table).
    if (storage > 0)
      std::snprintf(storage_text, sizeof storage_text, "%.2f GB/s%s", storage / 1e9, d.value("storage_from_paging", false) ? "*" : "");
    std::printf("%-16s %-6s %-6s %-26s %12s %9.1f GB/s %12s %6d  %s\n", d["name"].get<std::string>().c_str(),
                d["head"].get<bool>() ? "head" : "node", d["alive"].get<bool>() ? "up" : "down",
                d["endpoint"].get<std::string>().c_str(), gb(d["usable_memory_bytes"].get<double>()).c_str(),
                d["memory_bandwidth_bytes_per_s"].get<double>() / 1e9, storage_text, d["cores"].get<int>(),
                d["cpu"].get<std::string>().c_str());
  }
  for (const auto& d : out)
    if (d.value("storage_from_paging", false)) {
      std::printf("* storage: the rate its paging read at; the next plan uses it rather than its start-up probe\n");
      break;
    }
  // The GPU a device's stages use: where its share of the weights goes, and how fast it reads.
  for (const auto& d : out) {
    if (!d.contains("gpu") || d["gpu"].is_null()) continue;
    const auto& g = d["gpu"];
    std::string rates;
    for (const auto& [type, rate] : g["decode_bytes_per_s"].items())
      rates +=
          (rates.empty() ? "" : ", ") + type + " " + std::to_string(static_cast<int>(rate.get<double>() / 1e9 + 0.5)) + " GB/s";
    std::printf("%s: GPU %s, %s for weights (%s), decode %s; %.2f ms per layer's submissions\n",
                d["name"].get<std::string>().c_str(), g["name"].get<std::string>().c_str(),
                gb(g["memory_bytes"].get<double>()).c_str(),
                g["unified_memory"].get<bool>() ? "shared with its RAM" : "its own memory", rates.c_str(),
                g["layer_overhead_s"].get<double>() * 1e3);
  }
  // Why a device offers less than it has: "usable 23 MB" for --memory-limit 60M needs its reason.
  for (const auto& d : out) {
    const auto& m = d["memory"];
    if (m["basis"].get<std::string>().empty()) continue;
    std::printf("%s: %s usable of %s %s; %s held back for %s\n", d["name"].get<std::string>().c_str(),
                gb(d["usable_memory_bytes"].get<double>()).c_str(), m["basis"].get<std::string>().c_str(),
                gb(m["basis_bytes"].get<double>()).c_str(), gb(m["held_back_bytes"].get<double>()).c_str(),
                m["held_back_why"].get<std::string>().c_str());
  }
}

void models(const HeadTarget& head, bool json) {
  const nlohmann::json out = ask_head(
      head, [](wire::Envelope::Builder e) { e.initModelsRequest(); },
      [](wire::Envelope::Reader r) { return transport::models_view(r.getModelsReply()); }, json);
  if (json) return;
  std::string dirs;
  for (const auto& d : out["dirs"]) dirs += (dirs.empty() ? "" : ", ") + d.get<std::string>();
  if (out["models"].empty()) {
    std::printf("no GGUF files in %s (hearthd --models DIR names the folders)\n", dirs.c_str());
    return;
  }
  std::printf("%-36s %-10s %-8s %10s %-7s %s\n", "MODEL", "ARCH", "TYPE", "SIZE", "LOADED", "ON THE DEVICES UP NOW");
  for (const auto& m : out["models"]) {
    std::string cost;
    if (m["fits"].get<bool>()) {
      std::string names;
      for (const auto& d : m["devices"]) names += (names.empty() ? "" : "+") + d.get<std::string>();
      char buf[256];
      std::snprintf(buf, sizeof buf, "fits on %s, ~%.1f tokens/s, %u tokens x %u", names.c_str(),
                    m["predicted_tokens_per_s"].get<double>(), m["n_ctx"].get<unsigned>(), m["streams"].get<unsigned>());
      cost = buf;
    } else {
      cost = m["why"].get<std::string>();
    }
    std::printf("%-36s %-10s %-8s %10s %-7s %s\n", m["id"].get<std::string>().c_str(), m["arch"].get<std::string>().c_str(),
                m["weight_type"].get<std::string>().c_str(), gb(m["file_bytes"].get<double>()).c_str(),
                m["loaded"].get<bool>() ? "yes" : "", cost.c_str());
  }
  std::printf("(from %s)\n", dirs.c_str());
}

// A paging stage (issue 19): what the plan keeps in memory and reads every step, at what cost;
// then its reads as its daemon counted them: how fast its storage delivers, and how much of the
// reading the compute hid.
void print_paging(const nlohmann::json& s) {
  const double paged = s.value("paged_bytes", 0.0);
  if (paged > 0)
    std::printf("paging on %s: %s resident, %s read from storage every step (%.1f ms, beside %.1f ms of compute)\n",
                s["device"].get<std::string>().c_str(), gb(s.value("memory_bytes", 0.0) - paged).c_str(), gb(paged).c_str(),
                s.value("paged_time_ms", 0.0), s.value("compute_time_ms", 0.0));
  const double read = s.value("paged_read_bytes", 0.0), read_s = s.value("paged_read_s", 0.0);
  if (read <= 0 || read_s <= 0) return;
  const double hidden = std::max(0.0, 1 - s.value("paged_wait_s", 0.0) / read_s);
  std::printf("paging on %s: read %s from storage so far at %.2f GB/s; %.0f%% of the reading hidden behind compute\n",
              s["device"].get<std::string>().c_str(), gb(read).c_str(), read / read_s / 1e9, 100 * hidden);
}

void print_plan(const nlohmann::json& plan) {
  std::printf("%-16s %-10s %12s %12s %12s %12s %10s %10s %5s\n", "DEVICE", "LAYERS", "WEIGHTS", "KV CACHE", "HEADROOM", "PAGED",
              "STAGE ms", "HOP ms", "WIRE");
  for (const auto& s : plan["stages"]) {
    const std::string wire = s.value("wire_type", "");
    const double paged = s.value("paged_bytes", 0.0);  // read from storage every step (issue 19)
    std::printf("%-16s %-10s %12s %12s %12s %12s %10.2f %10.2f %5s\n", s["device"].get<std::string>().c_str(),
                layers(s["first_layer"].get<int>(), s["last_layer"].get<int>()).c_str(),
                gb(s["weight_bytes"].get<double>()).c_str(), gb(s["kv_bytes"].get<double>()).c_str(),
                gb(s["headroom_bytes"].get<double>()).c_str(), paged > 0 ? gb(paged).c_str() : "-", s["stage_time_ms"].get<double>(),
                s["hop_time_ms"].get<double>(), wire.empty() ? "ids" : wire.c_str());
  }
  if (plan.contains("kv_type"))
    std::printf("KV cache: %s, %d tokens for each of %d conversations\n", plan["kv_type"].get<std::string>().c_str(),
                plan.value("n_ctx", 0), plan.value("max_sequences", 0));
  // One stream's pace, all streams' throughput and the first token's wait are three figures,
  // each with what it assumes.
  const auto& p = plan["predicted"];
  std::printf("predicted: %.1f ms/token (%.1f tokens/s) for one conversation; %.1f tokens/s over %d at once; first token %.0f "
              "ms after a %d-token prompt\n",
              p["ms_per_token"].get<double>(), p.value("tokens_per_s_one_stream", 0.0), p["tokens_per_s"].get<double>(),
              p.value("streams", 1), p["ttft_ms"].get<double>(), p.value("prompt_tokens", 0));
  for (const auto& s : plan["stages"]) print_paging(s);
  for (const auto& why : plan["left_out"]) std::printf("left out: %s\n", why.get<std::string>().c_str());
}

struct LaunchArgs {
  std::string model, objective = "latency", split;
  std::vector<std::string> devices;
  uint32_t ctx = 0, streams = 0;
  bool json = false;
  std::string kv_type = kDefaultKvType;
  std::string wire_type = "f32";
  std::string draft = "none";
  uint32_t draft_max = 0;
};

// A draft model's or an oracle's file is read by the head, in its own working directory: sent
// absolute.
std::string draft_choice(const std::string& draft) {
  const std::string oracle = "oracle:";
  const bool is_oracle = draft.rfind(oracle, 0) == 0;
  const std::string path = is_oracle ? draft.substr(oracle.size()) : draft;
  if (!(is_oracle || cluster::is_draft_model(draft)) || !std::filesystem::exists(path)) return draft;
  return (is_oracle ? oracle : "") + std::filesystem::absolute(path).lexically_normal().string();
}

void launch(const HeadTarget& head, const LaunchArgs& a) {
  HeadClient c(head);
  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<wire::Envelope>().initLaunchRequest();
  // The head resolves the path in its own working directory: send it absolute. A name that is
  // no file here may be a model of the head's library: sent as it is.
  r.setModelPath(std::filesystem::exists(a.model) ? std::filesystem::absolute(a.model).lexically_normal().string() : a.model);
  r.setObjective(a.objective);
  r.setCtx(a.ctx);
  r.setStreams(a.streams);
  r.setKvType(cluster::kv_type_to_wire(kv_type_named(a.kv_type)));
  r.setWireType(wire_type_named(a.wire_type));
  r.setDraft(draft_choice(a.draft));
  r.setDraftMax(a.draft_max);
  r.setSplit(a.split);
  auto list = r.initDevices(static_cast<unsigned>(a.devices.size()));
  for (unsigned i = 0; i < a.devices.size(); ++i) list.set(i, a.devices[i]);
  LaunchProgressView progress(stderr, ::isatty(2));
  std::string failure;
  auto failure_category = wire::ErrorCategory::INTERNAL;
  nlohmann::json plan;
  const auto started = std::chrono::steady_clock::now();
  // Weight streaming can take minutes for big models: the timeout is per progress message.
  c.request(
      b,
      [&](wire::Envelope::Reader env) {
        if (env.isLaunchProgress()) {
          const auto p = env.getLaunchProgress();
          if (p.hasPlan()) {  // the plan comes first, before any weights move
            if (!a.json) {
              std::printf("plan for %s:\n", p.getPlan().getModelName().cStr());
              print_plan(transport::plan_view(p.getPlan()));
              std::fflush(stdout);
            }
            return true;
          }
          progress.update(p.getDevice().cStr(), p.getBytesDone(), p.getBytesTotal(), p.getState().cStr());
          return true;
        }
        const auto reply = env.getLaunchReply();
        if (!reply.getOk()) failure = reply.getMessage().cStr(), failure_category = reply.getCategory();
        else plan = transport::plan_view(reply.getPlan());
        return false;
      },
      std::chrono::seconds(120));
  if (!failure.empty()) throw HeadError(failure_category, "launch failed: " + failure);
  if (a.json) {
    std::cout << plan.dump(2) << "\n";
    return;
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("launched %s across %zu device(s) in %.1f s\n", plan["model_name"].get<std::string>().c_str(),
              plan["stages"].size(), s);
  for (const auto& e : plan["events"]) std::printf("event: %s\n", e.get<std::string>().c_str());
}

struct GenerateArgs {
  std::string prompt;
  uint32_t n_predict = 128;
  runtime::SamplingParams sampling;
  bool no_cache = false;
  std::string ids;  // where to write the generated token ids (an oracle draft's file), if anywhere
  std::string timings;  // where to write each token's arrival, if anywhere (benchmarks)
};

// One value a line: the file a benchmark or an oracle draft reads.
template <typename T>
void write_lines(const std::string& path, const std::vector<T>& values, const std::string& what) {
  std::ofstream out(path);
  for (const T& v : values) out << v << '\n';
  if (!out.flush()) throw std::runtime_error("cannot write " + what + " to " + path);
}

void generate(const HeadTarget& head, const GenerateArgs& a) {
  HeadClient c(head);
  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<wire::Envelope>().initGenerateRequest();
  r.setPrompt(a.prompt);
  r.setNPredict(a.n_predict);
  r.setCachePrompt(!a.no_cache);
  cluster::to_wire(a.sampling, r.initSampling());
  runtime::Utf8Stream utf8;
  std::string error;
  auto category = wire::ErrorCategory::INTERNAL;
  std::vector<int32_t> ids;
  std::vector<double> arrivals;  // seconds after the request was sent
  const auto sent = std::chrono::steady_clock::now();
  c.request(
      b,
      [&](wire::Envelope::Reader env) {
        const auto e = env.getGenerateEvent();
        if (!e.getDone()) {
          ids.push_back(e.getToken());
          arrivals.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count());
          const auto t = e.getText();
          const std::string text = utf8.push(std::string_view(t.cStr(), t.size()));
          std::fwrite(text.data(), 1, text.size(), stdout);
          std::fflush(stdout);
          return true;
        }
        error = e.getError().cStr();
        category = e.getErrorCategory();
        const std::string rest = utf8.flush();
        std::fwrite(rest.data(), 1, rest.size(), stdout);
        std::fputc('\n', stdout);
        if (error.empty())
          std::fprintf(stderr, "%u prompt tokens (%u cached), %u generated; first token after %.0f ms, then %.2f tok/s\n",
                       e.getPromptTokens(), e.getCachedTokens(), e.getGeneratedTokens(), e.getTtftMs(), e.getDecodeTokS());
        return false;
      },
      std::chrono::seconds(60));
  if (!error.empty()) throw HeadError(category, error);
  if (!a.ids.empty()) write_lines(a.ids, ids, "the token ids");
  if (!a.timings.empty()) write_lines(a.timings, arrivals, "the token timings");
}

void status(const HeadTarget& head, bool json) {
  const nlohmann::json s = ask_head(
      head, [](wire::Envelope::Builder e) { e.initStatusRequest(); },
      [](wire::Envelope::Reader r) { return transport::status_view(r.getStatusReply()); }, json);
  if (json) return;
  std::printf("head: %s\n", s["head"].get<std::string>().c_str());
  if (s["plan"].is_null()) {
    std::printf("no model loaded\n");
  } else {
    const auto& p = s["plan"];
    std::printf("model: %s (%s)%s\n", p["model_name"].get<std::string>().c_str(), p["model"].get<std::string>().c_str(),
                p.value("ready", false) ? "" : "  NOT READY");
    if (p.contains("failure")) std::printf("failure: %s\n", p["failure"].get<std::string>().c_str());
    if (p.contains("events_dropped"))
      std::printf("event: (%llu earlier events not kept)\n",
                  static_cast<unsigned long long>(p["events_dropped"].get<uint64_t>()));
    if (p.contains("events"))
      for (const auto& e : p["events"]) std::printf("event: %s\n", e.get<std::string>().c_str());
    std::printf("%-16s %-10s %-10s %14s\n", "DEVICE", "LAYERS", "STATE", "RESIDENT");
    for (const auto& st : p["stages"])
      std::printf("%-16s %-10s %-10s %14s\n", st["device"].get<std::string>().c_str(),
                  layers(st["first_layer"].get<int>(), st["last_layer"].get<int>()).c_str(),
                  st["state"].get<std::string>().c_str(), gb(st["resident_bytes"].get<double>()).c_str());
    print_plan(p);
  }
  if (s.contains("launching")) {  // a launch receiving its weights while the model above serves
    const auto& l = s["launching"];
    std::printf("launching: %s (%s), switching once every device has its weights\n", l["model_name"].get<std::string>().c_str(),
                l["model"].get<std::string>().c_str());
    for (const auto& st : l["stages"])
      std::printf("  %-16s %-10s %-10s %s of %s\n", st["device"].get<std::string>().c_str(),
                  layers(st["first_layer"].get<int>(), st["last_layer"].get<int>()).c_str(), st["state"].get<std::string>().c_str(),
                  gb(st["bytes_done"].get<double>()).c_str(), gb(st["bytes_total"].get<double>()).c_str());
  }
  if (s.contains("generation")) {
    const auto& g = s["generation"];
    std::printf("generation: %d active, %d requests, %d tokens; last: %.2f tok/s, first token after %.0f ms\n",
                g["active"].get<int>(), g["requests"].get<int>(), g["tokens_generated"].get<int>(),
                g["last_decode_tok_s"].get<double>(), g["last_ttft_ms"].get<double>());
    if (g.contains("speculation") && !g["speculation"]["draft"].get<std::string>().empty()) {
      const auto& sp = g["speculation"];
      std::printf("speculation: %s drafts, %llu tokens drafted, %llu accepted (%.0f%%); %.2f tokens per pass\n",
                  sp["draft"].get<std::string>().c_str(), static_cast<unsigned long long>(sp["tokens_drafted"].get<uint64_t>()),
                  static_cast<unsigned long long>(sp["tokens_accepted"].get<uint64_t>()),
                  100 * sp["acceptance_rate"].get<double>(), sp["tokens_per_pass"].get<double>());
    }
  }
  const auto& d = s["dropped"];
  if (s.contains("security"))
    std::printf("security: %s, %llu connections refused (unpaired keys)\n",
                s["security"] == "curve" ? "CURVE encryption + paired keys only" : "none (--insecure)",
                static_cast<unsigned long long>(s.value("refused_handshakes", uint64_t{0})));
  std::printf("dropped messages: %d malformed, %d out of plan, %d unexpected, %d bad payload\n", d["malformed"].get<int>(),
              d["out_of_plan"].get<int>(), d["unexpected"].get<int>(), d["bad_payload"].get<int>());
}

void stop(const HeadTarget& head) {
  HeadClient c(head);
  capnp::MallocMessageBuilder b;
  b.initRoot<wire::Envelope>().initStopRequest();
  c.request(b, [&](wire::Envelope::Reader env) {
    std::printf("%s\n", env.getStopReply().getMessage().cStr());
    return false;
  });
}

void print_token(const std::string& data_dir) {
  const std::string token = transport::read_first_line(data_dir + "/keys/join-token");
  if (token.empty())
    throw std::runtime_error("no join token in " + data_dir + "/keys: pass --data-dir of the head, started without --insecure");
  std::cout << token << "\n";
}

}  // namespace

void add_cluster_commands(CLI::App& app) {
  auto head = std::make_shared<HeadTarget>(HeadTarget{default_head(), cluster::default_data_dir()});
  app.add_option("--head", head->head, "HOST:PORT of the head (default: $HEARTH_HEAD or 127.0.0.1:47400)");
  app.add_option("--data-dir", head->data_dir,
                 "A hearthd data directory on this machine whose keys authenticate the CLI (default: $HEARTH_DATA_DIR or "
                 "~/.local/share/hearth)");

  CLI::App* tk = app.add_subcommand("token", "Print the head's join token (run on the head; reads its data directory)");
  tk->callback([head] { print_token(head->data_dir); });

  auto dj = std::make_shared<bool>(false);
  CLI::App* d = app.add_subcommand("devices", "List the devices registered with the head");
  d->add_flag("--json", *dj, "Print JSON");
  d->callback([head, dj] { devices(*head, *dj); });

  auto mj = std::make_shared<bool>(false);
  CLI::App* mo = app.add_subcommand("models", "List the GGUF files of the head's models directories and what each would take");
  mo->add_flag("--json", *mj, "Print JSON");
  mo->callback([head, mj] { models(*head, *mj); });

  auto la = std::make_shared<LaunchArgs>();
  CLI::App* l = app.add_subcommand("launch", "Plan a split of a model over the devices, send the weights, load");
  l->add_option("-m,--model", la->model, "GGUF model file on the head, or the name of one in its library (`hearth models`)")
      ->required();
  l->add_option("--objective", la->objective, "latency | throughput | ttft")->capture_default_str();
  l->add_option("--ctx", la->ctx, "Context tokens per conversation (default: the model's, at most 4096)");
  l->add_option("--streams", la->streams, "Conversations at once (default 4)");
  l->add_option("--devices", la->devices, "Only these devices (names, comma separated)")->delimiter(',');
  l->add_option("--split", la->split, "By hand: NAME:LAYERS,... in pipeline order, the head first (e.g. head:2,a:2,b:1)");
  l->add_flag("--json", la->json, "Print the plan as JSON");
  add_kv_type_option(l, la->kv_type);
  add_wire_type_option(l, la->wire_type);
  l->add_option("--draft", la->draft,
                "Speculative decoding: none, ngram (drafts from the conversation itself), FILE.gguf (a small model of the same "
                "vocabulary, run on the head), or oracle:FILE (benchmarks: the target's own recorded continuation, token ids)")
      ->check([](const std::string& v) {
        return cluster::is_draft_choice(v) ? std::string() : "none, ngram, FILE.gguf or oracle:FILE";
      })
      ->capture_default_str();
  l->add_option("--draft-max", la->draft_max, "The most tokens one draft holds (default 8; the pace adapts below it)");
  l->callback([head, la] { launch(*head, *la); });

  auto ga = std::make_shared<GenerateArgs>();
  CLI::App* g = app.add_subcommand("generate", "Stream a continuation through the cluster");
  g->add_option("-p,--prompt", ga->prompt, "Prompt text")->required();
  g->add_option("-n,--n-predict", ga->n_predict, "Tokens to generate at most")->capture_default_str();
  g->add_option("--temp", ga->sampling.temperature, "Temperature; 0 = greedy");
  g->add_option("--top-k", ga->sampling.top_k, "Keep the K most likely tokens; 0 = off");
  g->add_option("--top-p", ga->sampling.top_p, "Nucleus sampling threshold; 1 = off");
  g->add_option("--min-p", ga->sampling.min_p, "Minimum probability relative to the top; 0 = off");
  g->add_option("--repeat-penalty", ga->sampling.repeat_penalty, "Penalty for recent tokens; 1 = off");
  g->add_option("--seed", ga->sampling.seed, "Random seed");
  g->add_flag("--no-cache-prompt", ga->no_cache, "Compute the whole prompt, even where a kept KV cache holds its beginning");
  g->add_option("--ids", ga->ids, "Also write the generated token ids to this file (for `hearth launch --draft oracle:FILE`)");
  g->add_option("--timings", ga->timings,
                "Also write when each token arrived, in seconds after the request, one a line (for benchmarks)");
  g->callback([head, ga] { generate(*head, *ga); });

  auto sj = std::make_shared<bool>(false);
  CLI::App* s = app.add_subcommand("status", "The loaded model, its plan, and how it runs");
  s->add_flag("--json", *sj, "Print JSON");
  s->callback([head, sj] { status(*head, *sj); });

  CLI::App* st = app.add_subcommand("stop", "Unload the model from every device");
  st->callback([head] { stop(*head); });
}

}  // namespace hearth::cli
