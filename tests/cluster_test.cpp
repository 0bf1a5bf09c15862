// hearthd processes on loopback: a cluster generates exactly what one device generates, holds
// only its share of memory, survives bad messages and reports a lost stage.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <capnp/message.h>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>
#include <zmq.hpp>

#include "runtime/gpu/gpu.h"
#include "tests/cluster_util.h"
#include "transport/codec.h"
#include "transport/sockets.h"

using hearth::test::Cluster;
using hearth::test::TempDir;
namespace wire = hearth::transport::wire;

namespace {

// A random Q8_0 model of about 100 MB, 8 blocks: large enough that memory limits split or page it.
std::string make_hundred_mb_model(const TempDir& dir) {
  hearth::runtime::MakeModelOptions o;
  o.type = hearth::runtime::TensorType::Q8_0;
  o.shape = {.n_vocab = 512, .n_embd = 1024, .n_layer = 8, .n_head = 8, .n_head_kv = 4, .n_ff = 2816, .n_ctx = 256};
  return hearth::test::make_model(dir, "m.gguf", o);
}

// Stories260K, greedy, continues this with " girl named Lily. She loved to play": what it read.
constexpr const char* kRepeatingStory =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. One day, Lily saw a "
    "big tree. Once upon a time, there was a little";

std::vector<std::string> gen_args(const std::string& prompt, const std::vector<std::string>& sampling, int n) {
  std::vector<std::string> a{"--prompt", prompt, "-n", std::to_string(n)};
  a.insert(a.end(), sampling.begin(), sampling.end());
  return a;
}

// What `hearth run ARGS` prints for this model file. Remembered for the test process: cases
// compare several splits of one model with the same one-device run, which is a process that
// loads the model and generates (seconds under the sanitizers). The key holds the file's size and
// write time beside the arguments, so a file written anew at the same path is run again.
std::string one_device_output(const std::string& model, const std::vector<std::string>& args) {
  static std::map<std::string, std::string> memo;
  std::string key = std::to_string(std::filesystem::file_size(model)) + ':' +
                    std::to_string(std::filesystem::last_write_time(model).time_since_epoch().count());
  for (const std::string& a : args) key += '\n' + a;
  if (const auto it = memo.find(key); it != memo.end()) return it->second;
  const auto single = hearth::test::run_cli(args);
  REQUIRE_MESSAGE(single.exit_code == 0, single.err);
  return memo[key] = single.out;
}

// `hearth run` on one device vs `hearth generate` through the cluster, greedy and seeded.
void check_same_as_one_device(Cluster& c, const std::string& model, const std::string& prompt, int n,
                              const std::string& kv_type = "f16") {
  for (const auto& sampling : std::vector<std::vector<std::string>>{{"--temp", "0"}, {"--temp", "0.9", "--seed", "7"}}) {
    auto run = gen_args(prompt, sampling, n);
    run.insert(run.begin(), {"run", "--model", model, "--kv-type", kv_type});
    const std::string single = one_device_output(model, run);
    auto gen = gen_args(prompt, sampling, n);
    gen.insert(gen.begin(), "generate");
    const auto cluster = c.cli(gen);
    CAPTURE(cluster.err);
    CHECK(cluster.exit_code == 0);
    CHECK(cluster.out == single);
  }
}

nlohmann::json status(const Cluster& c) {
  const auto r = c.cli({"status", "--json"});
  REQUIRE(r.exit_code == 0);
  return nlohmann::json::parse(r.out);
}

// Status once the devices' counters, which reach the head with their heartbeats (every 400 ms),
// have stopped moving: two reads half a second apart agree.
nlohmann::json settled_status(const Cluster& c) {
  const auto counters = [](const nlohmann::json& st) {
    std::vector<uint64_t> v;
    for (const auto& s : st["plan"]["stages"]) v.insert(v.end(), {s["tokens"].get<uint64_t>(), s["bytes_out"].get<uint64_t>()});
    return v;
  };
  auto last = status(c);
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    auto now = status(c);
    if (counters(now) == counters(last)) return now;
    last = std::move(now);
  }
  FAIL("the stages' counters did not settle in 10 s");
  return last;
}

}  // namespace

