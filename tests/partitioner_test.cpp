// Tests of the pure partitioner: properties over random small instances (dp equals
// brute force, plans fit and cover every block once, more devices never hurt,
// determinism), table cases, and the simulator against the closed forms.

#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "partitioner/baselines.h"
#include "partitioner/cost_model.h"
#include "partitioner/metrics.h"
#include "partitioner/partitioner.h"

using namespace hearth::partitioner;

namespace {

constexpr double GB = 1e9;

// ---- fixtures ----

struct Instance {
  ModelSpec spec;
  std::vector<DeviceProfile> devices;
  LinkTable links;
  PartitionOptions options;
};

double uniform(std::mt19937& rng, double lo, double hi) { return std::uniform_real_distribution<>(lo, hi)(rng); }
int uniform_int(std::mt19937& rng, int lo, int hi) { return std::uniform_int_distribution<>(lo, hi)(rng); }

// A small Llama-like model whose blocks differ in size, so block ranges matter.
ModelSpec random_spec(std::mt19937& rng, int n_layers) {
  ModelSpec s;
  s.name = "random";
  s.n_layers = n_layers;
  for (int l = 0; l < n_layers; ++l) {
    const double w = uniform(rng, 0.05, 0.15) * GB;
    s.layer_weight_bytes.push_back(w);
    s.layer_flops_per_token.push_back(2 * w / uniform(rng, 0.5, 2.0));
  }
  s.weight_type = "q8_0";
  s.embedding_bytes = uniform(rng, 0.02, 0.2) * GB;
  s.output_bytes = s.embedding_bytes * uniform(rng, 1.0, 1.5);
  s.output_flops_per_token = 2 * s.output_bytes;
  s.tied_embeddings = uniform_int(rng, 0, 1) == 1;
  s.n_head = 16;
  s.n_kv_head = 4;
  s.head_dim = 64;
  s.n_embd = 1024;
  s.n_ff = 2816;
  s.n_vocab = 32000;
  return s;
}

DeviceProfile random_device(std::mt19937& rng, int index) {
  DeviceProfile d;
  d.name = "dev" + std::to_string(index);
  d.usable_memory_bytes = uniform(rng, 0.25, 1.3) * GB;
  d.memory_bandwidth_bytes_per_s = uniform(rng, 5, 100) * GB;
  d.decode_bytes_per_s["q8_0"] = d.memory_bandwidth_bytes_per_s * uniform(rng, 0.3, 0.8);
  d.prefill_flop_s = uniform(rng, 20, 2000) * 1e9;
  d.step_overhead_s = uniform(rng, 0, 0.002);
  if (uniform(rng, 0, 1) < 0.3) {  // a GPU taking the first blocks of its stage
    GpuProfile g;
    g.name = "gpu" + std::to_string(index);
    g.memory_bytes = uniform(rng, 0.05, 1.0) * GB;
    g.unified_memory = uniform(rng, 0, 1) < 0.5;
    g.memory_bandwidth_bytes_per_s = uniform(rng, 20, 400) * GB;
    g.decode_bytes_per_s["q8_0"] = g.memory_bandwidth_bytes_per_s * uniform(rng, 0.1, 0.6);
    g.prefill_flop_s = uniform(rng, 200, 10000) * 1e9;
    g.layer_overhead_s = uniform(rng, 0, 0.001);
    d.gpu = g;
  }
  return d;
}

// 2-5 devices, 2-12 blocks; some devices are copies of earlier ones on default links,
// so the typed (grouped) search is exercised too.
Instance random_instance(std::mt19937& rng, int max_devices, int max_layers) {
  Instance in;
  in.spec = random_spec(rng, uniform_int(rng, 2, max_layers));
  const int n = uniform_int(rng, 2, max_devices);
  for (int d = 0; d < n; ++d) {
    const bool copy = d >= 2 && uniform_int(rng, 0, 2) == 0;
    in.devices.push_back(copy ? in.devices[d - 1] : random_device(rng, d));
    in.devices.back().name = "dev" + std::to_string(d);
  }
  for (int a = 0; a < n; ++a)
    for (int b = 0; b < n; ++b)
      if (a != b && uniform_int(rng, 0, 2) == 0) in.links.set(a, b, {uniform(rng, 2, 120) * 1e6, uniform(rng, 0.0005, 0.01)});
  in.options.ctx = 512 * uniform_int(rng, 1, 4);
  in.options.streams = 1;
  in.options.prompt_tokens = uniform_int(rng, 4, 64);
  // A quarter carry Gemma 4 E-style per-layer inputs: hops grow wider the earlier the cut.
  if (uniform_int(rng, 0, 3) == 0) in.spec.n_embd_per_layer = in.spec.n_embd / 8 * uniform_int(rng, 1, 3);
  return in;
}

// The first n devices of an instance, with the links among them.
Instance prefix(const Instance& in, int n) {
  Instance out = in;
  out.devices.resize(n);
  out.links.links.clear();
  for (const auto& [pair, link] : in.links.links)
    if (pair.first < n && pair.second < n) out.links.links[pair] = link;
  return out;
}

PlanResult plan(const Instance& in, Algorithm algorithm) {
  PartitionOptions o = in.options;
  o.algorithm = algorithm;
  return plan_partition(in.spec, in.devices, in.links, o);
}

// The objective's figure, lower is better.
double cost(const PartitionPlan& p) {
  switch (p.objective) {
    case Objective::latency: return p.predicted.ms_per_token;
    case Objective::throughput: return -p.predicted.tokens_per_s;
    case Objective::ttft: return p.predicted.ttft_ms;
  }
  return 0;
}

bool close(double a, double b, double relative) { return std::fabs(a - b) <= relative * std::max(std::fabs(a), std::fabs(b)); }

DeviceProfile device(const std::string& name, double memory_gb, double decode_gb_s, double flops = 200e9) {
  DeviceProfile d;
  d.name = name;
  d.usable_memory_bytes = memory_gb * GB;
  d.memory_bandwidth_bytes_per_s = decode_gb_s * GB / kDefaultBandwidthEfficiency;
  d.decode_bytes_per_s["q4_0"] = decode_gb_s * GB;
  d.decode_bytes_per_s["f16"] = decode_gb_s * GB;
  d.prefill_flop_s = flops;
  d.step_overhead_s = 0.0005;
  return d;
}

ModelSpec preset(const std::string& name, const std::string& type) {
  ModelShape shape = *preset_shape(name);
  shape.weight_type = type;
  return model_spec_from_shape(shape);
}

int blocks_on(const PartitionPlan& p, int device) {
  for (const StageAssignment& s : p.stages)
    if (s.device == device) return s.last_layer - s.first_layer;
  return 0;
}

// Runs `check` on `count` random instances with the given objective and workload.
template <class Check>
void for_random_instances(int count, unsigned seed, Objective objective, int max_devices, int max_layers, int max_streams,
                          Check check) {
  std::mt19937 rng(seed);
  for (int i = 0; i < count; ++i) {
    Instance in = random_instance(rng, max_devices, max_layers);
    in.options.objective = objective;
    in.options.streams = uniform_int(rng, 1, max_streams);
    check(in, i);
  }
}

// dp and exhaustive agree on feasibility and, within 1e-9, on the objective.
void check_dp_equals_exhaustive(const Instance& in, int i) {
  const PlanResult dp = plan(in, Algorithm::dp);
  const PlanResult brute = plan(in, Algorithm::exhaustive);
  CAPTURE(i);
  REQUIRE(dp.ok() == brute.ok());
  if (!dp.ok()) {
    CHECK(dp.error.kind == Infeasibility::insufficient_memory);
    return;
  }
  CHECK(dp.plan->exact);
  CHECK(close(cost(*dp.plan), cost(*brute.plan), 1e-9));
}

}  // namespace

// ---- properties over random small instances ----

