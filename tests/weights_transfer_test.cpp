// Streaming a stage's weights: the stage file served by the head is a valid GGUF of just those
// tensors, and the receiver verifies chunks and resumes an interrupted transfer.
#include <doctest/doctest.h>
#include <xxhash.h>

#include <cstring>
#include <filesystem>

#include "cluster/stage_file.h"
#include "cluster/weight_receiver.h"
#include "runtime/model/model_config.h"
#include "tests/test_util.h"

using namespace hearth;
using hearth::test::TempDir;

namespace {

// Receives `file` into `path` through a receiver, stopping after `max_chunks` chunks.
void transfer(const cluster::StageFile& file, cluster::WeightReceiver& rx, size_t max_chunks) {
  size_t n = 0;
  while (!rx.complete() && n < max_chunks) {
    for (const auto& [offset, length] : rx.next_requests(4)) {
      std::vector<uint8_t> buf(length);
      file.read(offset, buf);
      rx.accept(offset, buf, XXH3_64bits(buf.data(), buf.size()));
      if (++n == max_chunks) return;
    }
  }
}

}  // namespace

TEST_SUITE("weights") {
  TEST_CASE("a stage file holds exactly the stage's tensors, byte for byte") {
    TempDir dir;
    runtime::MakeModelOptions o;
    o.shape.n_layer = 6;
    const std::string model = test::make_model(dir, "m.gguf", o);
    const runtime::GgufFile src = runtime::GgufFile::open(model);
    const runtime::ModelConfig cfg = runtime::read_model_config(src);
    const runtime::StageSpec spec{2, 5, false, true};
    const cluster::StageFile file(src, cfg, spec);
    std::vector<uint8_t> whole(file.size());
    file.read(0, whole);
    test::write_bytes(dir.file("stage.gguf"), whole);
    const runtime::GgufFile stage = runtime::GgufFile::open(dir.file("stage.gguf"));
    const auto src_bytes = test::read_bytes(model);
    CHECK(stage.metadata().get_uint("llama.block_count") == 6);
    CHECK(stage.find_tensor("blk.1.attn_q.weight") == nullptr);
    CHECK(stage.find_tensor("blk.5.attn_q.weight") == nullptr);
    CHECK(stage.find_tensor("token_embd.weight") == nullptr);
    for (const auto& name : runtime::stage_tensor_names(src, cfg, spec)) {
      const auto& a = src.require_tensor(name);
      const auto& b = stage.require_tensor(name);
      REQUIRE(a.n_bytes == b.n_bytes);
      CHECK(std::memcmp(&src_bytes[a.offset], &whole[b.offset], a.n_bytes) == 0);
    }
    // The stage file is enough to run the stage.
    CHECK_NOTHROW(runtime::StageWeights(stage, runtime::read_model_config(stage), spec));
    std::vector<uint8_t> past_end(4);
    CHECK_THROWS_AS(file.read(file.size() - 2, past_end), std::out_of_range);
  }

  TEST_CASE("the receiver verifies checksums and resumes an interrupted transfer") {
    TempDir dir;
    runtime::MakeModelOptions o;
    o.shape = {.n_vocab = 512, .n_embd = 512, .n_layer = 4, .n_head = 8, .n_head_kv = 8, .n_ff = 1536, .n_ctx = 64};
    const std::string model = test::make_model(dir, "m.gguf", o);
    const runtime::GgufFile src = runtime::GgufFile::open(model);
    const runtime::ModelConfig cfg = runtime::read_model_config(src);
    const cluster::StageFile file(src, cfg, {0, 4, false, true});
    REQUIRE(file.size() > 3 * cluster::WeightReceiver::kChunkBytes);
    const std::string path = dir.file("cache/stage.gguf");
    {
      cluster::WeightReceiver rx(path, file.size());
      // A chunk with a bad checksum is refused and asked for again.
      const auto first = rx.next_requests(1).at(0);
      std::vector<uint8_t> buf(first.second);
      file.read(first.first, buf);
      CHECK_THROWS_AS(rx.accept(first.first, buf, 12345), std::invalid_argument);
      CHECK_THROWS_AS(rx.accept(first.first + 1, buf, XXH3_64bits(buf.data(), buf.size())), std::invalid_argument);
      transfer(file, rx, 2);  // then the daemon "dies"
      CHECK(!rx.complete());
      CHECK(rx.bytes_done() == 2ull * cluster::WeightReceiver::kChunkBytes);
    }
    cluster::WeightReceiver again(path, file.size());
    CHECK(again.bytes_done() == 2ull * cluster::WeightReceiver::kChunkBytes);  // resumed, not restarted
    size_t requested = 0;
    transfer(file, again, 1000);
    for (const auto& r : again.next_requests(4)) requested += r.second;
    CHECK(requested == 0);
    REQUIRE(again.complete());
    again.finish();
    std::vector<uint8_t> expect(file.size());
    file.read(0, expect);
    CHECK(test::read_bytes(path) == expect);
    CHECK(!std::filesystem::exists(path + ".partial"));
    // A second transfer of the same stage finds it cached.
    cluster::WeightReceiver cached(path, file.size());
    CHECK(cached.complete());
    CHECK(cached.was_cached());
  }

}  // TEST_SUITE
