// Byte-level BPE: the part of Tokenizer that serves "gpt2" vocabularies (see tokenizer.h).
#include <queue>
#include <string>
#include <vector>

#include "runtime/text/tokenizer.h"

namespace hearth::runtime {

namespace {

struct BpeSymbol {
  int prev;
  int next;
  int32_t id;  // -1 once merged into its left neighbour (or if its byte has no token)
};

struct BpeCandidate {
  int32_t rank;
  int left;
  int right;
  int32_t left_id;
  int32_t right_id;
  // priority_queue puts the largest on top: lowest rank first, then the leftmost pair (the order
  // of llama.cpp and of Hugging Face tokenizers).
  bool operator<(const BpeCandidate& o) const { return rank > o.rank || (rank == o.rank && left > o.left); }
};

// Decodes one UTF-8 character at s[i]; returns its code point and advances i. Malformed input
// gives U+FFFD for one byte (token texts come from the file and need not be valid).
uint32_t next_code_point(const std::string& s, size_t& i) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (n == 0 || i + n > s.size()) {
    ++i;
    return 0xFFFD;
  }
  uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t k = 1; k < n; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) {
      ++i;
      return 0xFFFD;
    }
    cp = (cp << 6) | (cc & 0x3F);
  }
  i += n;
  return cp;
}

}  // namespace

void Tokenizer::encode_bpe_fragment(std::string_view text, std::vector<int32_t>& out) const {
  for (const std::string_view word : pre_->split(text)) encode_bpe_word(word, out);
}

void Tokenizer::encode_bpe_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  // Llama 3's tokenizer takes a pre-token that is a whole token as it is, even where the merges
  // would have split it differently (Hugging Face's ignore_merges).
  if (pre_->family() == PreTokenizerFamily::LLAMA3) {
    std::string spelled;
    spelled.reserve(word.size() * 2);
    for (char c : word) spelled += byte_level_char(static_cast<uint8_t>(c));
    if (const int32_t id = vocab_.find(spelled); id >= 0) {
      out.push_back(id);
      return;
    }
  }

  // One symbol per byte (each byte is one character of the alphabet, and the alphabet has a token
  // for every byte), then merge the lowest-ranked adjacent pair until no pair has a merge.
  std::vector<BpeSymbol> sym(word.size());
  for (size_t i = 0; i < word.size(); ++i) {
    sym[i] = {static_cast<int>(i) - 1, static_cast<int>(i) + 1, vocab_.byte_token[static_cast<unsigned char>(word[i])]};
  }
  sym.back().next = -1;

  std::priority_queue<BpeCandidate> queue;
  const auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const int32_t l = sym[static_cast<size_t>(left)].id, r = sym[static_cast<size_t>(right)].id;
    if (l < 0 || r < 0) return;
    if (const BpeMerge* m = vocab_.find_merge(l, r)) queue.push({m->rank, left, right, l, r});
  };
  for (size_t i = 1; i < sym.size(); ++i) try_add(static_cast<int>(i) - 1, static_cast<int>(i));

  while (!queue.empty()) {
    const BpeCandidate c = queue.top();
    queue.pop();
    BpeSymbol& l = sym[static_cast<size_t>(c.left)];
    BpeSymbol& r = sym[static_cast<size_t>(c.right)];
    // Stale: one side has merged with something else since this pair was queued.
    if (l.next != c.right || l.id != c.left_id || r.id != c.right_id) continue;
    l.id = vocab_.find_merge(c.left_id, c.right_id)->result;
    r.id = -1;
    l.next = r.next;
    if (r.next >= 0) sym[static_cast<size_t>(r.next)].prev = c.left;
    try_add(l.prev, c.left);
    try_add(c.left, l.next);
  }

  for (int i = 0; i >= 0; i = sym[static_cast<size_t>(i)].next) {
    const int32_t id = sym[static_cast<size_t>(i)].id;
    // Only a byte the vocabulary has no token for is left without an id: <unk> if the vocabulary
    // has one, else it is dropped (as llama.cpp does).
    if (id >= 0) out.push_back(id);
    else if (vocab_.unk >= 0) out.push_back(vocab_.unk);
  }
}

std::string Tokenizer::bpe_piece(int32_t id) const {
  // Spell the token's alphabet characters back as the bytes they stand for; a character outside
  // the alphabet (possible in added tokens) is kept as it is.
  const std::string& t = vocab_.tokens[static_cast<size_t>(id)];
  std::string out;
  out.reserve(t.size());
  for (size_t i = 0; i < t.size();) {
    const size_t start = i;
    const int b = byte_level_byte(next_code_point(t, i));
    if (b >= 0) out += static_cast<char>(b);
    else out.append(t, start, i - start);
  }
  return out;
}

}  // namespace hearth::runtime