TEST_CASE("partitioner: dp equals exhaustive for latency") {
  for_random_instances(2500, 1, Objective::latency, 5, 12, 1, check_dp_equals_exhaustive);
}

TEST_CASE("partitioner: dp equals exhaustive for throughput") {
  for_random_instances(400, 2, Objective::throughput, 4, 8, 6, check_dp_equals_exhaustive);
}

TEST_CASE("partitioner: dp equals exhaustive for ttft") {
  for_random_instances(300, 3, Objective::ttft, 4, 8, 1, check_dp_equals_exhaustive);
}

TEST_CASE("partitioner: plans fit memory and cover every block once, in order") {
  for (Objective objective : {Objective::latency, Objective::throughput, Objective::ttft}) {
    for_random_instances(300, 4, objective, 5, 12, 4, [](const Instance& in, int i) {
      for (Algorithm a : {Algorithm::dp, Algorithm::memory, Algorithm::equal}) {
        const PlanResult r = plan(in, a);
        if (!r.ok()) continue;
        CAPTURE(i);
        CHECK(validate_plan(in.spec, in.devices, in.options, *r.plan).empty());
        for (const StageAssignment& s : r.plan->stages) CHECK(s.headroom_bytes >= 0);
      }
    });
  }
}

TEST_CASE("partitioner: adding a device never makes the optimum worse") {
  for (Objective objective : {Objective::latency, Objective::throughput, Objective::ttft}) {
    for_random_instances(300, 5, objective, 5, 10, 3, [](const Instance& in, int i) {
      const PlanResult fewer = plan(prefix(in, static_cast<int>(in.devices.size()) - 1), Algorithm::dp);
      const PlanResult more = plan(in, Algorithm::dp);
      CAPTURE(i);
      if (fewer.ok()) {
        REQUIRE(more.ok());
        CHECK(cost(*more.plan) <= cost(*fewer.plan) + 1e-12 * std::fabs(cost(*fewer.plan)));
      }
    });
  }
}

TEST_CASE("partitioner: dp plans are deterministic") {
  for_random_instances(200, 6, Objective::throughput, 5, 12, 4, [](const Instance& in, int i) {
    const PlanResult a = plan(in, Algorithm::dp), b = plan(in, Algorithm::dp);
    CAPTURE(i);
    REQUIRE(a.ok() == b.ok());
    if (!a.ok()) return;
    REQUIRE(a.plan->stages.size() == b.plan->stages.size());
    for (size_t s = 0; s < a.plan->stages.size(); ++s) {
      CHECK(a.plan->stages[s].device == b.plan->stages[s].device);
      CHECK(a.plan->stages[s].last_layer == b.plan->stages[s].last_layer);
    }
  });
}

TEST_CASE("partitioner: simulator reproduces the closed-form predictions") {
  for_random_instances(150, 7, Objective::throughput, 4, 10, 8, [](const Instance& in, int i) {
    const PlanResult r = plan(in, Algorithm::dp);
    if (!r.ok()) return;
    CAPTURE(i);
    const Prediction& p = r.plan->predicted;
    const SimulationResult sim = simulate_plan(in.spec, in.devices, in.links, in.options, *r.plan);
    CHECK(close(sim.ms_per_token, p.ms_per_token, 1e-9));
    CHECK(close(sim.ttft_ms, p.ttft_ms, 1e-9));
    if (in.options.streams % p.micro_batch == 0) {  // the closed form assumes equal micro-batches
      CHECK(close(sim.tokens_per_s, p.tokens_per_s, 1e-3));
      CHECK(close(sim.stream_ms_per_token, p.stream_ms_per_token, 1e-3));
    }
  });
}

// ---- table cases ----

TEST_CASE("partitioner: presets produce the published sizes") {
  CHECK(total_weight_bytes(preset("tinyllama-1.1b", "q4_0")) == doctest::Approx(0.62 * GB).epsilon(0.03));
  CHECK(total_weight_bytes(preset("llama-2-7b", "f16")) == doctest::Approx(13.48 * GB).epsilon(0.01));
  CHECK(total_weight_bytes(preset("llama-3-8b", "f16")) == doctest::Approx(16.06 * GB).epsilon(0.01));
  CHECK(total_weight_bytes(preset("qwen2.5-0.5b", "f16")) == doctest::Approx(0.99 * GB).epsilon(0.01));
  CHECK(total_weight_bytes(preset("qwen2.5-72b", "f16")) == doctest::Approx(145.4 * GB).epsilon(0.01));
  // Gemma 3's text models: 1.0B, 3.88B, 11.77B and 27.0B parameters at 2 bytes each.
  CHECK(total_weight_bytes(preset("gemma-3-1b", "f16")) == doctest::Approx(2.0 * GB).epsilon(0.02));
  CHECK(total_weight_bytes(preset("gemma-3-4b", "f16")) == doctest::Approx(7.76 * GB).epsilon(0.02));
  CHECK(total_weight_bytes(preset("gemma-3-12b", "f16")) == doctest::Approx(23.54 * GB).epsilon(0.02));
  CHECK(total_weight_bytes(preset("gemma-3-27b", "f16")) == doctest::Approx(54.0 * GB).epsilon(0.02));
  CHECK(preset("gemma-3-27b", "f16").head_dim == 128);
  CHECK(preset_names().size() == 31);
  CHECK_FALSE(preset_shape("gpt-5").has_value());
  CHECK(*bytes_per_weight("q4_k") == doctest::Approx(4.5 / 8));
  ModelShape bad = *preset_shape("llama-2-7b");
  bad.weight_type = "q3_xyz";
  CHECK_THROWS_AS(model_spec_from_shape(bad), std::invalid_argument);
}

TEST_CASE("partitioner: MoE presets have their published total and active parameter counts") {
  // Qwen3-30B-A3B: 30.5B parameters, 3.3B active; gpt-oss-20b: 20.9B / 3.6B; gpt-oss-120b:
  // 116.8B / 5.1B (model cards). In f16, 2 bytes each; active = blocks read by a token + LM head,
  // and Qwen's count includes the embedding table too (OpenAI's does not).
  struct Case {
    const char* name;
    double total, active;
    bool active_counts_embedding;
  };
  for (const Case c : {Case{"qwen3-30b-a3b", 30.5e9, 3.3e9, true}, Case{"gpt-oss-20b", 20.9e9, 3.6e9, false},
                       Case{"gpt-oss-120b", 116.8e9, 5.1e9, false}}) {
    CAPTURE(std::string(c.name));
    ModelShape shape = *preset_shape(c.name);
    shape.weight_type = "f16";
    shape.expert_type.clear();  // every matrix in f16, to count parameters
    const ModelSpec s = model_spec_from_shape(shape);
    CHECK(total_weight_bytes(s) == doctest::Approx(2 * c.total).epsilon(0.02));
    const double active = active_weight_bytes(s) + s.output_bytes + (c.active_counts_embedding ? s.embedding_bytes : 0);
    CHECK(active == doctest::Approx(2 * c.active).epsilon(0.03));
    CHECK(s.layer_expert_bytes.size() == static_cast<size_t>(s.n_layers));
  }
  // gpt-oss is published with MXFP4 experts (17 bytes per 32 weights) whatever --type says of
  // the rest; `--type` still sizes attention, embeddings and head.
  ModelShape oss = *preset_shape("gpt-oss-20b");
  CHECK(oss.expert_type == "mxfp4");
  oss.weight_type = "q8_0";
  const ModelSpec mx = model_spec_from_shape(oss);
  oss.expert_type = "q8_0";
  const ModelSpec q8 = model_spec_from_shape(oss);
  CHECK(mx.layer_expert_bytes[0] == doctest::Approx(q8.layer_expert_bytes[0] * (17.0 / 32) / (34.0 / 32)));
  CHECK(mx.layer_weight_bytes[0] - mx.layer_expert_bytes[0] == doctest::Approx(q8.layer_weight_bytes[0] - q8.layer_expert_bytes[0]));
  CHECK(mx.embedding_bytes == q8.embedding_bytes);
  oss.expert_type = "q3_xyz";
  CHECK_THROWS_AS(model_spec_from_shape(oss), std::invalid_argument);

  // A dense model reads every byte.
  const ModelSpec dense = preset("llama-3-8b", "q4_0");
  CHECK(active_weight_bytes(dense) == doctest::Approx(total_weight_bytes(dense) - dense.embedding_bytes - dense.output_bytes));
}

