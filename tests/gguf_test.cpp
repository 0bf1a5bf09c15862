// GGUF reader and writer: round trips, and malformed files rejected with a clear error.
#include <doctest/doctest.h>

#include <cstring>

#include "runtime/format/gguf.h"
#include "runtime/format/gguf_writer.h"
#include "runtime/model/model_config.h"
#include "runtime/model/weights.h"
#include "tests/test_util.h"

using namespace hearth::runtime;
using hearth::test::TempDir;

namespace {

// A small file exercising every metadata type, nested arrays and two tensors.
std::string write_sample(const TempDir& dir, uint32_t alignment = 32) {
  GgufWriter w(alignment);
  GgufMetadata& md = w.metadata();
  md.set("u8", {GgufType::UINT8, uint64_t{200}});
  md.set("i8", {GgufType::INT8, int64_t{-100}});
  md.set("u16", {GgufType::UINT16, uint64_t{60000}});
  md.set("i16", {GgufType::INT16, int64_t{-30000}});
  md.set("u32", GgufValue::u32(4000000000u));
  md.set("i32", GgufValue::i32(-2000000000));
  md.set("u64", GgufValue::u64(1ull << 60));
  md.set("i64", {GgufType::INT64, int64_t{-(1ll << 60)}});
  md.set("f32", GgufValue::f32(1.5f));
  md.set("f64", {GgufType::FLOAT64, 2.25});
  md.set("bool", GgufValue::boolean(true));
  md.set("str", GgufValue::str("héllo"));
  md.set("arr.str", GgufValue::array(GgufType::STRING, {GgufValue::str("a"), GgufValue::str("")}));
  md.set("arr.nested",
         GgufValue::array(GgufType::ARRAY, {GgufValue::array(GgufType::INT32, {GgufValue::i32(1), GgufValue::i32(-2)}),
                                            GgufValue::array(GgufType::INT32, {})}));
  w.add_tensor("a", TensorType::F32, {4, 3});
  w.add_tensor("b", TensorType::Q8_0, {64, 2});
  const std::string path = dir.file("sample.gguf");
  w.write(path, [](size_t i, std::span<uint8_t> out) {
    for (size_t j = 0; j < out.size(); ++j) out[j] = static_cast<uint8_t>(i * 31 + j);
  });
  return path;
}

// Parses bytes and returns the error message, or "" if they parsed.
std::string parse_error(const std::vector<uint8_t>& bytes) {
  try {
    GgufFile::parse(bytes.data(), bytes.size(), "mem");
    return "";
  } catch (const GgufError& e) {
    return e.what();
  }
}

template <typename T>
void poke(std::vector<uint8_t>& b, size_t at, T v) {
  std::memcpy(b.data() + at, &v, sizeof v);
}

}  // namespace

