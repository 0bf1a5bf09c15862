// `hearth plan` and `hearth profile` end to end, and the GGUF -> partitioner::ModelSpec bridge.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "partitioner/model_spec.h"
#include "runtime/format/gguf.h"
#include "runtime/model/model_config.h"
#include "runtime/model/model_spec_gguf.h"
#include "tests/test_util.h"

using hearth::test::run_cli;
using hearth::test::TempDir;
using nlohmann::json;

namespace {

namespace fs = std::filesystem;

std::string device(const std::string& stem) {
  return (fs::path(__FILE__).parent_path().parent_path() / "profiles" / "devices" / (stem + ".json")).string();
}

const std::vector<std::string> kAllDevices{"raspberry-pi-5-8gb",  "x86-laptop-16gb", "jetson-orin-nano-8gb",
                                           "macbook-air-m2-16gb", "desktop-32gb",    "android-phone-12gb"};

// `hearth plan --json` with the given arguments; fails the test unless it succeeds.
json plan_json(std::vector<std::string> args) {
  args.insert(args.begin(), "plan");
  args.push_back("--json");
  const auto r = run_cli(args);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return json::parse(r.out);
}

// The stages' layer ranges are contiguous, start at 0 and end at n_layers; the head is first.
void check_covers(const json& plan, int n_layers, const std::string& head_name) {
  const json& stages = plan.at("stages");
  REQUIRE(!stages.empty());
  CHECK(stages[0].at("device").get<std::string>() == head_name);
  CHECK(stages[0].at("has_embedding").get<bool>());
  CHECK(stages.back().at("has_output").get<bool>());
  int next = 0;
  for (const json& s : stages) {
    CHECK(s.at("first_layer").get<int>() == next);
    CHECK(s.at("last_layer").get<int>() >= next);
    CHECK(s.at("headroom_bytes").get<double>() >= 0);
    next = s.at("last_layer").get<int>();
  }
  CHECK(next == n_layers);
  const json& p = plan.at("predicted");
  CHECK(p.at("ms_per_token").get<double>() > 0);
  CHECK(p.at("tokens_per_s").get<double>() > 0);
  CHECK(p.at("ttft_ms").get<double>() > 0);
}

double sum_bytes(const hearth::runtime::GgufFile& f, const std::string& prefix) {
  double n = 0;
  for (const auto& t : f.tensors())
    if (t.name.rfind(prefix, 0) == 0) n += static_cast<double>(t.n_bytes);
  return n;
}

}  // namespace