TEST_CASE("partitioner: Gemma 4 and Qwen 3.5 presets have their published sizes and layouts") {
  // Parameter counts (2 bytes each in f16) of the text models. Gemma 4 (model card): 31B 30.7B;
  // 26B-A4B 25.2B, 3.8B active counting the (tied) embedding once; E2B and E4B 2.3B and 4.5B
  // "effective", i.e. all but the per-layer embedding table (their totals include vision and
  // audio encoders). Qwen 3.5: the size in the name, whose published counts also hold a vision
  // encoder (0.1-0.5B: the small model is checked more loosely); the active size in the name is
  // rounded from a count that may or may not include the embedding table (A3B fits without it,
  // A10B and A17B with it), so it must lie between the two.
  struct Case {
    const char* name;
    double total, tolerance;
  };
  for (const Case c : {Case{"gemma-4-31b", 30.7e9, 0.02}, Case{"gemma-4-26b-a4b", 25.2e9, 0.02},
                       Case{"qwen3.5-0.8b", 0.8e9, 0.08}, Case{"qwen3.5-27b", 27e9, 0.02}, Case{"qwen3.5-35b-a3b", 35e9, 0.02},
                       Case{"qwen3.5-122b-a10b", 122e9, 0.02}, Case{"qwen3.5-397b-a17b", 397e9, 0.02}}) {
    CAPTURE(std::string(c.name));
    CHECK(total_weight_bytes(preset(c.name, "f16")) == doctest::Approx(2 * c.total).epsilon(c.tolerance));
  }
  for (const auto& [name, active] :
       {std::pair{"qwen3.5-35b-a3b", 3e9}, std::pair{"qwen3.5-122b-a10b", 10e9}, std::pair{"qwen3.5-397b-a17b", 17e9}}) {
    CAPTURE(std::string(name));
    const ModelSpec s = preset(name, "f16");
    CHECK(active_weight_bytes(s) + s.output_bytes < 2 * active * 1.05);
    CHECK(active_weight_bytes(s) + s.output_bytes + s.embedding_bytes > 2 * active * 0.95);
  }
  const ModelSpec moe = preset("gemma-4-26b-a4b", "f16");
  CHECK(active_weight_bytes(moe) + moe.embedding_bytes == doctest::Approx(2 * 3.8e9).epsilon(0.02));
  for (const auto& [name, effective] : {std::pair{"gemma-4-e2b", 2.3e9}, std::pair{"gemma-4-e4b", 4.5e9}}) {
    CAPTURE(std::string(name));
    const ModelSpec s = preset(name, "f16");
    const double table = 2.0 * s.n_vocab * s.n_layers * 256;
    CHECK(total_weight_bytes(s) - table == doctest::Approx(2 * effective).epsilon(0.04));
  }

  // E2B: layers 15-34 read the caches of layers 13 (sliding) and 14 (full), so no stage may
  // start after layer 13 and before the end; they hold no KV.
  const ModelSpec e2b = preset("gemma-4-e2b", "q4_k");
  REQUIRE(e2b.no_cut_at.size() == 36);
  for (int b = 0; b <= 35; ++b) CHECK(can_cut(e2b, b) == (b <= 13 || b == 35));
  CHECK(std::count(e2b.layer_shares_kv.begin(), e2b.layer_shares_kv.end(), true) == 20);
  CHECK(e2b.layer_weight_bytes[20] > 1.5 * e2b.layer_weight_bytes[10]);  // E2B's shared-KV layers have a double-wide FFN

  // Qwen 3.5: three delta-nets of fixed state to every attention layer.
  const ModelSpec q = preset("qwen3.5-27b", "q4_k");
  REQUIRE(q.layer_state_bytes.size() == 64);
  const double channels = 2 * 16 * 128 + 48 * 128;
  for (int l = 0; l < 64; ++l)
    CHECK(q.layer_state_bytes[static_cast<size_t>(l)] == doctest::Approx((l % 4 == 3) ? 0 : 4 * (3 * channels + 48 * 128 * 128)));
}

TEST_CASE("partitioner: sliding-window layers reserve a ring of window + max_batch rows, not the whole context") {
  ModelSpec s = preset("gemma-3-27b", "q4_0");
  REQUIRE(s.layer_window.size() == 62u);
  CHECK(s.layer_window[0] == 1024);
  CHECK(s.layer_window[5] == 0);  // every sixth layer sees everything
  PartitionOptions o;
  o.ctx = 32768;
  o.kv_bytes_per_elem = 2;  // f16
  const std::vector<DeviceProfile> one{device("box", 64, 50)};
  const double per_row = 2.0 * 16 * 128 * 2;  // K and V of 16 heads of 128, f16
  // 10 full layers of 32768 rows, 52 sliding ones of 1024 + 256: 3.2 GB where all full was 16.6.
  const double kv = CostModel(s, one, LinkTable{}, o).memory(0, 0, 62, false, false).kv_bytes;
  CHECK(kv == doctest::Approx((10 * 32768.0 + 52 * 1280.0) * per_row));
  CHECK(kv < 3.3e9);
  o.max_batch = 64;
  CHECK(CostModel(s, one, LinkTable{}, o).memory(0, 0, 62, false, false).kv_bytes ==
        doctest::Approx((10 * 32768.0 + 52 * 1088.0) * per_row));
  o.ctx = 1000;  // a context shorter than a ring: every layer keeps it whole
  CHECK(CostModel(s, one, LinkTable{}, o).memory(0, 0, 62, false, false).kv_bytes == doctest::Approx(62 * 1000.0 * per_row));
  s.layer_window.clear();
  o.ctx = 32768;
  CHECK(CostModel(s, one, LinkTable{}, o).memory(0, 0, 62, false, false).kv_bytes == doctest::Approx(62 * 32768.0 * per_row));
  // gpt-oss-20b: every other layer slides over 128 tokens; the 1B Gemma 3 over 512.
  const ModelSpec oss = preset("gpt-oss-20b", "q4_0");
  REQUIRE(oss.layer_window.size() == 24u);
  CHECK(oss.layer_window[0] == 128);
  CHECK(oss.layer_window[1] == 0);
  CHECK(preset("gemma-3-1b", "q4_0").layer_window[0] == 512);
  CHECK(preset("llama-3-8b", "q4_0").layer_window.empty());
}