TEST_SUITE("cluster") {
  TEST_CASE("stories260K on 1, 2 and 3 daemons generates what one device generates") {
    auto model = hearth::test::shared_file("models/stories260K/stories260K.gguf");
    if (!model) return;
    TempDir dir;
    Cluster c(dir);
    c.start("head");
    c.start("a");
    c.start("b");
    for (const std::string split : {"head:5", "head:2,a:3", "head:2,a:2,b:1", "head:0,b:1,a:4"}) {
      CAPTURE(split);
      const auto l = c.cli({"launch", "--model", *model, "--split", split, "--json"});
      REQUIRE_MESSAGE(l.exit_code == 0, l.err);
      check_same_as_one_device(c, *model, "Once upon a time", 40);
    }
  }

  TEST_CASE("a conversation's next turn reuses the caches its last turn left on every stage, with the same tokens") {
    auto model = hearth::test::shared_file("models/stories260K/stories260K.gguf");
    if (!model) return;
    TempDir dir;
    Cluster c(dir);
    c.start("head");
    c.start("a");
    c.start("b");
    const auto l = c.cli({"launch", "--model", *model, "--split", "head:2,a:2,b:1"});
    REQUIRE_MESSAGE(l.exit_code == 0, l.err);
    const auto cached = [](const std::string& err) {
      const auto at = err.find(" cached)");
      REQUIRE_MESSAGE(at != std::string::npos, err);
      return std::stoi(err.substr(err.rfind('(', at) + 1));
    };
    for (const auto& sampling : std::vector<std::vector<std::string>>{{"--temp", "0"}, {"--temp", "0.9", "--seed", "7"}}) {
      auto first = gen_args("Once upon a time", sampling, 30);
      first.insert(first.begin(), "generate");
      const auto turn1 = c.cli(first);
      REQUIRE(turn1.exit_code == 0);
      // The story so far and more of the user's words: its beginning is in the caches.
      const std::string prompt = "Once upon a time" + turn1.out.substr(0, turn1.out.size() - 1) + " Then the dog said";
      auto next = gen_args(prompt, sampling, 30);
      next.insert(next.begin(), "generate");
      const auto turn2 = c.cli(next);
      REQUIRE(turn2.exit_code == 0);
      CHECK(cached(turn2.err) > 20);
      next.push_back("--no-cache-prompt");
      const auto uncached = c.cli(next);
      REQUIRE(uncached.exit_code == 0);
      CHECK(cached(uncached.err) == 0);
      CHECK(turn2.out == uncached.out);
      auto run = gen_args(prompt, sampling, 30);
      run.insert(run.begin(), {"run", "--model", *model});
      CHECK(turn2.out == hearth::test::run_cli(run).out);
    }
  }

  TEST_CASE("every KV cache type across three daemons generates what one device generates with it") {
    TempDir dir;
    hearth::runtime::MakeModelOptions o;
    o.type = hearth::runtime::TensorType::Q4_0;
    o.shape = {.n_vocab = 512, .n_embd = 256, .n_layer = 4, .n_head = 4, .n_head_kv = 2, .n_ff = 512, .n_ctx = 256};
    o.weight_std = 0.05f;
    const std::string model = hearth::test::make_model(dir, "m.gguf", o);
    Cluster c(dir);
    c.start("head");
    c.start("a");
    c.start("b");
    for (const std::string kv : {"f32", "f16", "q8_0"}) {
      CAPTURE(kv);
      const auto l = c.cli({"launch", "--model", model, "--split", "head:1,a:2,b:1", "--kv-type", kv});
      REQUIRE_MESSAGE(l.exit_code == 0, l.err);
      CHECK(l.out.find("KV cache: " + kv + ", 256 tokens") != std::string::npos);
      CHECK(status(c)["plan"]["kv_type"] == kv);
      check_same_as_one_device(c, model, "hello world", 24, kv);
    }
    // stories260K's heads of 8 elements cannot be cut into q8_0 blocks: refused, with the way out.
    auto stories = hearth::test::shared_file("models/stories260K/stories260K.gguf");
    if (!stories) return;
    const auto refused = c.cli({"launch", "--model", *stories, "--kv-type", "q8_0"});
    CHECK(refused.exit_code != 0);
    CHECK(refused.err.find("multiple of 32") != std::string::npos);
    CHECK(refused.err.find("--kv-type f16") != std::string::npos);
  }

  // Issue 16's lean activations: each hop as the launch says; every message names its type.
  TEST_CASE("hops that carry f16 or q8_0 activations: their bytes per token, and the story of an f16 hop unchanged") {
    auto model = hearth::test::shared_file("models/stories260K/stories260K.gguf");
    if (!model) return;
    TempDir dir;
    Cluster c(dir);
    c.start("head");
    c.start("a");
    c.start("b");
    const auto args = gen_args("Once upon a time", {"--temp", "0"}, 40);
    auto run = args;
    run.insert(run.begin(), {"run", "--model", *model});
    const auto single = hearth::test::run_cli(run);
    REQUIRE(single.exit_code == 0);
    auto gen = args;
    gen.insert(gen.begin(), "generate");
    // stories260K: 64 values per token, as f16 128 bytes, as q8_0 two blocks of 34.
    for (const auto& [type, bytes_per_token] : std::vector<std::pair<std::string, uint64_t>>{{"f16", 128}, {"q8_0", 68}, {"f32", 256}}) {
      CAPTURE(type);
      const auto l = c.cli({"launch", "--model", *model, "--split", "head:2,a:2,b:1", "--wire-type", type});
      REQUIRE_MESSAGE(l.exit_code == 0, l.err);
      const auto before = settled_status(c);
      const auto out = c.cli(gen);
      REQUIRE_MESSAGE(out.exit_code == 0, out.err);
      const auto after = settled_status(c);
      const auto& stages = after["plan"]["stages"];
      REQUIRE(stages.size() == 3);
      CHECK(stages[0]["wire_type"] == type);
      CHECK(stages[1]["wire_type"] == type);
      CHECK(stages[2]["wire_type"] == "");  // token ids back to the head
      for (int s = 0; s < 2; ++s) {
        const uint64_t tokens = stages[s]["tokens"].get<uint64_t>() - before["plan"]["stages"][s]["tokens"].get<uint64_t>();
        const uint64_t bytes = stages[s]["bytes_out"].get<uint64_t>() - before["plan"]["stages"][s]["bytes_out"].get<uint64_t>();
        CHECK(tokens > 40);
        CHECK(bytes == tokens * bytes_per_token);
      }
      // f16 leaves this trained model's greedy story as it is (measured: q8_0 too, but its
      // rounding is coarse enough that another model's near-tie could move).
      if (type != "q8_0") CHECK(out.out == single.out);
      else if (out.out != single.out) MESSAGE("the q8_0 hop changed the greedy story");
    }
    // auto: f16 exactly on the hops whose measured link the plan calls slow (on a loaded machine
    // even loopback's CURVE transfer can measure below 1 Gbit/s).
    const auto l = c.cli({"launch", "--model", *model, "--split", "head:2,a:2,b:1", "--wire-type", "auto", "--json"});
    REQUIRE_MESSAGE(l.exit_code == 0, l.err);
    const auto plan = nlohmann::json::parse(l.out);
    for (int s = 0; s < 2; ++s) {
      const std::string line = plan["text"][s].get<std::string>(), wire = plan["stages"][s]["wire_type"].get<std::string>();
      CAPTURE(line);
      CHECK((wire == "f16" || wire == "f32"));
      CHECK((wire == "f16") == (line.find("activations compressed") != std::string::npos));
    }
    const auto refused = c.cli({"launch", "--model", *model, "--wire-type", "q4_0"});
    CHECK(refused.exit_code != 0);
  }

  // Issue 16's speculative decoding: drafts travel with the newest token, the last stage checks
  // them, every stage goes on from the accepted part.
  TEST_CASE("speculative decoding across three daemons: n-gram and oracle drafts give the one-device tokens") {
    auto model = hearth::test::shared_file("models/stories260K/stories260K.gguf");
    if (!model) return;
    TempDir dir;
    Cluster c(dir);
    c.start("head");
    c.start("a");
    c.start("b");
    const auto speculation = [&] { return status(c)["generation"]["speculation"]; };
    auto l = c.cli({"launch", "--model", *model, "--split", "head:2,a:2,b:1", "--draft", "ngram"});
    REQUIRE_MESSAGE(l.exit_code == 0, l.err);
    // A prompt whose greedy continuation copies it: the first draft ("named Lily. She" after "a
    // little girl") is accepted whatever the timing. Later drafts depend on it (the pace rests a
    // source that keeps missing unless drafting is measured to pay), and "Once upon a time"
    // alone gave no accepted draft in 120 tokens under a loaded CI run.
    check_same_as_one_device(c, *model, kRepeatingStory, 120);
    auto sp = speculation();
    CHECK(sp["draft"] == "ngram");
    CHECK(sp["tokens_drafted"].get<uint64_t>() > 0);
    CHECK(sp["tokens_accepted"].get<uint64_t>() >= 4);
    CHECK(sp["tokens_accepted"].get<uint64_t>() <= sp["tokens_drafted"].get<uint64_t>());
    CHECK(c.cli({"status"}).out.find("speculation: ngram drafts") != std::string::npos);

    // The oracle: the target's own greedy continuation, recorded by a plain generate.
    const std::string ids = dir.file("ids.txt");
    auto gen = gen_args("Once upon a time", {"--temp", "0"}, 60);
    gen.insert(gen.begin(), "generate");
    gen.insert(gen.end(), {"--ids", ids});
    const auto plain = c.cli(gen);
    REQUIRE(plain.exit_code == 0);
    l = c.cli({"launch", "--model", *model, "--split", "head:2,a:2,b:1", "--draft", "oracle:" + ids, "--draft-max", "4"});
    REQUIRE_MESSAGE(l.exit_code == 0, l.err);
    gen.resize(gen.size() - 2);
    const nlohmann::json before = settled_status(c)["plan"]["stages"];
    const auto drafted = c.cli(gen);
    CHECK(drafted.out == plain.out);
    sp = speculation();
    CHECK(sp["draft"] == "oracle");
    CHECK(sp["tokens_accepted"] == sp["tokens_drafted"]);
    CHECK(sp["tokens_per_pass"].get<double>() > 4.0);  // 4 drafted and the target's own, but near the end
    // Every stage counted the drafting steps (what the drift watch judges a launch that drafts
    // every step by) and their rows, 4 drafts and a token but near the end. (The counters are
    // since each daemon started.)
    const nlohmann::json stages = settled_status(c)["plan"]["stages"];
    REQUIRE(stages.size() == 3);
    REQUIRE(before.size() == 3);
    for (size_t i = 0; i < stages.size(); ++i) {
      const auto& s = stages[i];
      CAPTURE(s.dump());
      const uint64_t steps = s["batched_steps"].get<uint64_t>() - before[i]["batched_steps"].get<uint64_t>();
      const uint64_t rows = s["batched_rows"].get<uint64_t>() - before[i]["batched_rows"].get<uint64_t>();
      CHECK(steps >= 8);
      CHECK(rows >= 4 * steps);
      CHECK(rows <= 5 * steps);
    }

    // A draft model on the head: the model itself, so its greedy drafts are all accepted.
    l = c.cli({"launch", "--model", *model, "--split", "head:2,a:2,b:1", "--draft", *model});
    REQUIRE_MESSAGE(l.exit_code == 0, l.err);
    CHECK(c.cli(gen).out == plain.out);
    sp = speculation();
    CHECK(sp["draft"] == *model);
    CHECK(sp["tokens_drafted"].get<uint64_t>() > 20);
    CHECK(sp["tokens_accepted"] == sp["tokens_drafted"]);

    const auto unknown = c.cli({"launch", "--model", *model, "--draft", "medusa"});
    CHECK(unknown.exit_code != 0);
    const auto missing = c.cli({"launch", "--model", *model, "--draft", "oracle:" + dir.file("none.txt")});
    CHECK(missing.exit_code != 0);
    CHECK(missing.err.find("cannot read") != std::string::npos);
    // A model with recurrent layers speculates too: its stages go back to their state before a
    // draft (scheduler_test.cpp checks drafts cut short; here the wire, with the oracle's).
    hearth::runtime::MakeModelOptions o;
    o.shape = *hearth::runtime::random_model_preset("tiny");
    o.arch = "qwen35";
    o.weight_std = 0.08f;
    const std::string hybrid = hearth::test::make_model(dir, "q.gguf", o);
    l = c.cli({"launch", "--model", hybrid, "--split", "head:2,a:1,b:1"});
    REQUIRE_MESSAGE(l.exit_code == 0, l.err);
    const std::string hybrid_ids = dir.file("hybrid-ids.txt");
    auto hybrid_gen = gen_args("Once upon a time", {"--temp", "0"}, 40);
    hybrid_gen.insert(hybrid_gen.begin(), "generate");
    hybrid_gen.insert(hybrid_gen.end(), {"--ids", hybrid_ids});
    const auto hybrid_plain = c.cli(hybrid_gen);
    REQUIRE(hybrid_plain.exit_code == 0);
    l = c.cli({"launch", "--model", hybrid, "--split", "head:2,a:1,b:1", "--draft", "oracle:" + hybrid_ids, "--draft-max", "4"});
    REQUIRE_MESSAGE(l.exit_code == 0, l.err);
    hybrid_gen.resize(hybrid_gen.size() - 2);
    CHECK(c.cli(hybrid_gen).out == hybrid_plain.out);
    sp = speculation();
    CHECK(sp["tokens_drafted"].get<uint64_t>() > 0);
    CHECK(sp["tokens_accepted"] == sp["tokens_drafted"]);
    // A recording wrong at its third token: the first draft is accepted up to there, so every
    // stage goes back to its state before the draft and the head sends the accepted token again.
    std::vector<int32_t> recorded;
    {
      std::ifstream in(hybrid_ids);
      for (int32_t id = 0; in >> id;) recorded.push_back(id);
    }
    REQUIRE(recorded.size() > 4);
    recorded[2] = (recorded[2] + 1) % 512;  // the tiny preset's vocabulary
    const std::string wrong_ids = dir.file("hybrid-wrong-ids.txt");
    {
      std::ofstream out(wrong_ids);
      for (int32_t id : recorded) out << id << '\n';
    }
    l = c.cli({"launch", "--model", hybrid, "--split", "head:2,a:1,b:1", "--draft", "oracle:" + wrong_ids, "--draft-max", "4"});
    REQUIRE_MESSAGE(l.exit_code == 0, l.err);
    CHECK(c.cli(hybrid_gen).out == hybrid_plain.out);
    sp = speculation();
    CHECK(sp["tokens_accepted"].get<uint64_t>() >= 1);
    CHECK(sp["tokens_accepted"].get<uint64_t>() < sp["tokens_drafted"].get<uint64_t>());
  }

  // Issue 18's check: a GPU stage in the middle of a pipeline of CPU stages (in CI, lavapipe).
  // Its sums run in another order than the CPU's, so hidden states differ in the last bits: a
  // trained model's tokens do not move (stories260K, as the arm64 stage of mixed_arch_test), a
  // random model's can, at its near-ties (a random Q4_0 model here parted after 8 tokens).
  TEST_CASE("a GPU stage between CPU stages generates what one CPU device generates") {
    std::string lavapipe;
    for (const auto& g : hearth::runtime::list_gpus())
      if (g.kind == "cpu") lavapipe = std::to_string(g.index);
    if (lavapipe.empty()) {
      MESSAGE("skipped: no CPU Vulkan device (lavapipe: mesa-vulkan-drivers) or a build without Vulkan");
      return;
    }
    auto model = hearth::test::shared_file("models/stories260K/stories260K.gguf");
    if (!model) return;
    TempDir dir;
    Cluster c(dir);
    c.start("head", {"--gpu", "none"});
    c.start("a", {"--gpu", lavapipe});
    c.start("b", {"--gpu", "none"});
    const auto l = c.cli({"launch", "--model", *model, "--split", "head:2,a:2,b:1"});
    REQUIRE_MESSAGE(l.exit_code == 0, l.err);
    check_same_as_one_device(c, *model, "Once upon a time", 40);
    std::ifstream f(c.daemon("a").log);
    const std::string log((std::istreambuf_iterator<char>(f)), {});
    CHECK(log.find("llvmpipe") != std::string::npos);
    CHECK(log.find("2 of 2 layers (2 whole)") != std::string::npos);  // norms, attention and its cache there too
    // The planner knows a's GPU: measured at its start, carried to the head, listed by devices.
    const auto d = c.cli({"devices", "--json"});
    REQUIRE_MESSAGE(d.exit_code == 0, d.err);
    for (const auto& device : nlohmann::json::parse(d.out)) {
      CAPTURE(device["name"]);
      if (device["name"] != "a") {
        CHECK(device["gpu"].is_null());
        continue;
      }
      REQUIRE(device["gpu"].is_object());
      CHECK(device["gpu"]["name"].get<std::string>().find("llvmpipe") != std::string::npos);
      CHECK(device["gpu"]["unified_memory"].get<bool>());  // a CPU device shares the RAM
      CHECK(device["gpu"]["decode_bytes_per_s"]["q4_k"].get<double>() > 0);
      CHECK(device["gpu"]["layer_overhead_s"].get<double>() > 0);
    }
  }

  TEST_CASE("a random model split by the planner across memory-limited daemons: same tokens, bounded memory, cached weights") {
    TempDir dir;
    const std::string model = make_hundred_mb_model(dir);
    const uint64_t model_bytes = std::filesystem::file_size(model);  // ~100 MB
    // Each daemon may use less than the whole model (the margin for the process comes off the limit).
    const std::string limit = std::to_string(model_bytes / 2 + (60ull << 20));
    Cluster c(dir);
    c.start("head", {"--memory-limit", limit});
    c.start("a", {"--memory-limit", limit});
    c.start("b", {"--memory-limit", limit});
    const auto l = c.cli({"launch", "--model", model, "--ctx", "128", "--streams", "1", "--json"});
    REQUIRE_MESSAGE(l.exit_code == 0, l.err);
    const auto plan = nlohmann::json::parse(l.out);
    CHECK(plan["stages"].size() >= 2);  // no device could hold it alone
    check_same_as_one_device(c, model, "hello world", 24);

    // Resident memory: each daemon holds its layers, its KV cache and a fixed overhead, never the model.
    const auto loaded = status(c);  // named: a range-for over a temporary's member would dangle
    for (const auto& s : loaded["plan"]["stages"]) {
      const std::string name = s["device"];
      const uint64_t rss = hearth::test::process_rss(c.daemon(name).pid);
      const double share = s["weight_bytes"].get<double>() + s["kv_bytes"].get<double>();
      MESSAGE(name << ": RSS " << rss / 1e6 << " MB for a share of " << share / 1e6 << " MB (model " << model_bytes / 1e6
                   << " MB)");
#if defined(__SANITIZE_ADDRESS__)
      // AddressSanitizer's shadow memory and quarantine inflate RSS; the Release run checks it.
      (void)rss;
#else
      // The fixed part, measured: a device ~27 MB (stage buffers for 256-token batches, ZeroMQ,
      // CURVE, libraries), the head ~50 MB: malloc_stats() shows 16 MB in use and 26 MB of freed
      // weight-chunk buffers that glibc keeps in its heaps after streaming. A fixed
      // M_MMAP_THRESHOLD of 1 MiB gave them back (head ~25 MB) but cut encrypted weight streaming
      // from ~500 to ~300 MB/s, so it is not used. The bound is the head's, with a few MB of room.
      CHECK(rss < share + 56e6);
#endif
    }

    // Relaunching the same plan costs no transfer: the devices find their stages in the cache.
    REQUIRE(c.cli({"stop"}).exit_code == 0);
    REQUIRE(c.cli({"launch", "--model", model, "--ctx", "128", "--streams", "1"}).exit_code == 0);
    const auto reloaded = status(c);
    // The same plan, that is: links measured between the two launches may move a layer, and a
    // stage with other layers is another file.
    const auto layout = [](const nlohmann::json& stages) {
      std::string text;
      for (const auto& s : stages)
        text += s["device"].get<std::string>() + ":" + s["first_layer"].dump() + "-" + s["last_layer"].dump() + " ";
      return text;
    };
    CAPTURE(layout(plan["stages"]));
    CAPTURE(layout(reloaded["plan"]["stages"]));
    for (const auto& s : reloaded["plan"]["stages"]) {
      bool same = false;
      for (const auto& before : plan["stages"])
        same |= before["device"] == s["device"] && before["first_layer"] == s["first_layer"] &&
                before["last_layer"] == s["last_layer"];
      if (s["device"] != "head" && same) CHECK(s["message"] == "cached");
    }
    check_same_as_one_device(c, model, "hello world", 8);
  }

  TEST_CASE("a model larger than the devices' memory together: the device with storage pages, same tokens") {
    TempDir dir;
    const std::string model = make_hundred_mb_model(dir);
    const uint64_t model_bytes = std::filesystem::file_size(model);  // ~100 MB
    // Usable memory (the limit less 32 MiB and 5%) of the two together is below the model with
    // its caches and buffers; only 'a' has measured storage to page from.
    const std::string limit = std::to_string(model_bytes * 2 / 5 + (60ull << 20));
    Cluster c(dir);
    c.set_profile_storage("a", 1e9);
    c.start("head", {"--memory-limit", limit});
    c.start("a", {"--memory-limit", limit});
    const auto l = c.cli({"launch", "--model", model, "--ctx", "128", "--streams", "1", "--json"});
    REQUIRE_MESSAGE(l.exit_code == 0, l.err);
    const auto plan = nlohmann::json::parse(l.out);
    CAPTURE(plan.dump());
    REQUIRE(plan["stages"].size() == 2);
    for (const auto& s : plan["stages"]) {
      if (s["device"] == "a") CHECK(s["paged_bytes"].get<double>() > 0);
      else CHECK(s["paged_bytes"].get<double>() == 0);
    }
    check_same_as_one_device(c, model, "hello world", 16);
    const auto text = c.cli({"status"});
    CHECK(text.out.find("PAGED") != std::string::npos);
    std::ifstream log(c.daemon("a").log);
    const std::string said((std::istreambuf_iterator<char>(log)), {});
    std::smatch per_step;
    REQUIRE(std::regex_search(said, per_step, std::regex(R"(paging \d+ of the stage's \d+ layers from .* \((\d+) MB read per step\))")));
    // Its reads reach the head with its heartbeats: every step read the paged layers again (16
    // tokens generated here, and check_same_as_one_device's own), and the compute waited for part.
    const double step_bytes = std::stod(per_step[1]) * 1e6;
    nlohmann::json stage_a;
    for (int i = 0; i < 50; ++i) {
      const nlohmann::json st = status(c);
      for (const auto& s : st["plan"]["stages"])
        if (s["device"] == "a") stage_a = s;
      if (stage_a.value("paged_read_bytes", 0.0) >= 16 * step_bytes) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CAPTURE(stage_a.dump());
    CHECK(stage_a["paged_read_bytes"].get<double>() >= 16 * step_bytes);
    CHECK(stage_a["paged_read_s"].get<double>() > 0);
    CHECK(stage_a["paged_wait_s"].get<double>() >= 0);
    const std::string said_status = c.cli({"status"}).out;
    CAPTURE(said_status);
    CHECK(said_status.find("paging on a: read") != std::string::npos);                 // measured
    CHECK(said_status.find("read from storage every step (") != std::string::npos);  // planned
    // Reads of GBs (StorageRateMeter closes a window at 1 GiB and 0.25 s of reading) replace
    // the 1 GB/s the test gave 'a' as its storage figure: the next plan uses what paging sustained.
    REQUIRE(c.cli({"generate", "-p", "and then", "-n", "48", "--temp", "0"}).exit_code == 0);
    nlohmann::json a = nlohmann::json::object();
    for (int i = 0; i < 50 && !a.value("storage_from_paging", false); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      for (const auto& d : nlohmann::json::parse(c.cli({"devices", "--json"}).out))
        if (d["name"] == "a") a = d;
    }
    CAPTURE(a.dump());
    CHECK(a["storage_from_paging"].get<bool>());
    CHECK(a["storage_read_bytes_per_s"].get<double>() != 1e9);
    CHECK(c.cli({"devices"}).out.find("the rate its paging read at") != std::string::npos);
#if !defined(__SANITIZE_ADDRESS__)
    // Paged, 'a' stays within its --memory-limit, which its stage's weights alone nearly fill.
    CHECK(hearth::test::process_rss(c.daemon("a").pid) < std::stod(limit));
#endif
  }

  // Found by home-cluster's wifi-three-drift scenario: the planner gave a tablet a stage of 211 MB
  // of weights, most of them paged, and the tablet refused it against its 205 MB limit, a check
  // older than paging. The stage pages what does not fit (StageRunner::paging_for).
  TEST_CASE("a stage whose weights alone exceed its device's memory limit is paged, not refused") {
    TempDir dir;
    hearth::runtime::MakeModelOptions o;
    o.type = hearth::runtime::TensorType::Q8_0;
    o.shape = {.n_vocab = 512, .n_embd = 1024, .n_layer = 16, .n_head = 8, .n_head_kv = 4, .n_ff = 2816, .n_ctx = 256};
    const std::string model = hearth::test::make_model(dir, "m.gguf", o);  // ~200 MB, 12 MB a block
    Cluster c(dir);
    c.set_profile_storage("a", 1e9);
    c.start("head", {"--memory-limit", "120MB"});  // a few blocks
    c.start("a", {"--memory-limit", "100MB"});     // less than the rest, which it pages
    const auto l = c.cli({"launch", "--model", model, "--ctx", "128", "--streams", "1", "--json"});
    REQUIRE_MESSAGE(l.exit_code == 0, l.err);
    const auto plan = nlohmann::json::parse(l.out);
    CAPTURE(plan.dump());
    double a_weights = 0;
    for (const auto& s : plan["stages"])
      if (s["device"] == "a") a_weights = s["weight_bytes"].get<double>();
    CHECK(a_weights > 100e6);
    check_same_as_one_device(c, model, "hello world", 8);
    std::ifstream log(c.daemon("a").log);
    const std::string said((std::istreambuf_iterator<char>(log)), {});
    CHECK(said.find("paging ") != std::string::npos);  // paged, not loaded whole
  }

  TEST_CASE("malformed, truncated and out-of-plan messages are dropped and the cluster keeps serving") {
    auto model = hearth::test::shared_file("models/stories260K/stories260K.gguf");
    if (!model) return;
    TempDir dir;
    Cluster c(dir);
    c.start("head");
    const std::string a_control = c.start("a").control;
    REQUIRE(c.cli({"launch", "--model", *model, "--split", "head:2,a:3"}).exit_code == 0);
    const uint64_t plan_id = status(c)["plan"]["plan_id"];
    std::string a_data;
    for (const auto& d : nlohmann::json::parse(c.cli({"devices", "--json"}).out))
      if (d["name"] == "a") a_data = d["data_endpoint"];
    REQUIRE(!a_data.empty());

    // The bad messages come from a member's key (a buggy paired device): strangers do not get as far
    // as sending anything (security_test.cpp).
    zmq::context_t ctx;
    const auto member = hearth::transport::load_keys(c.daemon("head").data_dir + "/keys");
    const auto a_keys = hearth::transport::load_keys(c.daemon("a").data_dir + "/keys");
    REQUIRE((member && a_keys));
    const hearth::transport::SocketFactory sockets(ctx, member);
    zmq::socket_t ctl = sockets.connect_dealer(a_control, "", {.server_key = a_keys->public_key});
    zmq::socket_t head_ctl = sockets.connect_dealer(c.head(), "", {.server_key = member->public_key});
    const auto forward = [&](uint64_t plan, uint32_t n_embd, size_t payload_floats, float value) {
      capnp::MallocMessageBuilder b;
      auto f = b.initRoot<wire::Envelope>().initForward();
      f.setPlanId(plan);
      f.setNEmbd(n_embd);
      auto ch = f.initChunks(1);
      ch[0].setSeq(99);
      ch[0].setPos(0);
      ch[0].setNTokens(1);
      f.initTokens(1).set(0, 1);
      std::vector<float> payload(payload_floats, value);
      return std::make_pair(hearth::transport::encode(b), zmq::message_t(payload.data(), payload.size() * 4));
    };
    // Garbage and wrong envelopes on the control sockets.
    for (zmq::socket_t* s : {&ctl, &head_ctl}) {
      s->send(zmq::str_buffer("garbage!"), zmq::send_flags::none);
      s->send(zmq::str_buffer("1234567"), zmq::send_flags::none);
      capnp::MallocMessageBuilder b;
      b.initRoot<wire::Envelope>().initAssignment().setPlanId(1);  // an assignment from a stranger
      s->send(hearth::transport::encode(b), zmq::send_flags::none);
      auto [h, p] = forward(plan_id, 64, 64, 1.f);
      s->send(h, zmq::send_flags::sndmore);
      s->send(p, zmq::send_flags::sndmore);
      s->send(zmq::str_buffer("extra frame"), zmq::send_flags::none);
    }
    // Bad forwards straight into a's data socket.
    zmq::socket_t push = sockets.connect_push(a_data, {.server_key = a_keys->public_key});
    push.send(zmq::str_buffer("not capnp"), zmq::send_flags::none);
    const auto send_forward = [&](std::pair<zmq::message_t, zmq::message_t> m) {
      push.send(m.first, zmq::send_flags::sndmore);
      push.send(m.second, zmq::send_flags::none);
    };
    send_forward(forward(plan_id + 1, 64, 64, 1.f));        // another plan
    send_forward(forward(plan_id, 32, 32, 1.f));            // wrong width
    send_forward(forward(plan_id, 64, 63, 1.f));            // truncated payload
    send_forward(forward(plan_id, 64, 64, std::nanf("")));  // NaN
    {
      auto [h, p] = forward(plan_id, 64, 64, 1.f);  // truncated header
      push.send(zmq::message_t(h.data(), h.size() - 8), zmq::send_flags::sndmore);
      push.send(p, zmq::send_flags::none);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    // The cluster still answers correctly.
    const auto g = c.cli({"generate", "--prompt", "Once upon a time", "-n", "32", "--temp", "0"});
    CHECK(g.exit_code == 0);
    CHECK(g.out.rfind(", there was a little girl named Lily.", 0) == 0);
    const auto s = status(c);
    CHECK(s["dropped"]["malformed"].get<int>() >= 2);
    std::this_thread::sleep_for(std::chrono::milliseconds(600));  // a heartbeat carries a's count
    const auto s2 = status(c);
    for (const auto& st : s2["plan"]["stages"])
      if (st["device"] == "a") CHECK(st["dropped"].get<int>() >= 3);
  }

  namespace {

  // Starts `hearth generate` in a child process; returns its pid. Its output goes to `out`.
  pid_t generate_in_background(const Cluster& c, const std::vector<std::string>& args, const std::string& out) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      const auto r = c.cli(args);
      std::ofstream(out) << r.out;
      std::ofstream(out + ".err") << r.err;
      ::_exit(r.exit_code == 0 ? 0 : 1);
    }
    return pid;
  }

  // Waits for `pid` at most `limit`; returns its exit code (-1 if it had to be killed).
  int wait_for(pid_t pid, std::chrono::seconds limit) {
    const auto t0 = std::chrono::steady_clock::now();
    int status_code = 0;
    while (::waitpid(pid, &status_code, WNOHANG) != pid) {
      if (std::chrono::steady_clock::now() - t0 > limit) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return WIFEXITED(status_code) ? WEXITSTATUS(status_code) : -1;
  }

  // Stops the process 30 ms of every 35 while it lives (it then computes at about a seventh of its
  // speed, whatever else the machine does), and lets it run again at the end.
  class DutyCycle {
   public:
    explicit DutyCycle(pid_t pid)
        : pid_(pid), thread_([this] {
            while (busy_) {
              ::kill(pid_, SIGSTOP);
              std::this_thread::sleep_for(std::chrono::milliseconds(30));
              ::kill(pid_, SIGCONT);
              std::this_thread::sleep_for(std::chrono::milliseconds(5));
            }
          }) {}
    ~DutyCycle() {
      busy_ = false;
      thread_.join();
      ::kill(pid_, SIGCONT);
    }
    DutyCycle(const DutyCycle&) = delete;
    DutyCycle& operator=(const DutyCycle&) = delete;

   private:
    pid_t pid_;
    std::atomic<bool> busy_{true};
    std::thread thread_;
  };

  std::string slurp(const std::string& path) {
    std::ifstream f(path);
    return {std::istreambuf_iterator<char>(f), {}};
  }

  // Launches `model` on `split`, generates `tokens` tokens sampled with the first of `seeds` whose
  // story runs all of them on one device ("a long story", temperature 0.9), SIGKILLs device
  // `victim` 800 ms in, and checks the text is what one device generates and that the plan's
  // events name the loss (`lost`, e.g. "device a (layers 1-2)"). Returns the status after.
  // Several seeds because where a sampled story ends depends on the kernel table: the AVX2 and
  // AVX-512 tables' attention scores differ in their last bits (kernels.h), so a story that runs
  // to the end on one may stop at an end-of-text token on the other.
  nlohmann::json check_stream_survives_kill(Cluster& c, const TempDir& dir, const std::string& model, const std::string& split,
                                            int tokens, std::initializer_list<const char*> seeds, const std::string& victim,
                                            const std::string& lost) {
    const std::string n = std::to_string(tokens);
    std::vector<std::string> gen;
    hearth::test::CommandResult reference{};
    for (const char* seed : seeds) {
      gen = {"--prompt", "a long story", "-n", n, "--temp", "0.9", "--seed", seed};
      std::vector<std::string> run{"run", "--model", model, "--ctx", "4096"};
      run.insert(run.end(), gen.begin(), gen.end());
      reference = hearth::test::run_cli(run);
      REQUIRE(reference.exit_code == 0);
      if (reference.err.find(n + " tokens generated") != std::string::npos) break;
    }
    REQUIRE_MESSAGE(reference.err.find(n + " tokens generated") != std::string::npos, reference.err);
    REQUIRE(c.cli({"launch", "--model", model, "--split", split, "--ctx", "4096"}).exit_code == 0);
    std::vector<std::string> args{"generate"};
    args.insert(args.end(), gen.begin(), gen.end());
    const std::string out = dir.file("generated.txt");
    const pid_t client = generate_in_background(c, args, out);
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    int wstatus = 0;
    CHECK_MESSAGE(waitpid(client, &wstatus, WNOHANG) == 0, "the stream ended before the stage was killed");
    c.kill(victim, SIGKILL);
    const int code = wait_for(client, std::chrono::seconds(60));
    CAPTURE(slurp(out + ".err"));
    CHECK(code == 0);
    CHECK(slurp(out) == reference.out);
    const auto after = status(c);
    CHECK(after["plan"]["events"].dump().find(lost + " stopped responding") != std::string::npos);
    return after;
  }

  }  // namespace

  TEST_CASE("a stage killed mid-generation: the head re-plans on the devices left and the stream goes on unchanged") {
    TempDir dir;
    hearth::runtime::MakeModelOptions o;
    o.type = hearth::runtime::TensorType::Q4_0;
    o.shape.n_ctx = 4096;
    const std::string model = hearth::test::make_model(dir, "m.gguf", o);
    // Seeded sampling, not only greedy: the replay must also continue the random stream.
    const std::vector<std::string> gen{"--prompt", "a long story", "-n", "2500", "--temp", "0.9", "--seed", "3"};
    std::vector<std::string> run{"run", "--model", model};
    run.insert(run.end(), gen.begin(), gen.end());
    const auto reference = hearth::test::run_cli(run);
    REQUIRE(reference.exit_code == 0);
    REQUIRE_MESSAGE(reference.err.find("2500 tokens generated") != std::string::npos, reference.err);  // no early end

    Cluster c(dir);
    c.start("head");
    c.start("a");
    c.start("b");
    REQUIRE(c.cli({"launch", "--model", model, "--split", "head:2,a:2", "--ctx", "4096"}).exit_code == 0);
    std::vector<std::string> args{"generate"};
    args.insert(args.end(), gen.begin(), gen.end());
    const std::string out = dir.file("generated.txt");
    const pid_t client = generate_in_background(c, args, out);
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    c.kill("a", SIGKILL);
    const int code = wait_for(client, std::chrono::seconds(60));
    CAPTURE(slurp(out + ".err"));
    CHECK(code == 0);                    // no error: the client saw a pause
    CHECK(slurp(out) == reference.out);  // and the text of an undisturbed run
    const auto s = status(c);
    CHECK(s["plan"]["ready"] == true);
    CHECK(s["plan"]["events"].dump().find("device a (layers 2-3) stopped responding") != std::string::npos);
    for (const auto& st : s["plan"]["stages"]) CHECK(st["device"] != "a");
    // a, restarted, registers again.
    c.start("a");

    // With speculative decoding (issue 16): drafts in flight are lost with the stage, the replay
    // rebuilds the caches, the re-plan keeps drafting, and the text is still the undisturbed one.
    // (Once, under ASan with other suites running, this launch failed with exit 1 and no message
    // kept; it passed alone. The head's answer is printed if it fails again.)
    const auto relaunch = c.cli({"launch", "--model", model, "--split", "head:2,b:2", "--ctx", "4096", "--draft", "ngram"});
    REQUIRE_MESSAGE(relaunch.exit_code == 0, std::string(relaunch.out + relaunch.err));
    const pid_t drafting = generate_in_background(c, args, out);
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    c.kill("b", SIGKILL);
    CHECK(wait_for(drafting, std::chrono::seconds(60)) == 0);
    CHECK(slurp(out) == reference.out);
    const auto after = status(c);
    CHECK(after["plan"]["events"].dump().find("device b (layers 2-3) stopped responding") != std::string::npos);
    CHECK(after["generation"]["speculation"]["draft"] == "ngram");
    CHECK(after["generation"]["speculation"]["tokens_drafted"].get<uint64_t>() > 0);
  }

  TEST_CASE(
      "MoE, phi3, gemma3 and gemma4 (E2B and 26B-A4B layouts too) models on 2 and 3 daemons generate what one device does; a "
      "MoE stream "
      "survives a killed stage") {
    TempDir dir;
    Cluster c(dir);
    c.start("head");
    c.start("a");
    c.start("b");
    // llama.cpp's fixtures (tests/random_arch_test.cpp checks them against its logits).
    struct Fixture {
      const char* name;
      const char* two;
      const char* three;
      const char* dir = "models/random-arch/";
    };
    for (const Fixture fx :
         {Fixture{"qwen3moe-q8_0", "head:1,a:2", "head:0,a:1,b:2"}, Fixture{"olmoe-f32", "head:1,a:1", "head:0,a:1,b:1"},
          Fixture{"mixtral-q8_0", "head:1,a:1", "head:0,b:1,a:1"}, Fixture{"phi3-q8_0", "head:2,a:1", "head:1,a:1,b:1"},
          Fixture{"gemma3-q8_0", "head:1,a:5", "head:0,a:2,b:4"}, Fixture{"gpt-oss-q8_0", "head:2,a:2", "head:1,a:1,b:2"},
          Fixture{"gpt-oss-mxfp4", "head:2,a:2", "head:1,a:1,b:2"},
          Fixture{"gemma4-tiny-q8_0", "head:3,a:1", "head:1,a:2,b:1", "models/random-arch-2026/"},
          Fixture{"qwen35-tiny-q8_0", "head:2,a:2", "head:1,a:2,b:1", "models/random-arch-2026/"},
          Fixture{"qwen35moe-tiny-q8_0", "head:1,a:3", "head:2,a:1,b:1", "models/random-arch-2026/"}}) {
      auto model = hearth::test::shared_file(std::string(fx.dir) + fx.name + ".gguf");
      if (!model) break;
      for (const char* split : {fx.two, fx.three}) {
        CAPTURE(fx.name);
        CAPTURE(split);
        const auto l = c.cli({"launch", "--model", *model, "--split", split});
        REQUIRE_MESSAGE(l.exit_code == 0, l.err);
        check_same_as_one_device(c, *model, "Once upon a time, there was a little robot", 30);
      }
    }

    // Gemma 4 E2B/E4B's layout (random_arch_test checks it against llama.cpp): the per-layer
    // inputs travel with the hidden state, and the shared-KV layers 5-9 stay with layers 3 and 4.
    {
      hearth::runtime::MakeModelOptions e{.type = hearth::runtime::TensorType::Q8_0, .seed = 7, .sliding_window = 8};
      e.arch = "gemma4";
      e.shape.n_layer = 10;
      e.full_layer_period = 5;
      e.per_layer_embd = 64;
      e.shared_kv_layers = 5;
      const std::string model = hearth::test::make_model(dir, "gemma4-e.gguf", e);
      for (const char* split : {"head:3,a:7", "head:1,a:2,b:7"}) {
        CAPTURE(split);
        const auto l = c.cli({"launch", "--model", model, "--split", split});
        REQUIRE_MESSAGE(l.exit_code == 0, l.err);
        check_same_as_one_device(c, model, "Once upon a time, there was a little robot", 30);
      }
      const auto refused = c.cli({"launch", "--model", model, "--split", "head:5,a:5"});
      CHECK(refused.exit_code != 0);
      CHECK_MESSAGE(refused.err.find("starts at layer 5") != std::string::npos, refused.err);
      const auto planned = c.cli({"launch", "--model", model});  // the planner's own choice
      REQUIRE_MESSAGE(planned.exit_code == 0, planned.err);
      check_same_as_one_device(c, model, "Once upon a time, there was a little robot", 30);
    }
    // Gemma 4 26B-A4B's layout: a dense FFN beside the experts in every layer.
    {
      hearth::runtime::MakeModelOptions m{.type = hearth::runtime::TensorType::Q8_0, .seed = 9, .sliding_window = 8};
      m.arch = "gemma4";
      m.shape.n_expert = 8;
      m.shape.n_expert_used = 2;
      m.shape.n_ff_exp = 64;
      const std::string model = hearth::test::make_model(dir, "gemma4-moe.gguf", m);
      for (const char* split : {"head:2,a:2", "head:1,a:2,b:1"}) {
        CAPTURE(split);
        const auto l = c.cli({"launch", "--model", model, "--split", split});
        REQUIRE_MESSAGE(l.exit_code == 0, l.err);
        check_same_as_one_device(c, model, "Once upon a time, there was a little robot", 30);
      }
    }

    // A stage lost mid-stream: replay rebuilds its experts' layers elsewhere, the text goes on.
    hearth::runtime::MakeModelOptions o;
    o.arch = "qwen3moe";
    o.shape = *hearth::runtime::random_model_preset("tiny-moe");
    o.shape.n_ctx = 4096;
    o.type = hearth::runtime::TensorType::Q8_0;
    const std::string model = hearth::test::make_model(dir, "moe.gguf", o);
    check_stream_survives_kill(c, dir, model, "head:1,a:2,b:1", 4000, {"5"}, "a", "device a (layers 1-2)");
  }

  TEST_CASE("a Gemma 4 E2B-style stream survives losing the stage of its shared-KV layers: the new plan keeps them together") {
    TempDir dir;
    hearth::runtime::MakeModelOptions e{.type = hearth::runtime::TensorType::Q8_0, .seed = 7, .sliding_window = 8};
    e.arch = "gemma4";
    e.shape.n_layer = 10;
    e.shape.n_ctx = 4096;
    e.full_layer_period = 5;
    e.per_layer_embd = 64;
    e.shared_kv_layers = 5;
    const std::string model = hearth::test::make_model(dir, "gemma4-e.gguf", e);
    Cluster c(dir);
    c.start("head");
    c.start("a");
    c.start("b");
    // b holds layers 3-9: the shared-KV layers 5-9 and the layers 3 and 4 whose caches they read.
    // Seed 12: a story that runs the whole 3000 tokens on the AVX-512 table (736 on the AVX2
    // one), seed 40 on the AVX2 table (2224 on the AVX-512 one).
    const auto after =
        check_stream_survives_kill(c, dir, model, "head:1,a:2,b:7", 3000, {"12", "40"}, "b", "device b (layers 3-9)");
    for (const auto& stage : after["plan"]["stages"]) {
      CAPTURE(stage.dump());
      CHECK(stage["first_layer"].get<int>() <= 3);
    }
  }

  TEST_CASE("a hybrid model's stream survives a killed stage: replay rebuilds the gated delta-nets' recurrent state") {
    auto model = hearth::test::shared_file("models/random-arch-2026/qwen35-tiny-q8_0.gguf");
    if (!model) return;
    TempDir dir;
    Cluster c(dir);
    c.start("head");
    c.start("a");
    c.start("b");
    // a holds two delta-net layers (1 and 2); b the full-attention layer. Seed 14: a story that runs
    // the whole 4000 tokens.
    check_stream_survives_kill(c, dir, *model, "head:1,a:2,b:1", 4000, {"14"}, "a", "device a (layers 1-2)");
  }

  TEST_CASE("the head restarted: its devices register again by themselves, with no new pairing") {
    auto model = hearth::test::shared_file("models/stories260K/stories260K.gguf");
    if (!model) return;
    TempDir dir;
    Cluster c(dir);
    c.start("head");
    c.start("a");
    c.restart("head");
    bool listed = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!listed && std::chrono::steady_clock::now() < deadline) {
      const auto r = c.cli({"devices", "--json"});
      listed = r.exit_code == 0 && r.out.find("\"a\"") != std::string::npos;
      if (!listed) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    REQUIRE(listed);
    REQUIRE(c.cli({"launch", "--model", *model, "--split", "head:2,a:3"}).exit_code == 0);
    check_same_as_one_device(c, *model, "Once upon a time", 16);
  }

  TEST_CASE("a device that already has the model file maps its layers from it: nothing is transferred") {
    TempDir dir;
    hearth::runtime::MakeModelOptions o;
    o.type = hearth::runtime::TensorType::Q8_0;
    const std::string model = hearth::test::make_model(dir, "m.gguf", o);
    const std::string own = dir.file("a-models");
    std::filesystem::create_directories(own);
    std::filesystem::copy_file(model, own + "/downloaded.gguf");
    std::filesystem::create_directories(dir.file("b-models"));
    hearth::test::write_bytes(dir.file("b-models") + "/other.gguf", {1, 2, 3});  // not a match: b receives
    Cluster c(dir);
    c.start("head");
    c.start("a", {"--models", own});
    c.start("b", {"--models", dir.file("b-models")});
    REQUIRE(c.cli({"launch", "--model", model, "--split", "head:2,a:1,b:1"}).exit_code == 0);
    const auto s = status(c);
    for (const auto& st : s["plan"]["stages"]) {
      if (st["device"] == "a") CHECK(st["message"] == "local copy");
      if (st["device"] == "b") CHECK(st["message"] == "");
    }
    check_same_as_one_device(c, model, "hello world", 16);
  }

  TEST_CASE("a launch stages beside the serving model: a device lost on the way fails it, and the old model still serves") {
    TempDir dir;
    const std::string serving = hearth::test::make_model(dir, "serving.gguf", {});
    hearth::runtime::MakeModelOptions o;
    o.seed = 99;
    o.shape.n_embd = 256;
    const std::string next = hearth::test::make_model(dir, "next.gguf", o);
    Cluster c(dir);
    c.start("head");
    c.start("a");
    REQUIRE(c.cli({"launch", "--model", serving, "--split", "head:4"}).exit_code == 0);
    // Device a goes silent just as the next launch gives it layers: the launch ends within
    // seconds naming a, and the model that served is still loaded and answers.
    ::kill(c.daemon("a").pid, SIGSTOP);  // Cluster::kill waits for the process to end
    const auto t0 = std::chrono::steady_clock::now();
    const auto launched = c.cli({"launch", "--model", next, "--split", "head:2,a:2"});
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ::kill(c.daemon("a").pid, SIGCONT);
    MESSAGE("the launch failed " << waited << " s after it started");
    CAPTURE(launched.err);
    CHECK(launched.exit_code == 5);  // LOST_DEVICE
    CHECK(launched.err.find("device a stopped responding") != std::string::npos);
    CHECK(waited < 8.0);
    const auto s = status(c);
    CHECK(s["plan"]["model"] == serving);
    CHECK(s["plan"]["ready"] == true);
    CHECK(s["plan"]["events"].dump().find("kept serving") != std::string::npos);
    check_same_as_one_device(c, serving, "hello", 8);
    // Once a is back the launch goes through: its stage staged, then the switch.
    for (int i = 0; i < 50; ++i) {
      bool up = false;
      const auto d = c.cli({"devices", "--json"});
      for (const auto& dev : nlohmann::json::parse(d.out))
        if (dev["name"] == "a") up = dev["alive"].get<bool>();
      if (up) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    const auto again = c.cli({"launch", "--model", next, "--split", "head:2,a:2"});
    REQUIRE_MESSAGE(again.exit_code == 0, again.err);
    CHECK(again.out.find("plan for") < again.out.find("launched"));  // the plan before the transfer
    CHECK(status(c)["plan"]["model"] == next);
    check_same_as_one_device(c, next, "hello", 8);
  }

  TEST_CASE("a stage killed when the devices left cannot hold the model: a clear error within seconds") {
    TempDir dir;
    hearth::runtime::MakeModelOptions o;
    o.type = hearth::runtime::TensorType::Q8_0;
    o.shape = {.n_vocab = 512, .n_embd = 1024, .n_layer = 8, .n_head = 8, .n_head_kv = 4, .n_ff = 2816, .n_ctx = 512};
    const std::string model = hearth::test::make_model(dir, "m.gguf", o);
    // Together they hold it; the head alone does not.
    const std::string limit = std::to_string(std::filesystem::file_size(model) / 2 + (80ull << 20));
    Cluster c(dir);
    c.start("head", {"--memory-limit", limit, "--recovery-wait", "0"});  // fail at once rather than wait for a device
    c.start("a", {"--memory-limit", limit});
    const auto launched = c.cli({"launch", "--model", model, "--ctx", "512", "--streams", "1"});
    REQUIRE_MESSAGE(launched.exit_code == 0, launched.err);
    const std::string out = dir.file("generated.txt");
    const pid_t client = generate_in_background(c, {"generate", "--prompt", "a long story", "-n", "500", "--temp", "0"}, out);
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    const auto t0 = std::chrono::steady_clock::now();
    c.kill("a", SIGKILL);
    const int code = wait_for(client, std::chrono::seconds(10));
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    MESSAGE("client got its error " << waited << " s after the kill");
    const std::string err = slurp(out + ".err");
    CAPTURE(err);
    CHECK(code == 1);  // generate_in_background reports failure as 1
    CHECK(err.find("stopped responding") != std::string::npos);
    CHECK(err.find("cannot run the model") != std::string::npos);
    CHECK(waited < 5.0);
    // The head reports it and refuses new work with a clear reason.
    const auto r = c.cli({"generate", "--prompt", "x", "-n", "2"});
    CHECK(r.exit_code == 5);  // unavailable
    CHECK(r.err.find("launch again") != std::string::npos);
    // A launch on the head alone does not fit: its own category and exit code.
    const auto again = c.cli({"launch", "--model", model, "--ctx", "512", "--streams", "1"});
    CAPTURE(again.err);
    CHECK(again.exit_code == 4);
  }

  TEST_CASE("a stage lost when the devices left cannot hold the model: the conversation waits for it to come back") {
    TempDir dir;
    hearth::runtime::MakeModelOptions o;
    o.type = hearth::runtime::TensorType::Q8_0;
    o.shape = {.n_vocab = 512, .n_embd = 1024, .n_layer = 8, .n_head = 8, .n_head_kv = 4, .n_ff = 2816, .n_ctx = 512};
    const std::string model = hearth::test::make_model(dir, "m.gguf", o);
    const std::vector<std::string> gen{"--prompt", "a long story", "-n", "400", "--temp", "0"};
    std::vector<std::string> run{"run", "--model", model};
    run.insert(run.end(), gen.begin(), gen.end());
    const auto reference = hearth::test::run_cli(run);
    REQUIRE(reference.exit_code == 0);
    const std::string limit = std::to_string(std::filesystem::file_size(model) / 2 + (80ull << 20));
    Cluster c(dir);
    c.start("head", {"--memory-limit", limit});  // waits up to 30 s for a device
    c.start("a", {"--memory-limit", limit});
    REQUIRE(c.cli({"launch", "--model", model, "--ctx", "512", "--streams", "1"}).exit_code == 0);
    std::vector<std::string> args{"generate"};
    args.insert(args.end(), gen.begin(), gen.end());
    const std::string out = dir.file("generated.txt");
    const pid_t client = generate_in_background(c, args, out);
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    c.kill("a", SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(3000));  // the head notices, cannot re-plan, waits
    const auto waiting = status(c);
    CHECK(waiting["plan"]["failure"].get<std::string>().find("wait for a device") != std::string::npos);
    c.start("a", {"--memory-limit", limit});  // its weights are in its cache
    const int code = wait_for(client, std::chrono::seconds(60));
    CAPTURE(slurp(out + ".err"));
    CHECK(code == 0);
    CHECK(slurp(out) == reference.out);
    CHECK(status(c)["plan"]["ready"] == true);
  }

  TEST_CASE("a device slower than its profile: status names it when decoding falls behind the plan") {
    TempDir dir;
    hearth::runtime::MakeModelOptions o;
    o.type = hearth::runtime::TensorType::Q8_0;
    // Big enough that the stage of a dominates a token (about 3 ms of its 7 layers).
    o.shape = {.n_vocab = 512, .n_embd = 1024, .n_layer = 8, .n_head = 8, .n_head_kv = 4, .n_ff = 2816, .n_ctx = 256};
    const std::string model = hearth::test::make_model(dir, "m.gguf", o);
    Cluster c(dir);
    c.set_profile_speedup("a", 1000);  // measured on a quiet day, busy now
    c.set_profile_speedup("head", 3);  // about what this machine does, so that the plan is right for it
    c.start("head");
    const pid_t a = c.start("a").pid;
    const auto l = c.cli({"launch", "--model", model, "--ctx", "128", "--split", "head:1,a:7"});
    REQUIRE_MESSAGE(l.exit_code == 0, l.err);
    // And busy it is, whatever else the machine does: stopped 30 ms of every 35, a computes at a
    // seventh of its speed. (Its own speed is not enough: when the head probed its links under
    // load (CI) it measured loopback's latency in milliseconds, the plan expects ~10.7 ms a token
    // in hops, and a's 4-5 ms of compute never made decoding fall behind that by half.)
    const DutyCycle busy(a);
    // Counters come with heartbeats (400 ms), so the pace is judged after a later generation; 100
    // tokens a round (was 48: with faster attention a round could end between two heartbeats,
    // and under load 10 rounds sometimes judged nothing).
    std::string events;
    for (int round = 0; round < 10 && events.find("a computes its layers in") == std::string::npos; ++round) {
      REQUIRE(c.cli({"generate", "--prompt", "hello", "-n", "100", "--temp", "0"}).exit_code == 0);
      std::this_thread::sleep_for(std::chrono::milliseconds(450));
      events = status(c)["plan"]["events"].dump();
    }
    CHECK(events.find("ms planned: ") != std::string::npos);
    CHECK(events.find("a computes its layers in") != std::string::npos);
    MESSAGE(events);
  }

  // Issue 16's plan that follows the devices: a slows down in the middle of a generation; the
  // head measures it, plans again with the measured speed, stages the new plan beside the serving
  // one, switches between two tokens, and the conversation goes on, replayed, with the same text.
  TEST_CASE("a device slowed mid-generation: the head moves layers off it while serving, and the text is unchanged") {
    TempDir dir;
    const std::string model = make_hundred_mb_model(dir);
    const std::vector<std::string> gen{"--prompt", "hello", "-n", "400", "--temp", "0.9", "--seed", "5"};
    std::vector<std::string> run{"run", "--model", model, "--ctx", "512"};
    run.insert(run.end(), gen.begin(), gen.end());
    const auto reference = hearth::test::run_cli(run);
    REQUIRE(reference.exit_code == 0);

    Cluster c(dir);
    // a claims twice the head's speed, so the planner gives it every layer it can; the head holds
    // about half of the model.
    c.set_profile_speedup("a", 2);
    c.start("head", {"--memory-limit", std::to_string(std::filesystem::file_size(model) / 2 + (60ull << 20))});
    const pid_t a = c.start("a").pid;
    const auto l = c.cli({"launch", "--model", model, "--ctx", "512", "--streams", "1", "--json"});
    REQUIRE_MESSAGE(l.exit_code == 0, l.err);
    const auto layers_of_a = [](const nlohmann::json& plan) {
      int n = 0;
      for (const auto& st : plan["stages"])
        if (st["device"] == "a") n += st["last_layer"].get<int>() - st["first_layer"].get<int>();
      return n;
    };
    const int before = layers_of_a(nlohmann::json::parse(l.out));
    const std::string timings = dir.file("timings.txt");
    std::vector<std::string> args{"generate", "--timings", timings};
    args.insert(args.end(), gen.begin(), gen.end());
    const std::string out = dir.file("generated.txt");
    const pid_t client = generate_in_background(c, args, out);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    // From now on a is stopped 30 ms of every 35: it computes at about a seventh of its speed.
    const DutyCycle busy(a);
    const int code = wait_for(client, std::chrono::seconds(300));  // about 77 s under ASan alone
    CAPTURE(slurp(out + ".err"));
    CHECK(code == 0);                    // no error: the client saw a pause
    CHECK(slurp(out) == reference.out);  // and the text of an undisturbed run
    const auto s = status(c);
    const std::string events = s["plan"]["events"].dump();
    MESSAGE(events);
    CHECK(events.find("re-balancing: a computes its layers in") != std::string::npos);
    CHECK(events.find("re-balanced; replaying 1 conversation(s)") != std::string::npos);
    CHECK(layers_of_a(s["plan"]) < before);
    // Each token's arrival: 400 of them, in order. The figures, for the note: tok/s over the
    // first 0.5 s, and over the last 100 tokens (after the switch).
    std::vector<double> t;
    std::ifstream f(timings);
    for (double x; f >> x;) t.push_back(x);
    REQUIRE(t.size() == 400);
    CHECK(std::is_sorted(t.begin(), t.end()));
    const auto first = std::count_if(t.begin(), t.end(), [&](double x) { return x < t.front() + 0.5; });
    MESSAGE("tok/s before the slowdown ", static_cast<double>(first) / 0.5, ", over the last 100 tokens ",
            100 / (t.back() - t[299]));
  }

}  // TEST_SUITE
