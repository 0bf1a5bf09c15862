// The `hearth` CLI end to end: mkmodel, inspect, tokenize, run, bench.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "tests/test_util.h"

using hearth::test::run_cli;
using hearth::test::TempDir;

TEST_SUITE("cli") {
  TEST_CASE("run on stories260K prints exactly the reference continuation on stdout") {
    auto model = hearth::test::shared_file("models/stories260K/stories260K.gguf");
    auto ref_path = hearth::test::shared_file("models/stories260K/reference/once_upon_a_time_32.kvf32.json");
    if (!model || !ref_path) return;
    std::ifstream f(*ref_path);
    const auto ref = nlohmann::json::parse(f);
    const auto r = run_cli({"run", "--model", *model, "--prompt", "Once upon a time", "--temp", "0", "-n", "32"});
    CHECK(r.exit_code == 0);
    CHECK(r.out == ref.at("generated_text").get<std::string>() + "\n");
    const auto t = run_cli({"tokenize", "--model", *model, "--text", "Once upon a time"});
    CHECK(t.out == ref.at("prompt_ids").dump() + "\n");
    // Threads change nothing.
    CHECK(run_cli({"run", "--model", *model, "--prompt", "Once upon a time", "--temp", "0", "-n", "32", "-t", "1"}).out == r.out);
  }

  TEST_CASE("mkmodel, inspect, seeded run, bench --json") {
    TempDir dir;
    const std::string model = dir.file("m.gguf");
    auto r = run_cli({"mkmodel", "--out", model, "--type", "q4_0", "--layers", "3", "--seed", "5"});
    REQUIRE(r.exit_code == 0);
    r = run_cli({"inspect", model});
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("llama.block_count") != std::string::npos);
    CHECK(r.out.find("blk.2.ffn_down.weight") != std::string::npos);
    CHECK(r.out.find("q4_0") != std::string::npos);

    const std::vector<std::string> args{"run", "--model", model, "--prompt", "hello", "-n", "12", "--temp", "0.9", "--seed", "3"};
    const auto a = run_cli(args), b = run_cli(args);
    CHECK(a.exit_code == 0);
    CHECK(a.out == b.out);
    CHECK(!a.out.empty());

    r = run_cli({"bench", "--model", model, "--prompt-tokens", "16", "--gen-tokens", "8", "--repeats", "1", "--json"});
    REQUIRE(r.exit_code == 0);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j.at("prefill_tok_s").get<double>() > 0);
    CHECK(j.at("decode_tok_s").get<double>() > 0);
    CHECK(j.at("decode_read_gb_s").get<double>() > 0);
  }

  TEST_CASE("a dimension too large is named by its flag: mkmodel --dim, run --ctx") {
    TempDir dir;
    auto r = run_cli({"mkmodel", "--out", dir.file("big.gguf"), "--dim", "20000000", "--heads", "1", "--kv-heads", "1"});
    CHECK(r.exit_code != 0);
    CHECK(r.err.find("--dim 20000000 is out of range") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(dir.file("big.gguf")));
    const std::string model = dir.file("m.gguf");
    REQUIRE(run_cli({"mkmodel", "--out", model}).exit_code == 0);
    r = run_cli({"run", "--model", model, "--prompt", "hi", "-n", "2", "--ctx", "100000000"});
    CHECK(r.exit_code != 0);
    CAPTURE(r.err);
    CHECK(r.err.find("--ctx") != std::string::npos);
    CHECK(r.err.find("bad_alloc") == std::string::npos);
    // Within range, but its cache (260 GB here) is larger than memory: refused before it is allocated.
    const std::string deep = dir.file("deep.gguf");
    REQUIRE(run_cli({"mkmodel", "--out", deep, "--layers", "32"}).exit_code == 0);
    r = run_cli({"run", "--model", deep, "--prompt", "hi", "-n", "2", "--ctx", "16000000"});
    CHECK(r.exit_code != 0);
    CAPTURE(r.err);
    CHECK(r.err.find("use a smaller --ctx") != std::string::npos);
  }

  TEST_CASE("hearth --data-dir X profile keeps its profile in X, like every command") {
    hearth::test::TempDir dir;
    const auto r = hearth::test::run_cli({"--data-dir", dir.path().string(), "profile", "--quick", "--json", "-t", "1"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    CHECK(std::filesystem::exists(dir.path() / "profile.json"));
  }

  TEST_CASE("errors are clear and exit non-zero") {
    TempDir dir;
    const std::string junk = dir.file("junk.gguf");
    hearth::test::write_bytes(junk, {'n', 'o', 'p', 'e', 0, 0, 0, 0});
    auto r = run_cli({"run", "--model", junk, "--prompt", "x"});
    CHECK(r.exit_code != 0);
    CHECK(r.err.find("not a GGUF file") != std::string::npos);
    CHECK(r.out.empty());
    r = run_cli({"mkmodel", "--out", dir.file("x.gguf"), "--type", "q9"});
    CHECK(r.exit_code != 0);
    CHECK(r.err.find("unknown or unsupported type 'q9'") != std::string::npos);
    r = run_cli({"run", "--prompt", "x"});
    CHECK(r.exit_code != 0);
  }

}  // TEST_SUITE