TEST_CASE("partitioner: recurrent layers hold a fixed state per stream instead of a KV cache") {
  ModelSpec s = preset("llama-3-8b", "q4_0");
  PartitionOptions o;
  o.ctx = 4096;
  o.streams = 2;
  const std::vector<DeviceProfile> one{device("box", 64, 50)};
  const CostModel dense(s, one, LinkTable{}, o);
  // Qwen 3.5's pattern: three gated delta-nets (1 MB of state each) for every attention layer.
  s.layer_state_bytes.assign(static_cast<size_t>(s.n_layers), 0.0);
  for (int l = 0; l < s.n_layers; ++l)
    if ((l + 1) % 4 != 0) s.layer_state_bytes[static_cast<size_t>(l)] = 1e6;
  const CostModel hybrid(s, one, LinkTable{}, o);
  const double kv = dense.kv_bytes_per_layer();
  CHECK(dense.memory(0, 0, 8, false, false).kv_bytes == doctest::Approx(8 * kv));
  CHECK(hybrid.memory(0, 0, 8, false, false).kv_bytes == doctest::Approx(2 * kv + 6 * 2e6));
  CHECK(hybrid.memory(0, 3, 4, false, false).kv_bytes == doctest::Approx(kv));  // the attention layer alone
  // A launch that drafts keeps a checkpoint of every state beside it; K/V rows need none.
  PartitionOptions drafting = o;
  drafting.drafts = true;
  const CostModel hybrid_drafts(s, one, LinkTable{}, drafting);
  CHECK(hybrid_drafts.memory(0, 0, 8, false, false).kv_bytes == doctest::Approx(2 * kv + 6 * 2 * 2e6));
  CHECK(CostModel(preset("llama-3-8b", "q4_0"), one, LinkTable{}, drafting).memory(0, 0, 8, false, false).kv_bytes ==
        doctest::Approx(8 * kv));
  ModelSpec shared = preset("llama-3-8b", "q4_0");  // Gemma 4 E-style: the last 20 layers read others' caches
  shared.layer_shares_kv.assign(static_cast<size_t>(shared.n_layers), false);
  for (int l = shared.n_layers - 20; l < shared.n_layers; ++l) shared.layer_shares_kv[static_cast<size_t>(l)] = true;
  const CostModel sharing(shared, one, LinkTable{}, o);
  CHECK(sharing.memory(0, 0, shared.n_layers, false, false).kv_bytes == doctest::Approx((shared.n_layers - 20) * kv));
  s.layer_state_bytes.pop_back();
  PlanResult bad = plan_partition(s, one, LinkTable{}, o);
  CHECK_FALSE(bad.plan);
}

TEST_CASE("partitioner: a MoE block's read bytes grow with the batch towards all of its experts") {
  const ModelSpec s = preset("qwen3-30b-a3b", "q4_k");
  const double all = s.layer_weight_bytes[0], experts = s.layer_expert_bytes[0];
  CHECK(layer_read_bytes(s, 0, 1) == doctest::Approx(all - experts + experts * 8 / 128));
  CHECK(layer_read_bytes(s, 0, 2) == doctest::Approx(all - experts + experts * (1 - std::pow(120.0 / 128, 2))));
  CHECK(layer_read_bytes(s, 0, 4) > layer_read_bytes(s, 0, 2));
  CHECK(layer_read_bytes(s, 0, 512) == doctest::Approx(all).epsilon(1e-6));

  // Decode time follows the bytes read, memory the bytes held: on one device that holds either,
  // the MoE model decodes about as much faster than a dense model of its size as it reads less.
  const std::vector<DeviceProfile> one{device("box", 64, 50)};
  PartitionOptions o;
  o.ctx = 512;
  const PlanResult moe = plan_partition(s, one, LinkTable{}, o);
  ModelSpec same_size_dense = s;
  same_size_dense.layer_expert_bytes.clear();
  same_size_dense.n_expert = same_size_dense.n_expert_used = 0;
  const PlanResult dense = plan_partition(same_size_dense, one, LinkTable{}, o);
  REQUIRE(moe.plan);
  REQUIRE(dense.plan);
  CHECK(moe.plan->stages[0].weight_bytes == doctest::Approx(dense.plan->stages[0].weight_bytes));
  const double read_ratio = (active_weight_bytes(s) + s.output_bytes) / (active_weight_bytes(same_size_dense) + s.output_bytes);
  const double time_ratio = moe.plan->predicted.ms_per_token / dense.plan->predicted.ms_per_token;
  MESSAGE("MoE / dense: bytes read " << read_ratio << ", predicted ms/token " << time_ratio);
  CHECK(time_ratio < 0.2);
  CHECK(time_ratio == doctest::Approx(read_ratio).epsilon(0.25));  // KV reads and step overhead are the same in both
}

TEST_CASE("partitioner: with drafts, latency weighs a pass of the draft's rows, which compute-bound devices pay for") {
  const ModelSpec spec = preset("llama-3-8b", "q4_0");
  // a reads its weights twice as fast as b but computes a fifth as fast: one row is memory-bound
  // on both, nine rows are compute-bound on a.
  const std::vector<DeviceProfile> devices{device("a", 16, 60, 400e9), device("b", 16, 30, 2000e9)};
  PartitionOptions o;
  o.ctx = 1024;
  const auto layers_on_a = [](const PartitionPlan& p) {
    int n = 0;
    for (const StageAssignment& s : p.stages) n += s.device_name == "a" ? s.last_layer - s.first_layer : 0;
    return n;
  };
  const PlanResult plain = plan_partition(spec, devices, LinkTable{}, o);
  REQUIRE(plain.ok());
  CHECK(plain.plan->predicted.draft_pass_ms == 0);
  o.draft_tokens = 8;
  o.tokens_per_pass = 4;
  const PlanResult drafting = plan_partition(spec, devices, LinkTable{}, o);
  REQUIRE(drafting.ok());
  MESSAGE("layers on a: " << layers_on_a(*plain.plan) << " plain, " << layers_on_a(*drafting.plan) << " drafting");
  CHECK(layers_on_a(*drafting.plan) < layers_on_a(*plain.plan));
  const Prediction& p = drafting.plan->predicted;
  CHECK(p.draft_pass_ms > p.ms_per_token);
  CHECK(p.draft_ms_per_token == doctest::Approx(p.draft_pass_ms / 4));
  // Each stage's step with the draft, what the head's drift watch expects of drafting steps: the
  // pass's stages less than the pass, a's nine rows compute-bound, b's no faster than one row.
  double steps_ms = 0;
  for (const StageAssignment& s : drafting.plan->stages) {
    CAPTURE(s.device_name);
    CHECK(s.draft_step_time_s >= s.stage_time_s);
    if (s.device_name == "a" && s.last_layer > s.first_layer) CHECK(s.draft_step_time_s > 2 * s.stage_time_s);
    steps_ms += s.draft_step_time_s * 1e3;
  }
  CHECK(steps_ms < p.draft_pass_ms);
  for (const StageAssignment& s : plain.plan->stages) CHECK(s.draft_step_time_s == 0);
  // One stream: no step holds more rows than its pass.
  CHECK(p.batched_rows == 9);
  for (const StageAssignment& s : drafting.plan->stages) CHECK(s.batched_step_time_s == 0);
  // Eight streams: the head's scheduler sends ceil(8 / stages) streams' passes in a step.
  PartitionOptions many = o;
  many.streams = 8;
  const PlanResult batched = plan_partition(spec, devices, LinkTable{}, many);
  REQUIRE(batched.ok());
  const auto n_stages = static_cast<int>(batched.plan->stages.size());
  CHECK(batched.plan->predicted.batched_rows == (8 + n_stages - 1) / n_stages * 9);
  for (const StageAssignment& s : batched.plan->stages) CHECK(s.batched_step_time_s >= s.draft_step_time_s);
  // The plain plan's pass with the same draft is slower than the drafting plan's.
  const Prediction plain_with_drafts = evaluate_plan(spec, devices, LinkTable{}, o, *plain.plan);
  CHECK(plain_with_drafts.draft_pass_ms > p.draft_pass_ms);
  o.tokens_per_pass = 10;  // more than a pass can give
  CHECK_FALSE(plan_partition(spec, devices, LinkTable{}, o).ok());
  o.tokens_per_pass = 0.5;  // less than its own token
  CHECK_FALSE(plan_partition(spec, devices, LinkTable{}, o).ok());
  o.tokens_per_pass = 4;
  o.draft_tokens = -1;
  CHECK_FALSE(plan_partition(spec, devices, LinkTable{}, o).ok());
}