TEST_SUITE("gguf") {
  TEST_CASE("writer output reads back: every value type, nested arrays, tensors, alignment") {
    TempDir dir;
    for (uint32_t alignment : {32u, 64u}) {
      const GgufFile f = GgufFile::open(write_sample(dir, alignment));
      const GgufMetadata& md = f.metadata();
      CHECK(f.version() == 3);
      CHECK(f.alignment() == alignment);
      CHECK(f.data_offset() % alignment == 0);
      CHECK(md.get_uint("u8") == 200);
      CHECK(std::get<int64_t>(md.find("i8")->value) == -100);
      CHECK(md.get_uint("u16") == 60000);
      CHECK(std::get<int64_t>(md.find("i16")->value) == -30000);
      CHECK(md.get_uint("u32") == 4000000000u);
      CHECK(md.get_uint("u64") == (1ull << 60));
      CHECK(std::get<int64_t>(md.find("i64")->value) == -(1ll << 60));
      CHECK(md.get_float("f32") == 1.5);
      CHECK(md.get_float("f64") == 2.25);
      CHECK(md.get_bool_or("bool", false));
      CHECK(md.get_string("str") == "héllo");
      CHECK(md.get_string_array("arr.str") == std::vector<std::string>{"a", ""});
      const auto& nested = std::get<GgufArray>(md.find("arr.nested")->value);
      REQUIRE(nested.items.size() == 2);
      CHECK(std::get<GgufArray>(nested.items[0].value).items.size() == 2);
      CHECK(std::get<int64_t>(std::get<GgufArray>(nested.items[0].value).items[1].value) == -2);
      REQUIRE(f.tensors().size() == 2);
      const auto& b = f.require_tensor("b");
      CHECK(b.type == TensorType::Q8_0);
      CHECK(b.n_bytes == 2 * 2 * 34);
      CHECK(b.offset % alignment == 0);
      const auto bytes = hearth::test::read_bytes(f.path());
      CHECK(bytes[b.offset + 5] == static_cast<uint8_t>(31 + 5));
      CHECK(b.offset + b.n_bytes == bytes.size());
    }
  }

  TEST_CASE("typed getters name the key when it is missing or of the wrong type") {
    TempDir dir;
    const GgufFile f = GgufFile::open(write_sample(dir));
    CHECK_THROWS_WITH_AS(f.metadata().get_uint("nope"), doctest::Contains("'nope' is missing"), GgufError);
    CHECK_THROWS_WITH_AS(f.metadata().get_string("u32"), doctest::Contains("'u32'"), GgufError);
    CHECK_THROWS_WITH_AS(f.require_tensor("c"), doctest::Contains("'c' is missing"), GgufError);
  }

  TEST_CASE("truncation at every byte gives a clear error, never a crash") {
    TempDir dir;
    const auto bytes = hearth::test::read_bytes(write_sample(dir));
    for (size_t n = 0; n < bytes.size(); ++n) {
      CAPTURE(n);
      const std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
      const std::string err = parse_error(cut);
      REQUIRE(!err.empty());
      CHECK((err.find("truncated") != std::string::npos || err.find("not a GGUF") != std::string::npos ||
             err.find("outside the file") != std::string::npos));
    }
    CHECK(parse_error(bytes).empty());
  }

  TEST_CASE("corruption at every header byte is rejected or parsed, never a crash") {
    TempDir dir;
    const auto bytes = hearth::test::read_bytes(write_sample(dir));
    const GgufFile f = GgufFile::parse(bytes.data(), bytes.size(), "mem");
    // Under the sanitizers an out-of-bounds read here fails the test run.
    for (size_t at = 0; at < f.data_offset(); ++at) {
      for (uint8_t v : {uint8_t{0x00}, uint8_t{0xff}, uint8_t{0x7f}, static_cast<uint8_t>(bytes[at] + 1)}) {
        auto copy = bytes;
        copy[at] = v;
        (void)parse_error(copy);
      }
    }
  }

  TEST_CASE("specific malformations name what is wrong") {
    TempDir dir;
    const auto good = hearth::test::read_bytes(write_sample(dir));
    auto b = good;
    poke<uint32_t>(b, 0, 0x12345678);
    CHECK(parse_error(b).find("wrong magic") != std::string::npos);
    b = good;
    poke<uint32_t>(b, 4, 1);
    CHECK(parse_error(b).find("unsupported GGUF version 1") != std::string::npos);
    b = good;
    poke<uint32_t>(b, 4, 4);
    CHECK(parse_error(b).find("version 4") != std::string::npos);
    b = good;
    poke<uint64_t>(b, 8, 1ull << 40);
    CHECK(parse_error(b).find("absurd tensor count") != std::string::npos);
    b = good;
    poke<uint64_t>(b, 16, 1ull << 40);
    CHECK(parse_error(b).find("absurd metadata count") != std::string::npos);
    b = good;
    poke<uint64_t>(b, 24, 1ull << 62);  // length of the first key
    CHECK(parse_error(b).find("metadata key length") != std::string::npos);

    // Version 2 files (same layout with 64-bit counts) are read.
    b = good;
    poke<uint32_t>(b, 4, 2);
    CHECK(parse_error(b).empty());
  }

  TEST_CASE("bad tensor entries: unknown type, misaligned or out-of-file data, bad dims") {
    TempDir dir;
    const std::string src = write_sample(dir);
    const auto good = hearth::test::read_bytes(src);
    const GgufFile f = GgufFile::parse(good.data(), good.size(), "mem");
    // Locate tensor "a"'s directory entry: name (8 + 1 bytes), n_dims, dims, type, offset.
    const std::string needle = std::string("\x01\0\0\0\0\0\0\0a", 9);
    const auto it = std::find_end(good.begin(), good.end(), needle.begin(), needle.end());  // the metadata holds an "a" too
    REQUIRE(it != good.end());
    const size_t entry = static_cast<size_t>(it - good.begin()) + 9;
    const size_t type_at = entry + 4 + 2 * 8, offset_at = type_at + 4;

    auto b = good;
    poke<uint32_t>(b, type_at, 99);
    CHECK(parse_error(b).find("unknown type 99") != std::string::npos);
    b = good;
    poke<uint64_t>(b, offset_at, 3);
    CHECK(parse_error(b).find("not aligned") != std::string::npos);
    b = good;
    poke<uint64_t>(b, offset_at, 1ull << 40);
    CHECK(parse_error(b).find("outside the file") != std::string::npos);
    b = good;
    poke<uint32_t>(b, entry, 5);
    CHECK(parse_error(b).find("5 dimensions") != std::string::npos);
    b = good;
    poke<uint64_t>(b, entry + 4, 0);
    CHECK(parse_error(b).find("absurd dimension") != std::string::npos);
    b = good;
    poke<uint64_t>(b, entry + 4, 1ull << 39);  // 2^39 x 3 floats do not fit the file
    CHECK(parse_error(b).find("outside the file") != std::string::npos);
  }

  TEST_CASE("model-level checks: missing keys and tensors, wrong shapes and types, unknown architecture") {
    TempDir dir;
    const std::string model = hearth::test::make_model(dir, "m.gguf", {});
    const auto open_stage = [](const std::string& path) {
      const GgufFile f = GgufFile::open(path);
      const ModelConfig c = read_model_config(f);
      StageWeights w(f, c, StageSpec::whole(c.n_layer));
    };
    CHECK_NOTHROW(open_stage(model));
    using Tensors = std::vector<GgufTensorInfo>;

    const std::string bad = dir.file("bad.gguf");
    hearth::test::rewrite_gguf(model, bad, [](GgufMetadata& md, Tensors&) {
      GgufMetadata copy;
      for (const auto& [k, v] : md.all())
        if (k != "llama.block_count") copy.set(k, v);
      md = copy;
    });
    CHECK_THROWS_WITH(open_stage(bad), doctest::Contains("llama.block_count"));

    hearth::test::rewrite_gguf(model, bad,
                               [](GgufMetadata& md, Tensors&) { md.set("general.architecture", GgufValue::str("mamba")); });
    CHECK_THROWS_WITH(open_stage(bad), doctest::Contains("'mamba' is not supported (supported: llama"));

    hearth::test::rewrite_gguf(model, bad, [](GgufMetadata&, Tensors& t) {
      std::erase_if(t, [](const GgufTensorInfo& x) { return x.name == "blk.1.ffn_up.weight"; });
    });
    CHECK_THROWS_WITH(open_stage(bad), doctest::Contains("'blk.1.ffn_up.weight' is missing"));

    hearth::test::rewrite_gguf(model, bad, [](GgufMetadata&, Tensors& t) {
      for (auto& x : t)
        if (x.name == "blk.2.attn_q.weight") x.shape = {128, 96};
    });
    CHECK_THROWS_WITH(open_stage(bad), doctest::Contains("'blk.2.attn_q.weight' has shape [128, 96], expected [128, 128]"));

    hearth::test::rewrite_gguf(model, bad, [](GgufMetadata&, Tensors& t) {
      for (auto& x : t)
        if (x.name == "blk.0.attn_k.weight") x.type = TensorType::Q5_1;
    });
    CHECK_THROWS_WITH(open_stage(bad),
                      doctest::Contains("type q5_1, which this runtime cannot compute with (supported: f32, f16, q4_0"));
  }

}  // TEST_SUITE
