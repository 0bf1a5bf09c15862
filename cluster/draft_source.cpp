#include "cluster/draft_source.h"

#include <algorithm>
#include <fstream>
#include <stdexcept>

#include "runtime/model/draft_model.h"
#include "runtime/model/ngram_draft.h"

namespace hearth::cluster {

namespace {

class NgramSource final : public DraftSource {
 public:
  std::vector<int32_t> propose(uint64_t, std::span<const int32_t> history, int k) override {
    return runtime::ngram_draft(history, k);
  }
  std::string name() const override { return "ngram"; }
};

// Proposes the recorded continuation wherever a conversation is in the middle of it: its newest
// tokens are the recording's first j (the longest such j), so it drafts what comes after them.
class OracleSource final : public DraftSource {
 public:
  explicit OracleSource(std::vector<int32_t> script) : script_(std::move(script)) {}
  std::vector<int32_t> propose(uint64_t, std::span<const int32_t> history, int k) override {
    for (size_t j = std::min(history.size(), script_.size() - 1); j > 0; --j) {
      if (!std::equal(script_.begin(), script_.begin() + static_cast<long>(j), history.end() - static_cast<long>(j))) continue;
      const size_t take = std::min(static_cast<size_t>(std::max(0, k)), script_.size() - j);
      const auto from = script_.begin() + static_cast<long>(j);
      return {from, from + static_cast<long>(take)};
    }
    return {};
  }
  std::string name() const override { return "oracle"; }

 private:
  std::vector<int32_t> script_;
};

// A draft model's greedy continuation (runtime/model/draft_model.h).
class ModelSource final : public DraftSource {
 public:
  ModelSource(const std::string& path, const DraftTarget& t) : model_(path, t.vocab, t.n_ctx, t.max_sequences, t.threads) {}
  std::vector<int32_t> propose(uint64_t seq, std::span<const int32_t> history, int k) override {
    return model_.propose(seq, history, k);
  }
  void forget(uint64_t seq) override { model_.forget(seq); }
  std::string name() const override { return "model"; }

 private:
  runtime::DraftModel model_;
};

constexpr const char* kOracle = "oracle:";

std::vector<int32_t> read_ids(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("cannot read the oracle's token ids from " + path);
  std::vector<int32_t> ids;
  long long id = 0;
  while (in >> id) {
    if (id < 0 || id > INT32_MAX) throw std::invalid_argument(path + ": token id " + std::to_string(id) + " is out of range");
    ids.push_back(static_cast<int32_t>(id));
  }
  if (!in.eof()) throw std::invalid_argument(path + " holds something other than token ids");
  if (ids.empty()) throw std::invalid_argument(path + " holds no token ids");
  return ids;
}

}  // namespace

bool is_draft_model(const std::string& choice) { return choice.size() > 5 && choice.ends_with(".gguf"); }

bool is_draft_choice(const std::string& choice) {
  return choice.empty() || choice == "none" || choice == "ngram" || (choice.rfind(kOracle, 0) == 0 && choice.size() > 7) ||
         is_draft_model(choice);
}

std::unique_ptr<DraftSource> make_draft_source(const std::string& choice, const DraftTarget& target) {
  if (!is_draft_choice(choice))
    throw std::invalid_argument("unknown draft source \"" + choice +
                                "\": choose none, ngram, a draft model FILE.gguf, or oracle:FILE (benchmarks)");
  if (choice.empty() || choice == "none") return nullptr;
  if (choice == "ngram") return std::make_unique<NgramSource>();
  if (is_draft_model(choice)) {
    try {
      return std::make_unique<ModelSource>(choice, target);
    } catch (const std::runtime_error& e) {  // not a model file, or one this runtime cannot run
      throw std::invalid_argument(std::string("the draft model: ") + e.what());
    }
  }
  return std::make_unique<OracleSource>(read_ids(choice.substr(7)));
}

}  // namespace hearth::cluster