TEST_CASE("partitioner: with drafts, throughput counts a stream's pass as the draft's rows and its tokens") {
  // One device: every stream's pass carries 1 + 3 rows and gives 2.5 tokens on average. Four
  // streams in one micro-batch are one pass of 16 rows; the old model took them for 4 rows
  // giving a token each.
  const ModelSpec spec = preset("llama-3-8b", "q4_0");
  const std::vector<DeviceProfile> one{device("a", 16, 60, 400e9)};
  PartitionOptions o;
  o.ctx = 1024;
  o.objective = Objective::throughput;
  o.streams = 4;
  o.draft_tokens = 3;
  o.tokens_per_pass = 2.5;
  const PlanResult r = plan_partition(spec, one, LinkTable{}, o);
  REQUIRE(r.ok());
  const CostModel cm(spec, one, LinkTable{}, o);
  const double pass_16 = cm.decode_time(0, 0, cm.n_layers(), true, 16);
  CHECK(r.plan->predicted.micro_batch == 4);
  CHECK(r.plan->predicted.tokens_per_s == doctest::Approx(2.5 * 4 / pass_16));
  CHECK(r.plan->predicted.stream_ms_per_token == doctest::Approx(pass_16 * 1e3 / 2.5));
  // Without a measured acceptance a pass counts as one token.
  o.tokens_per_pass = 0;
  const PlanResult unknown = plan_partition(spec, one, LinkTable{}, o);
  REQUIRE(unknown.ok());
  CHECK(unknown.plan->predicted.tokens_per_s == doctest::Approx(4 / pass_16));
  // A step holds at most max_batch rows: passes of 4 rows, at most 2 streams in a micro-batch.
  o.tokens_per_pass = 2.5;
  o.max_batch = 9;
  const PlanResult capped = plan_partition(spec, one, LinkTable{}, o);
  REQUIRE(capped.ok());
  CHECK(capped.plan->predicted.micro_batch <= 2);
  CHECK(capped.plan->predicted.tokens_per_s < r.plan->predicted.tokens_per_s);
}

TEST_CASE("partitioner: with drafts, dp equals exhaustive for throughput and the simulator agrees") {
  std::mt19937 rng(31);
  for_random_instances(250, 32, Objective::throughput, 4, 8, 6, [&](Instance in, int i) {
    in.options.draft_tokens = uniform_int(rng, 1, 4);
    in.options.max_batch = uniform_int(rng, 8, 32);  // at times fewer rows than all streams' passes
    in.options.tokens_per_pass = uniform(rng, 1, in.options.draft_tokens + 1);
    CAPTURE(i);
    check_dp_equals_exhaustive(in, i);
    const PlanResult r = plan(in, Algorithm::dp);
    if (!r.ok()) return;
    const Prediction& p = r.plan->predicted;
    const SimulationResult sim = simulate_plan(in.spec, in.devices, in.links, in.options, *r.plan);
    if (in.options.streams % p.micro_batch == 0) {
      CHECK(close(sim.tokens_per_s, p.tokens_per_s, 1e-3));
      CHECK(close(sim.stream_ms_per_token, p.stream_ms_per_token, 1e-3));
    }
  });
}

TEST_CASE("partitioner: infeasible plans say how many bytes are missing") {
  const ModelSpec spec = preset("llama-2-7b", "f16");
  const std::vector<DeviceProfile> devices{device("a", 2.5, 10), device("b", 2.5, 10), device("c", 2.5, 10)};
  const PlanResult r = plan_partition(spec, devices, LinkTable{}, PartitionOptions{});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error.kind == Infeasibility::insufficient_memory);
  CHECK(r.error.missing_bytes > 6 * GB);
  CHECK(r.error.message.find(format_bytes(r.error.missing_bytes) + " missing") != std::string::npos);
  CHECK(r.error.message.find("the 3 device(s) offer 7.5 GB usable") != std::string::npos);
}

TEST_CASE("partitioner: a device with measured storage pages what memory cannot hold, only when it must or it pays") {
  const ModelSpec spec = preset("llama-2-7b", "q4_0");  // ~3.8 GB of weights
  PartitionOptions o;
  o.ctx = 1024;
  std::vector<DeviceProfile> devices{device("laptop", 2.0, 20), device("nas", 1.0, 10)};
  REQUIRE_FALSE(plan_partition(spec, devices, LinkTable{}, o).ok());  // 3 GB of memory: too little
  devices[1].storage_read_bytes_per_s = 2 * GB;                      // the nas's NVMe
  const PlanResult paged = plan_partition(spec, devices, LinkTable{}, o);
  REQUIRE(paged.ok());
  double paged_bytes = 0;
  for (const StageAssignment& a : paged.plan->stages) {
    CAPTURE(a.device_name);
    if (a.device_name == "laptop") {
      CHECK(a.paged_bytes == 0);  // no storage figure: it never pages
      CHECK(a.headroom_bytes >= 0);
    } else {
      CHECK(a.paged_bytes > 0);
      // Beyond memory: the excess plus the two read buffers; the step takes the longer of compute and read.
      CHECK(a.paged_bytes >= -a.headroom_bytes);
      CHECK(a.paged_time_s == doctest::Approx(a.paged_bytes / (2 * GB)));
      CHECK(a.stage_time_s >= a.paged_time_s);
      // The step is the longer of its compute and its read, each reported on its own.
      const double overhead = devices[1].step_overhead_s;
      CHECK(a.stage_time_s == doctest::Approx(std::max(a.compute_time_s, overhead + a.paged_time_s)));
      CHECK(a.compute_time_s > overhead);
    }
    if (a.paged_bytes == 0) CHECK(a.compute_time_s == doctest::Approx(a.stage_time_s));
    paged_bytes += a.paged_bytes;
  }
  CHECK(paged_bytes > 0);
  CHECK(describe_plan(*paged.plan)[1].find("read from storage every step") != std::string::npos);

  // Off by option, the same home cannot run it.
  o.allow_paging = false;
  CHECK_FALSE(plan_partition(spec, devices, LinkTable{}, o).ok());
  o.allow_paging = true;

  // With memory enough on another device at a fast link, paging is not worth it: nothing is paged.
  devices.push_back(device("desktop", 8.0, 30));
  const PlanResult roomy = plan_partition(spec, devices, LinkTable{}, o);
  REQUIRE(roomy.ok());
  for (const StageAssignment& a : roomy.plan->stages) CHECK(a.paged_bytes == 0);

  // Storage far faster than its memory: a step then costs no more paged than resident, and the
  // planner may page rather than hop (it never predicts worse than without paging).
  PartitionOptions no_paging = o;
  no_paging.allow_paging = false;
  const PlanResult without = plan_partition(spec, devices, LinkTable{}, no_paging);
  REQUIRE(without.ok());
  CHECK(roomy.plan->predicted.ms_per_token <= without.plan->predicted.ms_per_token + 1e-9);
}

TEST_CASE("partitioner: blocks too big for any device are reported even when the total fits") {
  ModelSpec spec = preset("tinyllama-1.1b", "q4_0");
  spec.n_layers = 2;
  spec.layer_weight_bytes = {5 * GB, 5 * GB};
  spec.layer_flops_per_token = {1e10, 1e10};
  const std::vector<DeviceProfile> devices{device("a", 4, 10), device("b", 4, 10), device("c", 4, 10)};
  const PlanResult r = plan_partition(spec, devices, LinkTable{}, PartitionOptions{});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error.kind == Infeasibility::insufficient_memory);
  CHECK(r.error.missing_bytes > 10 * GB);
  CHECK(r.error.message.find("no split fits") != std::string::npos);
}

TEST_CASE("partitioner: more streams than micro-batch sizes it tabulates (found by the load test: it crashed at 17)") {
  const ModelSpec spec = preset("tinyllama-1.1b", "q4_0");
  const std::vector<DeviceProfile> devices{device("a", 8, 10), device("b", 8, 10)};
  for (int streams : {16, 17, 50, 256}) {
    CAPTURE(streams);
    PartitionOptions o;
    o.streams = streams;
    o.ctx = 256;
    const PlanResult r = plan_partition(spec, devices, LinkTable{}, o);
    REQUIRE(r.ok());
    CHECK(r.plan->predicted.ms_per_token > 0);
    CHECK(r.plan->predicted.tokens_per_s > 0);
  }
}

