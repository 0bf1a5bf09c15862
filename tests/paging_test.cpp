// Layers paged from storage (runtime/model/layer_pager.h): the same numbers as resident weights,
// plans that fit their budget, reads out of the usual order, a file cut short, `hearth run
// --memory-limit`.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "runtime/model/generator.h"
#include "runtime/model/layer_pager.h"
#include "runtime/model/stage.h"
#include "tests/test_util.h"

using namespace hearth::runtime;
using hearth::test::TempDir;

namespace {

MakeModelOptions model_of(const std::string& arch, TensorType type, const std::string& preset = "tiny") {
  MakeModelOptions o;
  o.arch = arch;
  o.type = type;
  o.shape = *random_model_preset(preset);
  o.shape.n_layer = 6;
  o.weight_std = 0.05f;  // enough signal that every layer matters to the logits
  return o;
}

// Logits of a prompt (every position), then of `steps` greedy tokens, through `stages` in order.
std::vector<float> logits_of(std::span<Stage* const> stages, int n_vocab, int steps) {
  std::mt19937 rng(7);
  std::vector<int32_t> prompt(9);
  for (auto& t : prompt) t = static_cast<int32_t>(rng() % static_cast<uint32_t>(n_vocab));
  const SeqChunk chunk{1, 0, static_cast<int>(prompt.size())};
  auto out = forward_chain(stages, {.chunks = {&chunk, 1}, .tokens = prompt, .all_logits = true});
  std::vector<float> all(out.begin(), out.end());
  int pos = static_cast<int>(prompt.size());
  for (int s = 0; s < steps; ++s) {
    const float* last = all.data() + all.size() - static_cast<size_t>(n_vocab);
    const int32_t next = static_cast<int32_t>(std::max_element(last, last + n_vocab) - last);
    const SeqChunk one{1, pos++, 1};
    out = forward_chain(stages, {.chunks = {&one, 1}, .tokens = {&next, 1}});
    all.insert(all.end(), out.begin(), out.end());
  }
  return all;
}

// Bytes of [offset, offset + size) of the file that are in the page cache (mincore).
uint64_t cached_bytes(const std::string& path, uint64_t offset, uint64_t size) {
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t begin = offset / page * page, length = offset + size - begin;
  const int fd = ::open(path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  void* p = ::mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(begin));
  ::close(fd);
  REQUIRE(p != MAP_FAILED);
  std::vector<unsigned char> in((length + page - 1) / page);
  REQUIRE(::mincore(p, length, in.data()) == 0);
  ::munmap(p, length);
  uint64_t n = 0;
  for (unsigned char c : in) n += (c & 1) ? page : 0;
  return n;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_SUITE("paging") {
  TEST_CASE("a stage with half its layers paged computes exactly what a resident one does") {
    TempDir dir;
    ThreadPool pool(2);
    struct Case {
      const char* arch;
      TensorType type;
      const char* preset;
    };
    for (const Case& c : {Case{"llama", TensorType::Q4_0, "tiny"}, Case{"llama", TensorType::F32, "tiny"},
                          Case{"qwen3moe", TensorType::Q8_0, "tiny-moe"}, Case{"qwen35", TensorType::F32, "tiny"},
                          Case{"gemma3", TensorType::Q8_0, "tiny"}, Case{"gemma4", TensorType::Q8_0, "tiny-moe"}}) {
      CAPTURE(c.arch);
      const std::string path = hearth::test::make_model(dir, std::string(c.arch) + ".gguf", model_of(c.arch, c.type, c.preset));
      const auto m = hearth::test::open_whole_model(path);
      const StageOptions resident_options{.n_ctx = 64, .max_batch = 16};
      Stage resident(m.weights, resident_options, pool);
      Stage* one[] = {&resident};
      const std::vector<float> want = logits_of(one, m.config.n_vocab, 6);

      for (PagedPart part : {PagedPart::Ffn, PagedPart::FfnAndAttention}) {
        StageOptions o = resident_options;
        o.paging = {{1, 3, 5}, part};
        Stage paged(m.weights, o, pool);
        Stage* p[] = {&paged};
        CHECK(same_bits(logits_of(p, m.config.n_vocab, 6), want));
        const PagerStats s = paged.pager()->stats();
        CHECK(s.layers_read >= 3 * 7);  // every paged layer, every pass
        CHECK(s.bytes_read >= 7 * paging_cost(*m.weights, o.paging).paged_bytes);
      }

      // Two stages, the second paging all but its first layer: the pipeline's numbers too.
      const auto front = std::make_shared<StageWeights>(m.file, m.config, StageSpec{0, 3, true, false});
      const auto back = std::make_shared<StageWeights>(m.file, m.config, StageSpec{3, 6, false, true});
      Stage s0(front, resident_options, pool);
      StageOptions o = resident_options;
      o.paging = {{4, 5}, PagedPart::FfnAndAttention};
      Stage s1(back, o, pool);
      Stage* two[] = {&s0, &s1};
      CHECK(same_bits(logits_of(two, m.config.n_vocab, 6), want));
    }
  }

  TEST_CASE("the chosen plan fits its budget and pages no more than it must") {
    TempDir dir;
    const auto m = hearth::test::open_whole_model(hearth::test::make_model(dir, "m.gguf", model_of("llama", TensorType::Q8_0)));
    const uint64_t all = m.weights->mapped_bytes();
    CHECK(choose_paging(*m.weights, all).empty());

    const PagingPlan some = choose_paging(*m.weights, all * 9 / 10);
    REQUIRE_FALSE(some.empty());
    CHECK(some.part == PagedPart::Ffn);
    const PagingCost cost = paging_cost(*m.weights, some);
    CHECK(cost.resident_bytes <= all * 9 / 10);
    CHECK(cost.resident_bytes + cost.paged_bytes - cost.buffer_bytes == all);
    // One layer fewer would not have fitted (the layers are all of one size).
    PagingPlan fewer = some;
    fewer.layers.pop_back();
    CHECK(paging_cost(*m.weights, fewer).resident_bytes > all * 9 / 10);
    // The middle of each stretch of the stage, so reads interleave with resident layers.
    const PagingPlan half = choose_paging(*m.weights, paging_cost(*m.weights, {{1, 3, 5}, PagedPart::Ffn}).resident_bytes);
    CHECK(half.layers == std::vector<int>{1, 3, 5});

    const PagingPlan every{{0, 1, 2, 3, 4, 5}, PagedPart::Ffn};
    const uint64_t below_ffn = paging_cost(*m.weights, every).resident_bytes - 1;
    const PagingPlan most = choose_paging(*m.weights, below_ffn);
    CHECK(most.part == PagedPart::FfnAndAttention);
    CHECK(paging_cost(*m.weights, most).resident_bytes <= below_ffn);

    CHECK_THROWS_WITH_AS(choose_paging(*m.weights, 1000), doctest::Contains("need at least"), std::invalid_argument);
    CHECK_THROWS_AS(LayerPager(*m.weights, {{3, 2}, PagedPart::Ffn}), std::invalid_argument);  // not ascending
    CHECK_THROWS_AS(LayerPager(*m.weights, {{6}, PagedPart::Ffn}), std::invalid_argument);     // outside the stage
  }

  TEST_CASE("layers acquired out of the usual order hold the file's bytes") {
    TempDir dir;
    const auto m = hearth::test::open_whole_model(hearth::test::make_model(dir, "m.gguf", model_of("llama", TensorType::Q4_0)));
    LayerPager pager(*m.weights, {{0, 2, 4, 5}, PagedPart::FfnAndAttention});
    CHECK_FALSE(pager.pages(1));
    for (int l : {4, 0, 0, 5, 2, 4, 2, 5, 0}) {
      CAPTURE(l);
      const LayerWeights& w = pager.acquire(l);
      const LayerWeights& mapped = m.weights->layer(l);
      for (auto field : {&LayerWeights::wq, &LayerWeights::wk, &LayerWeights::wv, &LayerWeights::wo, &LayerWeights::w_gate,
                         &LayerWeights::w_up, &LayerWeights::w_down}) {
        CHECK((w.*field).data != (mapped.*field).data);
        CHECK(std::memcmp((w.*field).data, (mapped.*field).data, (mapped.*field).bytes()) == 0);
      }
      CHECK_THROWS_AS(pager.acquire(l == 0 ? 2 : 0), std::logic_error);  // one layer at a time
      pager.release(l);
    }
    CHECK_THROWS_AS(pager.acquire(1), std::invalid_argument);
  }

  TEST_CASE("paged matrices stay out of the page cache, which a memory cgroup would charge") {
    TempDir dir;
    struct statfs fs {};
    REQUIRE(::statfs(dir.path().c_str(), &fs) == 0);
    if (fs.f_type == 0x01021994) {  // TMPFS_MAGIC: its pages are the file, never dropped
      MESSAGE("skipped: the temporary directory is on tmpfs, whose pages cannot leave memory");
      return;
    }
    const std::string path = hearth::test::make_model(dir, "m.gguf", model_of("llama", TensorType::Q8_0));
    {  // just written: every page is cached, and dirty until written back (which nothing can drop)
      const int fd = ::open(path.c_str(), O_RDONLY);
      REQUIRE(fd >= 0);
      REQUIRE(::fsync(fd) == 0);
      ::close(fd);
    }
    const auto m = hearth::test::open_whole_model(path);
    ThreadPool pool(2);
    StageOptions o{.n_ctx = 64, .max_batch = 16};
    o.paging = {{1, 3, 5}, PagedPart::Ffn};
    Stage paged(m.weights, o, pool);
    Stage* p[] = {&paged};
    logits_of(p, m.config.n_vocab, 4);
    uint64_t paged_bytes = 0, cached = 0;
    for (int l : o.paging.layers)
      for (const WeightMatrix* w : {&m.weights->layer(l).w_gate, &m.weights->layer(l).w_up, &m.weights->layer(l).w_down}) {
        paged_bytes += w->bytes();
        cached += cached_bytes(path, m.weights->file_offset(w->data), w->bytes());
      }
    CAPTURE(paged_bytes);
    CHECK(cached <= 9 * 2 * 4096);  // a tensor's edge pages may stay, shared with a resident neighbour
    // The resident matrices are there.
    const WeightMatrix& resident = m.weights->layer(2).w_down;
    CHECK(cached_bytes(path, m.weights->file_offset(resident.data), resident.bytes()) >= resident.bytes());
  }

  TEST_CASE("a model file cut short under a paging stage is a clear error, not a crash") {
    TempDir dir;
    const std::string path = hearth::test::make_model(dir, "m.gguf", model_of("llama", TensorType::Q8_0));
    const auto m = hearth::test::open_whole_model(path);
    const WeightMatrix& down = m.weights->layer(5).w_down;
    // Only the pager reads beyond the cut: no mapped byte there is touched.
    std::filesystem::resize_file(path, m.weights->file_offset(down.data) + 100);
    LayerPager pager(*m.weights, {{5}, PagedPart::Ffn});
    CHECK_THROWS_WITH_AS(pager.acquire(5), doctest::Contains("truncated"), std::runtime_error);
    CHECK_THROWS_WITH_AS(pager.acquire(5), doctest::Contains("truncated"), std::runtime_error);  // and stays so
  }

  TEST_CASE("hearth run --memory-limit pages what does not fit and says the same") {
    TempDir dir;
    MakeModelOptions o = model_of("llama", TensorType::Q8_0);
    o.shape.n_embd = 512;
    o.shape.n_ff = 2048;
    o.shape.n_layer = 16;  // 72 MB of weights; the KV cache, buffers and process take about 45 MB of the limit
    const std::string path = hearth::test::make_model(dir, "m.gguf", o);
    const std::vector<std::string> args{"run", "--model", path, "--prompt", "hello there", "-n", "12", "--temp", "0", "--ctx", "64"};
    const auto whole = hearth::test::run_cli(args);
    REQUIRE(whole.exit_code == 0);
    auto limited = args;
    limited.insert(limited.end(), {"--memory-limit", "90MB"});
    const auto paged = hearth::test::run_cli(limited);
    CHECK(paged.exit_code == 0);
    CHECK(paged.err.find("paging") != std::string::npos);
    CHECK(paged.err.find("MB read from storage") != std::string::npos);
    CHECK(paged.out == whole.out);

    limited.back() = "20MB";
    const auto refused = hearth::test::run_cli(limited);
    CHECK(refused.exit_code != 0);
    CHECK(refused.err.find("--memory-limit 20 MB") != std::string::npos);
    CHECK(refused.err.find("leaves nothing for the weights") != std::string::npos);
  }
}