TEST_SUITE("plan_cli") {
  TEST_CASE("model_spec_from_shape sizes Gemma 4 and Qwen 3.5 blocks as their GGUF files hold them") {
    // The planner's presets have no file: each layout's shape arithmetic is checked here against
    // the tensor directory of a random model mkmodel writes from the same shape (f32: one byte
    // count per weight; the shape counts the norms only roughly, hence the 1.5%).
    using namespace hearth;
    using partitioner::ModelShape;
    struct Case {
      const char* what;
      ModelShape shape;
    };
    const ModelShape small{.name = "m",
                           .n_layers = 10,
                           .n_embd = 128,
                           .n_ff = 384,
                           .n_head = 4,
                           .n_kv_head = 2,
                           .n_vocab = 512,
                           .weight_type = "f32",
                           .head_dim = 32};
    ModelShape gemma4 = small;
    gemma4.tied_embeddings = true;
    gemma4.full_attention_period = 5;
    gemma4.head_dim_full = 64;
    ModelShape qwen35 = small;
    qwen35.n_layers = 8;
    qwen35.full_attention_period = 4;
    qwen35.linear_k_heads = 2;
    qwen35.linear_v_heads = 4;
    qwen35.linear_head_dim = 32;
    qwen35.attn_output_gate = true;
    std::vector<Case> cases;
    {  // E2B as published: per-layer inputs, the last 5 layers reading the caches of layers 3 and
       // 4 with a double-wide FFN, full layers with V and as many KV heads
      ModelShape s = gemma4;
      s.n_kv_head_full = 2;
      s.n_embd_per_layer = 32;
      s.n_shared_kv_layers = 5;
      s.shared_kv_double_ffn = true;
      cases.push_back({"gemma4 E", s});
    }
    {  // 26B-A4B-like: a dense FFN beside 8 experts, full layers with one KV head and K as V
      ModelShape s = gemma4;
      s.n_layers = 6;
      s.full_attention_period = 6;
      s.n_ff = 96;
      s.n_expert = 8;
      s.n_expert_used = 2;
      s.n_ff_dense = 384;
      s.n_kv_head_full = 1;
      s.full_k_is_v = true;
      cases.push_back({"gemma4 MoE", s});
    }
    cases.push_back({"qwen35", qwen35});
    {
      ModelShape s = qwen35;
      s.n_ff = 96;
      s.n_expert = 8;
      s.n_expert_used = 2;
      s.n_ff_shared_expert = 128;
      cases.push_back({"qwen35moe", s});
    }
    TempDir dir;
    for (const Case& c : cases) {
      CAPTURE(std::string(c.what));
      runtime::MakeModelOptions o;
      runtime::apply_preset_layout(c.shape, o);
      CHECK(std::string(c.what).starts_with(o.arch));
      const runtime::GgufFile f = runtime::GgufFile::open(test::make_model(dir, std::string(c.what) + ".gguf", o));
      const partitioner::ModelSpec file = runtime::model_spec_from_gguf(f, runtime::read_model_config(f));
      const partitioner::ModelSpec shape = partitioner::model_spec_from_shape(c.shape);  // f32, as the file
      REQUIRE(shape.n_layers == file.n_layers);
      for (int l = 0; l < file.n_layers; ++l) {
        CAPTURE(l);
        const auto i = static_cast<size_t>(l);
        CHECK(shape.layer_weight_bytes[i] == doctest::Approx(file.layer_weight_bytes[i]).epsilon(0.015));
        CHECK(shape.layer_flops_per_token[i] == doctest::Approx(file.layer_flops_per_token[i]).epsilon(0.015));
      }
      CHECK(shape.layer_expert_bytes == file.layer_expert_bytes);
      CHECK(shape.layer_state_bytes == file.layer_state_bytes);
      CHECK(shape.layer_shares_kv == file.layer_shares_kv);
      CHECK(shape.no_cut_at == file.no_cut_at);
      CHECK(shape.embedding_bytes == file.embedding_bytes);
      CHECK(shape.per_layer_input_bytes == doctest::Approx(file.per_layer_input_bytes).epsilon(0.001));
      CHECK(shape.n_kv_head * shape.head_dim == file.n_kv_head * file.head_dim);
      // A tied head reuses the token table, not the per-layer ones: every byte counted once (but
      // Gemma 4's 128-byte rope_freqs, which no stage's estimate holds).
      CHECK(partitioner::total_weight_bytes(file) == doctest::Approx(sum_bytes(f, "")).epsilon(1e-4));
    }
    // Every planner preset has a layout mkmodel can write (`hearth mkmodel --preset NAME`).
    for (const std::string& name : partitioner::preset_names()) {
      CAPTURE(name);
      runtime::MakeModelOptions o;
      CHECK_NOTHROW(runtime::apply_preset_layout(*partitioner::preset_shape(name), o));
    }
  }

  TEST_CASE("model_spec_from_gguf: exact bytes per block, FLOPs, embedding and LM head") {
    using namespace hearth;
    TempDir dir;
    runtime::MakeModelOptions o;
    o.type = runtime::TensorType::Q8_0;
    const std::string path = test::make_model(dir, "m.gguf", o);
    const runtime::GgufFile f = runtime::GgufFile::open(path);
    const runtime::ModelConfig c = runtime::read_model_config(f);
    const partitioner::ModelSpec spec = runtime::model_spec_from_gguf(f, c);

    REQUIRE(spec.n_layers == c.n_layer);
    REQUIRE(spec.layer_weight_bytes.size() == static_cast<size_t>(c.n_layer));
    const double matmul_params = 2.0 * c.n_embd * c.q_dim() + 2.0 * c.n_embd * c.kv_dim() + 3.0 * c.n_embd * c.n_ff;
    double all_blocks = 0;
    for (int l = 0; l < c.n_layer; ++l) {
      const double bytes = sum_bytes(f, "blk." + std::to_string(l) + ".");
      CHECK(spec.layer_weight_bytes[static_cast<size_t>(l)] == bytes);
      CHECK(spec.layer_flops_per_token[static_cast<size_t>(l)] == doctest::Approx(2 * matmul_params));
      all_blocks += bytes;
    }
    CHECK(spec.weight_type == "q8_0");
    CHECK(!spec.tied_embeddings);
    CHECK(spec.embedding_bytes == f.require_tensor("token_embd.weight").n_bytes);
    CHECK(spec.output_bytes == f.require_tensor("output.weight").n_bytes + f.require_tensor("output_norm.weight").n_bytes);
    CHECK(spec.output_flops_per_token == doctest::Approx(2.0 * c.n_vocab * c.n_embd));
    CHECK(spec.n_head == c.n_head);
    CHECK(spec.n_kv_head == c.n_head_kv);
    CHECK(spec.head_dim == c.head_dim);
    CHECK(spec.n_embd == c.n_embd);
    CHECK(spec.n_ff == c.n_ff);
    CHECK(spec.n_vocab == c.n_vocab);
    // Every byte of the file's tensors is somewhere in the spec, once.
    CHECK(partitioner::total_weight_bytes(spec) == doctest::Approx(sum_bytes(f, "")));
    CHECK(all_blocks + spec.embedding_bytes + spec.output_bytes == doctest::Approx(sum_bytes(f, "")));

    SUBCASE("no output.weight: tied embeddings") {
      const std::string tied = dir.file("tied.gguf");
      test::rewrite_gguf(path, tied, [](runtime::GgufMetadata&, std::vector<runtime::GgufTensorInfo>& ts) {
        std::erase_if(ts, [](const auto& t) { return t.name == "output.weight"; });
      });
      const runtime::GgufFile g = runtime::GgufFile::open(tied);
      const partitioner::ModelSpec s = runtime::model_spec_from_gguf(g, runtime::read_model_config(g));
      CHECK(s.tied_embeddings);
      CHECK(s.output_bytes == g.require_tensor("token_embd.weight").n_bytes + g.require_tensor("output_norm.weight").n_bytes);
      CHECK(partitioner::total_weight_bytes(s) == doctest::Approx(sum_bytes(g, "")));
    }

    SUBCASE("mixed types: the type of most matrix bytes wins") {
      const std::string mixed = dir.file("mixed.gguf");
      test::rewrite_gguf(path, mixed, [](runtime::GgufMetadata&, std::vector<runtime::GgufTensorInfo>& ts) {
        for (auto& t : ts)
          if (t.name.ends_with("ffn_gate.weight") || t.name.ends_with("ffn_down.weight")) t.type = runtime::TensorType::F16;
      });
      const runtime::GgufFile g = runtime::GgufFile::open(mixed);
      const partitioner::ModelSpec s = runtime::model_spec_from_gguf(g, runtime::read_model_config(g));
      CHECK(s.weight_type == "f16");  // 2 x 2 x E x F bytes of f16 against ~1.06 x (2EQ + 2E KV + EF) of q8_0
      CHECK(s.layer_weight_bytes[1] == sum_bytes(g, "blk.1."));
    }
  }

  TEST_CASE("plan --json on the shipped device profiles covers every layer") {
    const std::map<std::string, int> presets{{"llama-3.2-1b", 16}, {"llama-3-8b", 32}, {"qwen2.5-14b", 48}};
    for (const auto& [preset, n_layers] : presets) {
      for (const std::string algorithm : {"dp", "memory", "equal"}) {
        CAPTURE(preset);
        CAPTURE(algorithm);
        std::vector<std::string> args{"--preset", preset, "--type", "q4_0", "--algorithm", algorithm};
        for (const std::string& d : kAllDevices) args.insert(args.end(), {"--device", device(d)});
        const json plan = plan_json(args);
        check_covers(plan, n_layers, "Raspberry Pi 5 8GB");
        CHECK(plan.at("links").at("default").get<std::string>() == "access_links");
      }
    }
    // Throughput with several streams and ttft run too.
    for (const std::string objective : {"throughput", "ttft"}) {
      const json plan =
          plan_json({"--preset", "llama-3-8b", "--objective", objective, "--streams", "4", "--device", device("x86-laptop-16gb"),
                     "--device", device("jetson-orin-nano-8gb"), "--device", device("raspberry-pi-5-8gb")});
      check_covers(plan, 32, "x86 laptop, Ryzen 7 7840U, 16 GB LPDDR5-6400");
    }
  }

  TEST_CASE("plan on a GGUF file uses its exact sizes") {
    TempDir dir;
    hearth::runtime::MakeModelOptions o;
    o.type = hearth::runtime::TensorType::Q4_0;
    const std::string model = hearth::test::make_model(dir, "m.gguf", o);
    const json plan = plan_json({"--model", model, "--device", device("raspberry-pi-5-8gb"), "--device", device("desktop-32gb")});
    check_covers(plan, 4, "Raspberry Pi 5 8GB");
    CHECK(plan.at("model").at("weight_type").get<std::string>() == "q4_0");
    CHECK(plan.at("options").at("ctx").get<int>() == 512);  // the model's training context
    CHECK(plan.at("options").at("kv_bytes_per_elem").get<double>() == 2);  // f16 by default
    // --kv-type sizes the cache: f32 twice f16, q8_0 34/32 bytes per element.
    const auto kv_bytes = [&](const json& p) {
      double sum = 0;
      for (const auto& st : p.at("stages")) sum += st.at("kv_bytes").get<double>();
      return sum;
    };
    const std::vector<std::string> base{"--model", model, "--device", device("raspberry-pi-5-8gb"), "--device", device("desktop-32gb")};
    auto with = [&](const char* type) {
      std::vector<std::string> args = base;
      args.insert(args.end(), {"--kv-type", type});
      return plan_json(args);
    };
    const json f32 = with("f32"), q8 = with("q8_0");
    CHECK(f32.at("options").at("kv_bytes_per_elem").get<double>() == 4);
    CHECK(q8.at("options").at("kv_bytes_per_elem").get<double>() == 34.0 / 32);
    CHECK(kv_bytes(f32) == doctest::Approx(2 * kv_bytes(plan)));
    CHECK(kv_bytes(q8) == doctest::Approx(kv_bytes(plan) * 17 / 32));
    // The text names the type it sized the cache for.
    const auto text = run_cli({"plan", "--model", model, "--device", device("desktop-32gb"), "--kv-type", "q8_0"});
    CHECK(text.out.find("KV cache q8_0 for") != std::string::npos);
    CHECK(run_cli({"plan", "--model", model, "--device", device("desktop-32gb")}).out.find("KV cache f16 for") != std::string::npos);
    // --type belongs to presets only.
    CHECK(run_cli({"plan", "--model", model, "--type", "f16", "--device", device("desktop-32gb")}).exit_code != 0);
  }

  TEST_CASE("plan: a model that does not fit exits 1 and says how much is missing") {
    const auto r = run_cli({"plan", "--preset", "llama-3-70b", "--type", "f16", "--device", device("raspberry-pi-5-8gb"),
                            "--device", device("android-phone-12gb")});
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("missing") != std::string::npos);
    CHECK(r.err.find("GB") != std::string::npos);
    const auto j =
        run_cli({"plan", "--preset", "llama-3-70b", "--type", "f16", "--json", "--device", device("raspberry-pi-5-8gb")});
    CHECK(j.exit_code == 1);
    CHECK(json::parse(j.out).at("missing_bytes").get<double>() > 100e9);
  }

  TEST_CASE("plan --link: a very slow link keeps the model on the head") {
    const std::vector<std::string> base{
        "--preset", "llama-3.2-1b", "--device", device("raspberry-pi-5-8gb"), "--device", device("macbook-air-m2-16gb")};
    // By default the MacBook's faster memory wins: the Pi only embeds and samples.
    const json fast = plan_json(base);
    REQUIRE(fast.at("stages").size() == 2);
    CHECK(fast.at("stages")[1].at("device").get<std::string>() == "MacBook Air M2 16GB (10-core GPU)");
    CHECK(fast.at("stages")[1].at("first_layer").get<int>() == 0);

    // 1 Mbit/s and 500 ms each way: not worth leaving the Pi. Devices by file name...
    std::vector<std::string> slow_args = base;
    slow_args.insert(slow_args.end(), {"--link", "raspberry-pi-5-8gb,macbook-air-m2-16gb,1,500"});
    const json slow = plan_json(slow_args);
    REQUIRE(slow.at("stages").size() == 1);
    CHECK(slow.at("stages")[0].at("last_layer").get<int>() == 16);
    CHECK(slow.at("left_out").size() == 1);
    CHECK(slow.at("predicted").at("ms_per_token").get<double>() > fast.at("predicted").at("ms_per_token").get<double>());

    // ...or by profile names, which may contain commas.
    const json by_name =
        plan_json({"--preset", "llama-3.2-1b", "--device", device("raspberry-pi-5-8gb"), "--device", device("x86-laptop-16gb"),
                   "--link", "Raspberry Pi 5 8GB,x86 laptop, Ryzen 7 7840U, 16 GB LPDDR5-6400,1,500"});
    CHECK(by_name.at("stages").size() == 1);
    CHECK(by_name.at("links").at("overrides").size() == 1);

    const auto bad =
        run_cli({"plan", "--preset", "llama-3.2-1b", "--device", device("raspberry-pi-5-8gb"), "--link", "pi,mac,1,5"});
    CHECK(bad.exit_code == 1);
    CHECK(bad.err.find("not two known devices") != std::string::npos);
  }

  TEST_CASE("plan prints a table and states the default link it used") {
    TempDir dir;
    // A profile without a measured link: every pair falls back to kDefaultLink.
    json p;
    std::ifstream(device("desktop-32gb")) >> p;
    p.erase("link");
    const std::string path = dir.file("desktop.json");
    std::ofstream(path) << p.dump();
    const auto r = run_cli({"plan", "--preset", "llama-3-8b", "--device", path, "--device", path});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.find("kDefaultLink (100 Mbit/s, 5 ms one way)") != std::string::npos);
    CHECK(r.out.find("ms/token") != std::string::npos);
    CHECK(r.out.find("TTFT") != std::string::npos);
    CHECK(r.out.find("headroom") != std::string::npos);
    // The second copy of a profile gets its own name; it is left out, and the plan says why.
    CHECK(r.out.find("#2") != std::string::npos);
    CHECK(r.out.find("left out") != std::string::npos);
  }

  TEST_CASE("profile --quick --json measures this device, caches it, and plan reads it") {
    TempDir dir;
    const auto r = run_cli({"profile", "--quick", "--json", "--data-dir", dir.path().string(), "--name", "ci"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const json j = json::parse(r.out);
    CHECK(j.at("name").get<std::string>() == "ci");
    CHECK(j.at("usable_memory_bytes").get<double>() > 0);
    CHECK(j.at("memory_bandwidth_bytes_per_s").get<double>() > 0);
    CHECK(j.at("prefill_flop_s").get<double>() > 0);
    CHECK(j.at("step_overhead_s").get<double>() > 0);
    REQUIRE(j.at("decode_bytes_per_s").contains("q4_0"));
    for (const auto& [type, rate] : j.at("decode_bytes_per_s").items()) CHECK(rate.get<double>() > 0);
    CHECK(j.at("storage_read_bytes_per_s").get<double>() > 0);  // the data directory's storage, for paging
    CHECK(j.at("storage_free_bytes").get<double>() > 0);
    CHECK(j.at("storage").at("path").get<std::string>() == dir.path().string());
    const std::string cached = dir.file("profile.json");
    REQUIRE(fs::exists(cached));

    // The second run reuses the measured speeds (free memory is read again).
    const auto again = run_cli({"profile", "--quick", "--json", "--data-dir", dir.path().string()});
    REQUIRE(again.exit_code == 0);
    const json k = json::parse(again.out);
    CHECK(k.at("memory_bandwidth_bytes_per_s") == j.at("memory_bandwidth_bytes_per_s"));
    CHECK(k.at("measured_at") == j.at("measured_at"));
    CHECK(k.at("name").get<std::string>() == "ci");
    const auto text = run_cli({"profile", "--quick", "--data-dir", dir.path().string()});
    CHECK(text.out.find("cached") != std::string::npos);
    CHECK(text.out.find("sequential read with nothing cached") != std::string::npos);

    const json plan = plan_json({"--preset", "qwen2.5-0.5b", "--device", cached});
    check_covers(plan, 24, "ci");
  }

}  // TEST_SUITE