TEST_CASE("partitioner: invalid inputs are reported, not thrown") {
  const ModelSpec spec = preset("tinyllama-1.1b", "q4_0");
  CHECK(plan_partition(spec, {}, LinkTable{}, PartitionOptions{}).error.kind == Infeasibility::invalid_input);
  std::vector<DeviceProfile> devices{device("a", 8, 10)};
  devices[0].prefill_flop_s = 0;
  const PlanResult r = plan_partition(spec, devices, LinkTable{}, PartitionOptions{});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error.message.find("prefill_flop_s") != std::string::npos);
}

TEST_CASE("partitioner: memory baseline matches llama.cpp's proportional split") {
  const ModelSpec spec = preset("tinyllama-1.1b", "q4_0");  // 22 blocks
  const std::vector<DeviceProfile> devices{device("a", 3, 10), device("b", 2, 30), device("c", 2, 5)};
  PartitionOptions o;
  o.algorithm = Algorithm::memory;
  const PlanResult r = plan_partition(spec, devices, LinkTable{}, o);
  REQUIRE(r.ok());
  // Shares 3/7, 5/7, 1: block l goes to the first device with l/22 < cumulative share.
  REQUIRE(r.plan->stages.size() == 3);
  CHECK(blocks_on(*r.plan, 0) == 10);
  CHECK(blocks_on(*r.plan, 1) == 6);
  CHECK(blocks_on(*r.plan, 2) == 6);
  o.algorithm = Algorithm::equal;
  const PlanResult e = plan_partition(spec, devices, LinkTable{}, o);
  REQUIRE(e.ok());
  CHECK(blocks_on(*e.plan, 0) == 8);
  CHECK(blocks_on(*e.plan, 1) == 7);
  CHECK(blocks_on(*e.plan, 2) == 7);
}

TEST_CASE("partitioner: a faster device with equal memory never gets fewer blocks") {
  const ModelSpec spec = preset("llama-2-7b", "q4_0");  // 3.8 GB
  for (Objective objective : {Objective::latency, Objective::throughput, Objective::ttft}) {
    for (double fast : {12.0, 20.0, 60.0}) {
      // The head is small, so the two others must share the blocks.
      const std::vector<DeviceProfile> devices{device("head", 1.0, 10), device("slow", 2.5, 10),
                                               device("fast", 2.5, fast, 400e9)};
      PartitionOptions o;
      o.objective = objective;
      o.streams = 4;
      o.ctx = 512;
      const PlanResult r = plan_partition(spec, devices, LinkTable{}, o);
      REQUIRE(r.ok());
      CAPTURE(fast);
      CHECK(blocks_on(*r.plan, 2) >= blocks_on(*r.plan, 1));
    }
  }
}

// A device's GPU takes its stage's first blocks while their weights fit its budget (as
// runtime/gpu places them), runs their products at its own rates, and holds them in its own memory
// (a graphics card) or in the device's RAM (unified memory).
TEST_CASE("partitioner: a GPU takes the stage's first blocks that fit it; a graphics card's leave RAM") {
  const ModelSpec spec = preset("llama-2-7b", "q4_0");  // 32 blocks of ~0.11 GB
  const double block = spec.layer_weight_bytes[0];
  DeviceProfile laptop = device("laptop", 16, 30);
  GpuProfile card;
  card.name = "card";
  card.memory_bytes = 10.5 * block;  // ten blocks
  card.memory_bandwidth_bytes_per_s = 200 * GB;
  card.decode_bytes_per_s["q4_0"] = 120 * GB;
  card.prefill_flop_s = 5e12;
  card.layer_overhead_s = 0.0002;
  laptop.gpu = card;
  PartitionOptions o;
  o.ctx = 512;
  const std::vector<DeviceProfile> with_card{laptop};
  const std::vector<DeviceProfile> cpu_only{device("laptop", 16, 30)};
  const CostModel cm(spec, with_card, LinkTable{}, o), cpu(spec, cpu_only, LinkTable{}, o);
  CHECK(cm.gpu_share(0, 0, 32, true).end == 10);
  CHECK_FALSE(cm.gpu_share(0, 0, 32, true).output);
  CHECK(cm.gpu_share(0, 5, 12, false).end == 12);  // a stage of 7 blocks: all
  CHECK(cm.gpu_share(0, 20, 32, true).end == 30);
  CHECK_FALSE(cm.gpu_share(0, 20, 32, true).output);  // blocks 30-31 are not there
  REQUIRE(7 * block + spec.output_bytes < card.memory_bytes);
  CHECK(cm.gpu_share(0, 25, 32, true).output);                                  // 7 blocks and the LM head fit
  CHECK(cm.stage_output_time(0, 25, 1) < cpu.stage_output_time(0, 25, 1) / 2);  // TTFT's LM head too
  // Time: the GPU's blocks at its rate plus their attention on the CPU and the per-layer cost,
  // the rest as on the CPU alone.
  const double gpu_blocks = cm.decode_compute_time(0, 0, 10, false, 1), cpu_blocks = cpu.decode_compute_time(0, 0, 10, false, 1);
  CHECK(gpu_blocks < cpu_blocks / 2);
  // A stage from block 10 has its own first ten on the GPU.
  CHECK(cm.decode_compute_time(0, 10, 32, false, 1) ==
        doctest::Approx(cm.decode_compute_time(0, 10, 20, false, 1) + cpu.decode_compute_time(0, 20, 32, false, 1)));
  CHECK(cm.decode_compute_time(0, 10, 20, false, 1) == doctest::Approx(gpu_blocks));
  CHECK(cm.decode_compute_time(0, 0, 32, true, 1) == doctest::Approx(gpu_blocks + cpu.decode_compute_time(0, 10, 32, true, 1)));
  // Memory: the card holds ten blocks; RAM the rest.
  const MemoryUse use = cm.memory(0, 0, 32, true, true), ram = cpu.memory(0, 0, 32, true, true);
  CHECK(use.weight_bytes == doctest::Approx(ram.weight_bytes));
  CHECK(use.gpu_weight_bytes == doctest::Approx(10 * block));
  CHECK(use.total() == doctest::Approx(ram.total() - 10 * block));
  // Unified memory: the same blocks on the GPU, all still in RAM.
  laptop.gpu->unified_memory = true;
  const std::vector<DeviceProfile> unified{laptop};
  const CostModel um(spec, unified, LinkTable{}, o);
  CHECK(um.memory(0, 0, 32, true, true).gpu_weight_bytes == doctest::Approx(10 * block));
  CHECK(um.memory(0, 0, 32, true, true).total() == doctest::Approx(ram.total()));
  // The plan says so.
  const PlanResult r = plan_partition(spec, with_card, LinkTable{}, o);
  REQUIRE(r.ok());
  CHECK(r.plan->stages[0].gpu_layers == 10);
  CHECK_FALSE(r.plan->stages[0].gpu_output);
  CHECK(r.plan->stages[0].gpu_weight_bytes == doctest::Approx(10 * block));
  CHECK(r.plan->stages[0].memory_bytes == doctest::Approx(ram.total() - 10 * block));
  CHECK(describe_plan(*r.plan)[0].find("GPU: blocks 0-9") != std::string::npos);
}

