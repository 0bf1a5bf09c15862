#include "runtime/text/tokenizer.h"

#include <algorithm>
#include <list>
#include <queue>
#include <stdexcept>
#include <utility>

namespace hearth::runtime {

namespace {

const std::string kSpaceMarker = "\xe2\x96\x81";  // U+2581, SentencePiece's visible space

size_t utf8_len(unsigned char lead) {
  static constexpr size_t lens[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return lens[lead >> 4];
}

std::string escape_spaces(std::string_view text) {
  std::string out;
  out.reserve(text.size() * 2);
  for (char c : text) {
    if (c == ' ') out += kSpaceMarker;
    else out += c;
  }
  return out;
}

struct Symbol {
  int prev;
  int next;
  size_t begin;  // byte offset in the escaped text
  size_t n;      // bytes; 0 once merged into its left neighbour
};

struct Bigram {
  int left;
  int right;
  float score;
  size_t size;
  // Highest score first; ties go to the leftmost pair (llama.cpp's order).
  bool operator<(const Bigram& o) const { return score < o.score || (score == o.score && left > o.left); }
};

// A piece of the input: raw text still to tokenize, or a special token already recognised.
struct Fragment {
  bool is_token;
  int32_t token;
  std::string_view text;
};

}  // namespace

Tokenizer::Tokenizer(Vocab vocab) : vocab_(std::move(vocab)) {
  if (vocab_.is_byte_level()) pre_ = std::make_shared<const PreTokenizer>(vocab_.pre);
  for (int32_t i = 0; i < vocab_.size(); ++i) {
    const TokenType t = vocab_.types[static_cast<size_t>(i)];
    if ((t == TokenType::CONTROL || t == TokenType::USER_DEFINED) && !vocab_.tokens[static_cast<size_t>(i)].empty())
      specials_.push_back(i);
  }
  std::stable_sort(specials_.begin(), specials_.end(), [&](int32_t a, int32_t b) {
    return vocab_.tokens[static_cast<size_t>(a)].size() > vocab_.tokens[static_cast<size_t>(b)].size();
  });
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  // Split out special tokens, longest first, as llama.cpp does. User-defined tokens are always
  // recognised; control tokens only when the caller allows it (untrusted text must not be able
  // to inject "</s>").
  std::list<Fragment> frags;
  if (!text.empty()) frags.push_back({false, -1, text});
  for (int32_t id : specials_) {
    if (vocab_.types[static_cast<size_t>(id)] == TokenType::CONTROL && !options.parse_special) continue;
    const std::string& sp = vocab_.tokens[static_cast<size_t>(id)];
    for (auto it = frags.begin(); it != frags.end(); ++it) {
      if (it->is_token) continue;
      const size_t at = it->text.find(sp);
      if (at == std::string_view::npos) continue;
      const std::string_view before = it->text.substr(0, at), after = it->text.substr(at + sp.size());
      if (!before.empty()) frags.insert(it, {false, -1, before});
      frags.insert(it, {true, id, {}});
      if (after.empty()) {
        it = std::prev(frags.erase(it));
      } else {
        it->text = after;
        --it;  // look again at the remainder
      }
    }
  }

  std::vector<int32_t> out;
  if (options.add_bos && vocab_.add_bos && vocab_.bos >= 0) out.push_back(vocab_.bos);
  bool prev_special = true;  // the text start counts as "after a special token": it gets the space prefix
  for (const Fragment& f : frags) {
    if (f.is_token) {
      out.push_back(f.token);
      prev_special = true;
    } else if (pre_) {
      encode_bpe_fragment(f.text, out);
    } else {
      encode_fragment(f.text, vocab_.add_space_prefix && prev_special, out);
      prev_special = false;
    }
  }
  if (options.add_bos && vocab_.add_eos && vocab_.eos >= 0) out.push_back(vocab_.eos);
  return out;
}

void Tokenizer::encode_fragment(std::string_view raw, bool space_prefix, std::vector<int32_t>& out) const {
  std::string with_prefix;
  if (space_prefix) with_prefix += ' ';
  with_prefix.append(raw);
  const std::string text = escape_spaces(with_prefix);
  std::vector<Symbol> sym;
  for (size_t off = 0; off < text.size();) {
    const size_t n = std::min(utf8_len(static_cast<unsigned char>(text[off])), text.size() - off);
    const int idx = static_cast<int>(sym.size());
    sym.push_back({idx - 1, idx + 1, off, n});
    off += n;
  }
  if (sym.empty()) return;
  sym.back().next = -1;

  std::priority_queue<Bigram> queue;
  const auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = sym[static_cast<size_t>(left)];
    const Symbol& r = sym[static_cast<size_t>(right)];
    const int32_t id = vocab_.find(text.substr(l.begin, l.n + r.n));
    if (id < 0) return;
    queue.push({left, right, vocab_.scores[static_cast<size_t>(id)], l.n + r.n});
  };
  for (size_t i = 1; i < sym.size(); ++i) try_add(static_cast<int>(i) - 1, static_cast<int>(i));

  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& l = sym[static_cast<size_t>(b.left)];
    Symbol& r = sym[static_cast<size_t>(b.right)];
    if (l.n == 0 || r.n == 0 || l.n + r.n != b.size) continue;  // stale: one side was merged already
    l.n += r.n;
    r.n = 0;
    l.next = r.next;
    if (r.next >= 0) sym[static_cast<size_t>(r.next)].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }

  for (int i = 0; i >= 0; i = sym[static_cast<size_t>(i)].next) {
    const Symbol& s = sym[static_cast<size_t>(i)];
    const int32_t id = vocab_.find(text.substr(s.begin, s.n));
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    // Not in the vocabulary: one byte token per byte (or <unk> where the vocabulary lacks them;
    // a byte is dropped when it has neither, as in byte-level BPE: -1 is not a token).
    for (size_t j = 0; j < s.n; ++j) {
      const int32_t bt = vocab_.byte_token[static_cast<unsigned char>(text[s.begin + j])];
      if (bt >= 0) out.push_back(bt);
      else if (vocab_.unk >= 0) out.push_back(vocab_.unk);
    }
  }
}

std::string Tokenizer::piece(int32_t id) const {
  if (id < 0 || id >= vocab_.size()) throw std::out_of_range("token id " + std::to_string(id) + " is outside the vocabulary");
  const std::string& t = vocab_.tokens[static_cast<size_t>(id)];
  switch (vocab_.types[static_cast<size_t>(id)]) {
    case TokenType::CONTROL:
    case TokenType::UNUSED: return "";
    case TokenType::BYTE:
      if (t.size() == 6 && t.rfind("<0x", 0) == 0)
        return std::string(1, static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16)));
      return t;
    case TokenType::USER_DEFINED: return t;
    default: {
      if (pre_) return bpe_piece(id);
      std::string out;
      for (size_t i = 0; i < t.size();) {
        if (t.compare(i, kSpaceMarker.size(), kSpaceMarker) == 0) {
          out += ' ';
          i += kSpaceMarker.size();
        } else {
          out += t[i++];
        }
      }
      return out;
    }
  }
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) out += piece(id);
  // The space the encoder added in front of the text is not part of it.
  if (vocab_.add_space_prefix && !out.empty() && out[0] == ' ' && !ids.empty() && ids[0] == vocab_.bos) out.erase(0, 1);
  return out;
}

std::string Utf8Stream::push(std::string_view bytes) {
  pending_ += bytes;
  // Find the last character start and check whether its bytes are all there.
  size_t i = pending_.size();
  size_t back = 0;
  while (i > 0 && back < 4) {
    --i;
    ++back;
    const auto c = static_cast<unsigned char>(pending_[i]);
    if ((c & 0xC0) != 0x80) {  // a lead byte (or ASCII)
      const size_t need = (c & 0x80) == 0 ? 1 : utf8_len(c) < 2 ? 1 : utf8_len(c);
      const size_t cut = back >= need ? pending_.size() : i;
      std::string ready = pending_.substr(0, cut);
      pending_.erase(0, cut);
      return ready;
    }
  }
  // Only continuation bytes: invalid as UTF-8; pass them through rather than hold them forever.
  if (back >= 4) return std::exchange(pending_, std::string());
  return {};
}

std::string Utf8Stream::flush() { return std::exchange(pending_, std::string()); }

}  // namespace hearth::runtime