TEST_CASE("partitioner: a device's GPU wins it blocks; a MoE model's blocks are planned on CPUs") {
  const ModelSpec spec = preset("llama-2-7b", "q4_0");
  // Twin CPUs: the head alone is best (no hop), until the other has a GPU ten times as fast.
  DeviceProfile head = device("head", 8, 20), other = device("other", 8, 20);
  PartitionOptions o;
  o.ctx = 512;
  const PlanResult before = plan_partition(spec, std::vector<DeviceProfile>{head, other}, LinkTable{}, o);
  GpuProfile g;
  g.name = "card";
  g.memory_bytes = 8 * GB;
  g.memory_bandwidth_bytes_per_s = 400 * GB;
  g.decode_bytes_per_s["q4_0"] = 200 * GB;
  g.prefill_flop_s = 10e12;
  other.gpu = g;
  const PlanResult after = plan_partition(spec, std::vector<DeviceProfile>{head, other}, LinkTable{}, o);
  REQUIRE(before.ok());
  REQUIRE(after.ok());
  CHECK(blocks_on(*before.plan, 1) == 0);
  CHECK(blocks_on(*after.plan, 1) > 0);
  CHECK(after.plan->predicted.ms_per_token < before.plan->predicted.ms_per_token);
  // Experts have no GPU shader yet: the GPU takes none of a MoE model's blocks.
  const ModelSpec moe = preset("qwen3-30b-a3b", "q4_0");
  const CostModel cm(moe, std::vector<DeviceProfile>{head, other}, LinkTable{}, o);
  CHECK(cm.gpu_share(1, 0, moe.n_layers, true).end == 0);
  // Nor of a weight type without a shader (its matrices stay on the CPU in the runtime).
  for (const char* type : {"bf16", "q5_0", "iq4_xs"}) {
    CAPTURE(type);
    const CostModel other_type(preset("llama-2-7b", type), std::vector<DeviceProfile>{head, other}, LinkTable{}, o);
    CHECK(other_type.gpu_share(1, 0, 32, true).end == 0);
  }
}

// The runtime pages a stage only without a GPU (stage_runner.cpp): a stage that does not fit the
// device's RAM even with the card's share runs on the CPU, paging, and the planner says so.
TEST_CASE("partitioner: a stage that must page gets no GPU share") {
  const ModelSpec spec = preset("llama-2-7b", "q4_0");
  const double block = spec.layer_weight_bytes[0];
  DeviceProfile d = device("small", 1.5, 20);
  d.storage_read_bytes_per_s = 2 * GB;
  d.storage_free_bytes = 100 * GB;
  GpuProfile g;
  g.name = "card";
  g.memory_bytes = 4 * block;
  g.memory_bandwidth_bytes_per_s = 200 * GB;
  g.prefill_flop_s = 5e12;
  d.gpu = g;
  PartitionOptions o;
  o.ctx = 512;
  const CostModel cm(spec, std::vector<DeviceProfile>{d}, LinkTable{}, o);
  // 12 blocks: 1.36 GB, less 4 on the card: fits 1.5 GB of RAM.
  CHECK(cm.gpu_share(0, 1, 13, false).end == 5);
  CHECK(cm.paged_bytes(0, 1, 13, false, false) == 0);
  // 20 blocks: 2.3 GB, less 4 on the card, is still over: it pages, all on the CPU.
  CHECK(cm.gpu_share(0, 1, 21, false).end == 1);
  CHECK(cm.paged_bytes(0, 1, 21, false, false) > 0);
  CHECK(cm.memory(0, 1, 21, false, false).gpu_weight_bytes == 0);
}

TEST_CASE("partitioner: a very slow link keeps everything on one device") {
  const ModelSpec spec = preset("llama-3.2-1b", "q4_0");
  const std::vector<DeviceProfile> devices{device("head", 8, 10), device("fast", 8, 40)};
  LinkTable links;
  links.set_both(0, 1, {1e6 / 8, 0.1});  // 1 Mbit/s, 100 ms
  const PlanResult r = plan_partition(spec, devices, links, PartitionOptions{});
  REQUIRE(r.ok());
  REQUIRE(r.plan->stages.size() == 1);
  CHECK(r.plan->stages[0].device == 0);
  CHECK(r.plan->stages[0].last_layer == spec.n_layers);
  REQUIRE(r.plan->left_out_reasons.size() == 1);
  CHECK(r.plan->left_out_reasons[0].find("'fast'") != std::string::npos);
  // On a fast link the faster device takes the blocks and the head becomes a thin stage.
  links.set_both(0, 1, {1e9 / 8, 0.0002});
  const PlanResult wired = plan_partition(spec, devices, links, PartitionOptions{});
  REQUIRE(wired.ok());
  CHECK(blocks_on(*wired.plan, 1) == spec.n_layers);
}

TEST_CASE("partitioner: activations on the wire: bytes per hop by type, and auto compresses only slow links") {
  const ModelSpec spec = preset("tinyllama-1.1b", "q4_0");
  const std::vector<DeviceProfile> devices{device("head", 4, 10), device("wifi", 4, 20), device("wired", 4, 20)};
  LinkTable links;
  links.set_both(0, 1, {50e6 / 8, 0.005});     // Wi-Fi: 50 Mbit/s, 5 ms
  links.set_both(1, 2, {50e6 / 8, 0.005});
  links.set_both(0, 2, {1e9 / 8, 0.0002});     // Gigabit Ethernet
  PartitionOptions f32;
  f32.objective = Objective::ttft;
  const CostModel plain(spec, devices, links, f32);
  PartitionOptions f16 = f32;
  f16.activation_bytes_per_elem = 2;
  const CostModel half(spec, devices, links, f16);
  PartitionOptions q8 = f32;
  q8.activation_bytes_per_elem = 34.0 / 32;
  const CostModel quarter(spec, devices, links, q8);
  PartitionOptions automatic = f32;
  automatic.compress_below_bytes_per_s = 1e9 / 8;
  automatic.compressed_bytes_per_elem = 2;
  const CostModel chosen(spec, devices, links, automatic);
  // 512 tokens of 2048 values: 4 MiB as f32 over 50 Mbit/s.
  const double bytes = 512.0 * spec.n_embd;
  CHECK(plain.activation_hop_time(0, 1, 512, 11) == doctest::Approx(0.005 + bytes * 4 / (50e6 / 8)));
  CHECK(half.activation_hop_time(0, 1, 512, 11) == doctest::Approx(0.005 + bytes * 2 / (50e6 / 8)));
  CHECK(quarter.activation_hop_time(0, 1, 512, 11) == doctest::Approx(0.005 + bytes * 34 / 32 / (50e6 / 8)));
  CHECK(chosen.activation_hop_time(0, 1, 512, 11) == half.activation_hop_time(0, 1, 512, 11));   // slow: f16
  CHECK(chosen.activation_hop_time(0, 2, 512, 11) == plain.activation_hop_time(0, 2, 512, 11));  // gigabit: f32
  CHECK(chosen.compressed_hop(0, 1));
  CHECK_FALSE(chosen.compressed_hop(0, 2));
  CHECK_FALSE(plain.compressed_hop(0, 1));
  CHECK(chosen.activation_hop_time(1, 1, 512, 11) == 0);

  // A plan over the Wi-Fi hop: its stage says it compresses, and the predicted first token comes
  // sooner than with f32 on the wire.
  const std::vector<StageRange> over_wifi{{0, 0, 11}, {1, 11, 22}};
  const PartitionPlan p32 = assemble_plan(spec, devices, links, f32, over_wifi);
  const PartitionPlan pauto = assemble_plan(spec, devices, links, automatic, over_wifi);
  CHECK(pauto.stages[0].compressed_hop);
  CHECK_FALSE(pauto.stages[1].compressed_hop);  // the last stage sends token ids
  CHECK_FALSE(p32.stages[0].compressed_hop);
  CHECK(pauto.stages[0].hop_time_s < p32.stages[0].hop_time_s);
  CHECK(pauto.predicted.ttft_ms < p32.predicted.ttft_ms);
  CHECK(describe_plan(pauto)[0].find("compressed") != std::string::npos);
}

TEST_CASE("partitioner: a Gemma 4 E model's hops carry the per-layer inputs of the blocks after the cut") {
  const ModelSpec e2b = preset("gemma-4-e2b", "q4_k");
  REQUIRE(e2b.n_embd_per_layer == 256);
  // The head device holds the tables (1.6 GB) and little else; the other holds the blocks.
  const std::vector<DeviceProfile> devices{device("phone", 2.5, 20), device("laptop", 8, 20)};
  LinkTable links;
  links.set_both(0, 1, {20e6 / 8, 0.005});  // a weak Wi-Fi link: 20 Mbit/s, 5 ms
  PartitionOptions o;
  const CostModel cm(e2b, devices, links, o);
  for (const int b : {0, 1, 10, 13, 35}) {
    CAPTURE(b);
    CHECK(cm.activation_hop_time(0, 1, 1, b) == doctest::Approx(0.005 + (1536 + (35 - b) * 256) * 4 / (20e6 / 8)));
  }
  const PlanResult with_inputs = plan_partition(e2b, devices, links, o);
  ModelSpec narrow = e2b;  // as if the hops carried the hidden state alone
  narrow.n_embd_per_layer = 0;
  const PlanResult without = plan_partition(narrow, devices, links, o);
  REQUIRE(with_inputs.ok());
  REQUIRE(without.ok());
  REQUIRE(with_inputs.plan->stages.size() == 2);
  const int cut = with_inputs.plan->stages[0].last_layer;
  MESSAGE("cut at " << cut << " with per-layer inputs, " << without.plan->stages[0].last_layer << " without");
  CHECK(cut > without.plan->stages[0].last_layer);  // 13: the latest cut the shared KV allows
  CHECK(with_inputs.plan->stages[0].hop_time_s == doctest::Approx(cm.activation_hop_time(0, 1, 1, cut)));
  // What it predicts is what the plan costs: the simulator, which knows only the ranges, agrees.
  const SimulationResult sim = simulate_plan(e2b, devices, links, o, *with_inputs.plan);
  CHECK(sim.ms_per_token == doctest::Approx(with_inputs.plan->predicted.ms_per_token));
}

TEST_CASE("partitioner: a device too small for one block is left out with a reason") {
  const ModelSpec spec = preset("llama-2-7b", "q4_0");
  const std::vector<DeviceProfile> devices{device("head", 8, 10), device("tiny", 0.05, 100)};
  const PlanResult r = plan_partition(spec, devices, LinkTable{}, PartitionOptions{});
  REQUIRE(r.ok());
  REQUIRE(r.plan->left_out_reasons.size() == 1);
  CHECK(r.plan->left_out_reasons[0].find("too little memory") != std::string::npos);
  CHECK_FALSE(describe_plan(*r.plan).empty());
}

TEST_CASE("partitioner: exhaustive refuses instances that are too large") {
  const ModelSpec spec = preset("llama-3-70b", "q4_0");
  std::vector<DeviceProfile> devices;
  for (int d = 0; d < 6; ++d) devices.push_back(device(std::string("d").append(std::to_string(d)), 16, 20 + d));
  PartitionOptions o;
  o.algorithm = Algorithm::exhaustive;
  const PlanResult r = plan_partition(spec, devices, LinkTable{}, o);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error.kind == Infeasibility::too_large);
}

TEST_CASE("partitioner: no stage starts where a layer would lose the KV cache it reads (Gemma 4's shared-KV layers)") {
  ModelSpec s = preset("tinyllama-1.1b", "q4_0");  // 22 blocks
  // The last 10 blocks read the caches of blocks 10 and 11: stages may start at 0-10 only.
  s.no_cut_at.assign(static_cast<size_t>(s.n_layers) + 1, false);
  for (int b = 11; b < s.n_layers; ++b) s.no_cut_at[static_cast<size_t>(b)] = true;
  const double block = s.layer_weight_bytes[0];
  std::vector<DeviceProfile> devices;
  for (const char* n : {"a", "b", "c", "d"}) devices.push_back(device(n, 0, 20));
  const auto each_holds = [&](double blocks) {
    for (auto& d : devices) d.usable_memory_bytes = blocks * block + s.embedding_bytes + s.output_bytes;
  };
  PartitionOptions o;
  o.ctx = 256;
  for (Algorithm algorithm : {Algorithm::dp, Algorithm::exhaustive}) {
    CAPTURE(static_cast<int>(algorithm));
    o.algorithm = algorithm;
    each_holds(9);  // 12 blocks must stay together, more than any device holds
    CHECK_FALSE(plan_partition(s, devices, LinkTable{}, o).plan);
    each_holds(13);  // now they fit one device, the rest must go elsewhere
    const PlanResult fits = plan_partition(s, devices, LinkTable{}, o);
    REQUIRE(fits.plan);
    CHECK(fits.plan->stages.size() >= 2);
    for (const StageAssignment& a : fits.plan->stages) CHECK(can_cut(s, a.first_layer));
    CHECK(validate_plan(s, devices, o, *fits.plan).empty());
  }
  o.algorithm = Algorithm::dp;
  each_holds(40);
  const std::vector<StageRange> cut_at_12{{0, 0, 12}, {1, 12, 22}};
  const PartitionPlan p = assemble_plan(s, devices, LinkTable{}, o, cut_at_12);
  const auto problems = validate_plan(s, devices, o, p);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].find("starts at layer 12") != std::string::npos);
  each_holds(6);
  o.algorithm = Algorithm::equal;  // its even split cuts at 17: refused
  const PlanResult even = plan_partition(s, devices, LinkTable{}, o);
  CHECK_FALSE(even.plan);
}

TEST_CASE("partitioner: hand-written plans are validated and evaluated") {
  const ModelSpec spec = preset("tinyllama-1.1b", "q4_0");
  const std::vector<DeviceProfile> devices{device("a", 4, 10), device("b", 4, 20)};
  const std::vector<StageRange> good{{0, 0, 10}, {1, 10, 22}};
  const PartitionPlan p = assemble_plan(spec, devices, LinkTable{}, PartitionOptions{}, good);
  CHECK(validate_plan(spec, devices, PartitionOptions{}, p).empty());
  const Prediction e = evaluate_plan(spec, devices, LinkTable{}, PartitionOptions{}, p);
  CHECK(e.ms_per_token == doctest::Approx(p.predicted.ms_per_token));
  PartitionPlan bad = p;
  bad.stages[1].first_layer = 11;
  CHECK_FALSE(validate_plan(spec, devices, PartitionOptions{}, bad).empty());
  CHECK(evaluate_plan(spec, devices, LinkTable{}, PartitionOptions{}, bad).ms_per_token == 0);
}

// How long it takes is a figure of scripts/bench-partitioner, not a bound here: a timed assertion
// fails on a loaded or instrumented machine for no fault of the code.
TEST_CASE("partitioner: 16 devices of 6 kinds, an 80-layer model: valid plans for both objectives") {
  const ModelSpec spec = preset("llama-3-70b", "q4_0");  // 80 blocks, ~40 GB
  std::vector<DeviceProfile> classes{device("pi", 6.5, 7),          device("jetson", 5.2, 45, 2e12), device("phone", 6, 30),
                                     device("mac", 10.5, 85, 2e12), device("laptop", 11, 40),        device("desktop", 26, 60)};
  std::vector<DeviceProfile> devices;
  for (int d = 0; d < 16; ++d) devices.push_back(classes[d % classes.size()]);
  for (bool distinct : {false, true}) {
    if (distinct)
      for (size_t d = 0; d < devices.size(); ++d) devices[d].step_overhead_s += 1e-6 * d;
    for (Objective objective : {Objective::latency, Objective::throughput}) {
      PartitionOptions o;
      o.objective = objective;
      const auto t0 = std::chrono::steady_clock::now();
      const PlanResult r = plan_partition(spec, devices, LinkTable{}, o);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      CAPTURE(distinct);
      REQUIRE(r.ok());
      CHECK(validate_plan(spec, devices, o, *r.plan).empty());
      MESSAGE("planned in " << seconds << " s");
    }
  }
}
