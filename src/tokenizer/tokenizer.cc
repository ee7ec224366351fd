// Encode/decode pipeline (mirrors HF tokenizers) and the public Tokenizer / StreamDecoder API.
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <queue>

#include "tokenizer/tokenizer_impl.h"

namespace fkv {
namespace {

constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kMaxCacheEntries = 1 << 16;
const std::string kEmpty;
const char* const kReplacementChar = "\xEF\xBF\xBD";

bool is_space_byte(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// HF's single_word boundary test: Unicode alphanumeric or '_'.
bool is_word_cp(std::string_view ch) {
  if (ch.size() == 1) return std::isalnum(static_cast<unsigned char>(ch[0])) || ch[0] == '_';
  static const auto re = Regex::compile(R"([\p{Alphabetic}\p{N}])");
  return re.has_value() && !re.value()->find_all(ch).empty();
}

// The code point ending at / starting at byte offset i.
std::string_view cp_before(std::string_view s, size_t i) {
  size_t b = i;
  while (b > 0 && (static_cast<unsigned char>(s[b - 1]) & 0xC0) == 0x80) --b;
  if (b > 0) --b;
  return s.substr(b, i - b);
}
std::string_view cp_at(std::string_view s, size_t i) {
  return s.substr(i, std::min(utf8_len(static_cast<unsigned char>(s[i])), s.size() - i));
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  std::string out;
  size_t pos = 0;
  while (true) {
    size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
  }
  if (pos == 0) return;
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

std::string regex_replace(const Regex& re, std::string_view s, const std::string& to) {
  std::string out;
  size_t pos = 0;
  for (auto [b, e] : re.find_all(s)) {
    out.append(s.substr(pos, b - pos));
    out += to;
    pos = e;
  }
  out.append(s.substr(pos));
  return out;
}

bool parse_byte_token(std::string_view t, uint8_t& byte) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return false;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  int hi = hex(t[3]), lo = hex(t[4]);
  if (hi < 0 || lo < 0) return false;
  byte = static_cast<uint8_t>(hi * 16 + lo);
  return true;
}

// Byte-level token text -> raw bytes; nullopt when some char is outside the alphabet.
std::optional<std::string> byte_level_decode(std::string_view t) {
  std::string out;
  size_t i = 0;
  while (i < t.size()) {
    uint32_t cp;
    if (!next_codepoint(t, i, cp)) return std::nullopt;
    int b = byte_level_char_to_byte(cp);
    if (b < 0) return std::nullopt;
    out += static_cast<char>(b);
  }
  return out;
}

struct Piece {
  std::string_view text;  // when id < 0
  int32_t id = -1;
  size_t offset = 0;  // byte offset in the string being split
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Added tokens: leftmost-longest match like HF's AddedVocabulary, with lstrip/rstrip/single_word.
static void split_added(std::string_view text, const std::vector<const AddedToken*>& toks,
                        const std::array<std::vector<const AddedToken*>, 256>& by_first,
                        std::vector<Piece>& out, size_t base) {
  if (toks.empty()) {
    if (!text.empty()) out.push_back({text, -1, base});
    return;
  }
  size_t done = 0, i = 0;
  while (i < text.size()) {
    const AddedToken* hit = nullptr;
    for (const AddedToken* t : by_first[static_cast<unsigned char>(text[i])]) {
      if (text.compare(i, t->pattern.size(), t->pattern) != 0) continue;
      if (t->single_word) {
        if (i > 0 && is_word_cp(cp_before(text, i))) continue;
        size_t e = i + t->pattern.size();
        if (e < text.size() && is_word_cp(cp_at(text, e))) continue;
      }
      hit = t;  // buckets are sorted longest first
      break;
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    size_t b = i, e = i + hit->pattern.size();
    if (hit->lstrip)
      while (b > done && is_space_byte(text[b - 1])) --b;
    if (hit->rstrip)
      while (e < text.size() && is_space_byte(text[e])) ++e;
    if (b > done) out.push_back({text.substr(done, b - done), -1, base + done});
    out.push_back({{}, hit->id, base + b});
    done = i = e;
  }
  if (done < text.size()) out.push_back({text.substr(done), -1, base + done});
}

static AddedIndex build_added_index(const std::vector<AddedToken>& added) {
  AddedIndex ix;
  for (const AddedToken& t : added) {
    if (t.pattern.empty()) continue;
    (t.normalized ? ix.norm : ix.raw).push_back(&t);
  }
  auto fill = [](const std::vector<const AddedToken*>& v,
                 std::array<std::vector<const AddedToken*>, 256>& first) {
    for (const AddedToken* t : v) first[static_cast<unsigned char>(t->pattern[0])].push_back(t);
    for (auto& b : first)
      std::stable_sort(b.begin(), b.end(), [](const AddedToken* x, const AddedToken* y) {
        return x->pattern.size() > y->pattern.size();
      });
  };
  fill(ix.raw, ix.raw_first);
  fill(ix.norm, ix.norm_first);
  return ix;
}

// ---------------------------------------------------------------------------------------------
std::string TokenizerImpl::normalize(std::string_view in) const {
  std::string s(in);
  for (const NormStep& n : normalizers) {
    switch (n.kind) {
      case NormKind::kPrepend:
        if (!s.empty()) s = n.a + s;
        break;
      case NormKind::kReplace:
        if (n.re) {
          s = regex_replace(*n.re, s, n.b);
        } else {
          replace_all(s, n.a, n.b);
        }
        break;
      case NormKind::kNfc:
        s = nfc(s);
        break;
      case NormKind::kLowercase:
        for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        break;
      case NormKind::kStrip: {
        size_t b = 0, e = s.size();
        if (n.left)
          while (b < e && is_space_byte(s[b])) ++b;
        if (n.right)
          while (e > b && is_space_byte(s[e - 1])) --e;
        s = s.substr(b, e - b);
        break;
      }
      case NormKind::kCollapseSpaces: {
        std::string o;
        for (char c : s) {
          if (c == ' ' && (o.empty() || o.back() == ' ')) continue;
          o += c;
        }
        while (!o.empty() && o.back() == ' ') o.pop_back();
        s = std::move(o);
        break;
      }
    }
  }
  return s;
}

static void apply_split(const Regex& re, SplitBehavior behavior, bool invert, const std::string& s,
                        std::vector<std::string>& out) {
  std::vector<std::pair<std::pair<size_t, size_t>, bool>> spans;  // (range, is_match)
  size_t pos = 0;
  for (auto m : re.find_all(s)) {
    if (m.first > pos) spans.push_back({{pos, m.first}, invert});
    spans.push_back({m, !invert});
    pos = m.second;
  }
  if (pos < s.size()) spans.push_back({{pos, s.size()}, invert});
  std::vector<std::string> pieces;
  bool prev_match = false;
  bool carry_next = false;
  for (size_t k = 0; k < spans.size(); ++k) {
    auto [r, is_match] = spans[k];
    std::string t = s.substr(r.first, r.second - r.first);
    switch (behavior) {
      case SplitBehavior::kRemoved:
        if (!is_match) pieces.push_back(t);
        break;
      case SplitBehavior::kIsolated:
        pieces.push_back(t);
        break;
      case SplitBehavior::kMergedWithPrevious:
        if (is_match && !pieces.empty() && !prev_match) {
          pieces.back() += t;
        } else {
          pieces.push_back(t);
        }
        break;
      case SplitBehavior::kMergedWithNext:
        if (carry_next) {
          pieces.back() += t;
        } else {
          pieces.push_back(t);
        }
        carry_next = is_match;
        break;
      case SplitBehavior::kContiguous:
        if (is_match && prev_match && !pieces.empty()) {
          pieces.back() += t;
        } else {
          pieces.push_back(t);
        }
        break;
    }
    prev_match = is_match;
  }
  for (auto& p : pieces)
    if (!p.empty()) out.push_back(std::move(p));
}

void TokenizerImpl::pre_tokenize(std::string_view s, bool first_segment,
                                 std::vector<std::string>& out) const {
  std::vector<std::string> cur{std::string(s)}, next;
  for (const PreStep& p : pre) {
    next.clear();
    for (size_t k = 0; k < cur.size(); ++k) {
      std::string& piece = cur[k];
      switch (p.kind) {
        case PreKind::kSplit:
          apply_split(*p.re, p.behavior, p.invert, piece, next);
          break;
        case PreKind::kByteLevel: {
          if (p.add_prefix_space && (piece.empty() || piece[0] != ' ')) piece = " " + piece;
          std::vector<std::string> parts;
          if (p.re) {
            apply_split(*p.re, SplitBehavior::kIsolated, false, piece, parts);
          } else {
            parts.push_back(piece);
          }
          const auto& map = byte_to_unicode();
          for (const std::string& part : parts) {
            std::string m;
            m.reserve(part.size() * 2);
            for (unsigned char c : part) m += map[c];
            next.push_back(std::move(m));
          }
          break;
        }
        case PreKind::kMetaspace: {
          replace_all(piece, " ", p.replacement);
          bool prepend = p.prepend == PrependScheme::kAlways ||
                         (p.prepend == PrependScheme::kFirst && first_segment && k == 0);
          if (prepend && piece.compare(0, p.replacement.size(), p.replacement) != 0)
            piece = p.replacement + piece;
          if (!p.split) {
            next.push_back(piece);
            break;
          }
          size_t start = 0;
          for (size_t at = piece.find(p.replacement, 1); at != std::string::npos;
               at = piece.find(p.replacement, at + 1)) {
            if (at > start) next.push_back(piece.substr(start, at - start));
            start = at;
          }
          next.push_back(piece.substr(start));
          break;
        }
      }
    }
    std::swap(cur, next);
  }
  if (split_at_metaspace) {
    static const std::string kMeta = "\xE2\x96\x81";
    for (auto& c : cur) {
      size_t start = 0;
      for (size_t at = c.find(kMeta, 1); at != std::string::npos; at = c.find(kMeta, at + 3)) {
        if (at >= 3 && c.compare(at - 3, 3, kMeta) == 0) continue;  // runs of "▁" stay together
        out.push_back(c.substr(start, at - start));
        start = at;
      }
      if (start < c.size()) out.push_back(c.substr(start));
    }
    return;
  }
  for (auto& c : cur)
    if (!c.empty()) out.push_back(std::move(c));
}

// ---------------------------------------------------------------------------------------------
// BPE over one pre-token. Symbols form a linked list; a heap holds candidate merges ordered by
// (rank or -score, position) so each merge costs O(log n), as in HF's Word::merge_all.
namespace {
struct Sym {
  int32_t id;
  int prev, next;
  uint32_t start, len;  // byte span in the word
};
struct Cand {
  double prio;  // lower first
  int pos;
  int32_t left_id, right_id;
  uint32_t left_len, right_len;
  int32_t new_id;
  bool operator<(const Cand& o) const {  // std::priority_queue is a max-heap
    if (prio != o.prio) return prio > o.prio;
    return pos > o.pos;
  }
};
}  // namespace

void TokenizerImpl::bpe_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (mode == MergeMode::kRanks && ignore_merges) {
    auto it = vocab.find(std::string(word));
    if (it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<Sym> syms;
  syms.reserve(word.size());
  size_t i = 0;
  bool prev_unk = false;
  while (i < word.size()) {
    size_t n = std::min(utf8_len(static_cast<unsigned char>(word[i])), word.size() - i);
    std::string ch(word.substr(i, n));
    auto it = vocab.find(ch);
    int32_t id = it == vocab.end() ? -1 : it->second;
    if (mode == MergeMode::kScores && id >= 0 && !mergeable[id]) id = -1;
    auto push = [&](int32_t sid, size_t start, size_t len) {
      int idx = static_cast<int>(syms.size());
      syms.push_back(
          {sid, idx - 1, idx + 1, static_cast<uint32_t>(start), static_cast<uint32_t>(len)});
    };
    if (id >= 0) {
      push(id, i, n);
      prev_unk = false;
    } else if (mode == MergeMode::kScores) {
      push(-1, i, n);  // resolved (byte fallback / unk) after merging
    } else {
      bool all = byte_fallback;
      for (size_t k = 0; all && k < n; ++k)
        all = byte_ids[static_cast<unsigned char>(word[i + k])] >= 0;
      if (all) {
        for (size_t k = 0; k < n; ++k)
          push(byte_ids[static_cast<unsigned char>(word[i + k])], i + k, k + 1 == n ? 1 : 1);
        prev_unk = false;
      } else if (unk_id >= 0) {
        if (fuse_unk && prev_unk) {
          syms.back().len += static_cast<uint32_t>(n);
        } else {
          push(unk_id, i, n);
        }
        prev_unk = true;
      }
    }
    i += n;
  }
  if (syms.empty()) return;
  syms.back().next = -1;

  std::priority_queue<Cand> heap;
  auto add_pair = [&](int l) {
    if (l < 0) return;
    int r = syms[l].next;
    if (r < 0) return;
    const Sym& a = syms[l];
    const Sym& b = syms[r];
    if (mode == MergeMode::kRanks) {
      if (a.id < 0 || b.id < 0) return;
      uint64_t key =
          (static_cast<uint64_t>(static_cast<uint32_t>(a.id)) << 32) | static_cast<uint32_t>(b.id);
      auto it = merges.find(key);
      if (it == merges.end()) return;
      heap.push(
          {static_cast<double>(it->second.first), l, a.id, b.id, a.len, b.len, it->second.second});
    } else {
      auto it = vocab.find(std::string(word.substr(a.start, a.len + b.len)));
      if (it == vocab.end() || !mergeable[it->second]) return;
      heap.push(
          {-static_cast<double>(scores[it->second]), l, a.id, b.id, a.len, b.len, it->second});
    }
  };
  for (int k = 0; k + 1 < static_cast<int>(syms.size()); ++k) add_pair(k);
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    Sym& a = syms[c.pos];
    if (a.len == 0 || a.id != c.left_id || a.len != c.left_len || a.next < 0) continue;
    Sym& b = syms[a.next];
    if (b.id != c.right_id || b.len != c.right_len) continue;
    a.id = c.new_id;
    a.len += b.len;
    b.len = 0;
    a.next = b.next;
    if (a.next >= 0) syms[a.next].prev = c.pos;
    add_pair(a.prev);
    add_pair(c.pos);
  }
  for (int k = 0; k >= 0; k = syms[k].next) {
    const Sym& s = syms[k];
    if (s.id >= 0) {
      out.push_back(s.id);
      continue;
    }
    // kScores unknown piece: bytes if every byte token exists, else <unk>.
    bool all = byte_fallback;
    for (uint32_t q = 0; all && q < s.len; ++q)
      all = byte_ids[static_cast<unsigned char>(word[s.start + q])] >= 0;
    if (all) {
      for (uint32_t q = 0; q < s.len; ++q)
        out.push_back(byte_ids[static_cast<unsigned char>(word[s.start + q])]);
    } else if (unk_id >= 0) {
      if (!(fuse_unk && !out.empty() && out.back() == unk_id)) out.push_back(unk_id);
    }
  }
}

// ---------------------------------------------------------------------------------------------
std::string TokenizerImpl::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::vector<std::string> toks;
  toks.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= static_cast<int32_t>(tokens.size())) continue;
    if (skip_special && special[id]) continue;
    toks.push_back(decode_tokens[id]);
  }
  if (!has_decoder) {
    std::string out;
    for (size_t k = 0; k < toks.size(); ++k) {
      if (k) out += ' ';
      out += toks[k];
    }
    return out;
  }
  for (const DecStep& d : decoders) {
    switch (d.kind) {
      case DecKind::kByteLevel: {
        std::string bytes;
        for (const std::string& t : toks) {
          auto b = byte_level_decode(t);
          bytes += b ? *b : t;
        }
        toks.assign(1, utf8_sanitize(bytes));
        break;
      }
      case DecKind::kReplace:
        for (std::string& t : toks) replace_all(t, d.a, d.b);
        break;
      case DecKind::kByteFallback: {
        std::vector<std::string> nt;
        std::string pending;
        size_t n_pending = 0;
        auto flush = [&] {
          if (n_pending == 0) return;
          if (utf8_valid_prefix(pending, true) == pending.size()) {
            nt.push_back(pending);
          } else {
            for (size_t q = 0; q < n_pending; ++q) nt.push_back(kReplacementChar);
          }
          pending.clear();
          n_pending = 0;
        };
        for (std::string& t : toks) {
          uint8_t byte;
          if (parse_byte_token(t, byte)) {
            pending += static_cast<char>(byte);
            ++n_pending;
          } else {
            flush();
            nt.push_back(std::move(t));
          }
        }
        flush();
        toks = std::move(nt);
        break;
      }
      case DecKind::kFuse: {
        std::string all;
        for (const std::string& t : toks) all += t;
        toks.assign(1, std::move(all));
        break;
      }
      case DecKind::kStrip:
        for (std::string& t : toks) {
          size_t b = 0, e = t.size();
          for (int q = 0; q < d.start && b < e && t.compare(b, d.a.size(), d.a) == 0; ++q)
            b += d.a.size();
          for (int q = 0;
               q < d.stop && e >= b + d.a.size() && t.compare(e - d.a.size(), d.a.size(), d.a) == 0;
               ++q)
            e -= d.a.size();
          t = t.substr(b, e - b);
        }
        break;
      case DecKind::kMetaspace:
        for (size_t k = 0; k < toks.size(); ++k) {
          replace_all(toks[k], d.a, " ");
          if (k == 0 && d.prepend != PrependScheme::kNever && !toks[k].empty() && toks[k][0] == ' ')
            toks[k].erase(0, 1);
        }
        break;
    }
  }
  std::string out;
  for (const std::string& t : toks) out += t;
  return out;
}

void TokenizerImpl::set_eog_defaults() {
  eog_ids.clear();
  if (eos_id >= 0) eog_ids.push_back(eos_id);
  static const char* const kEnds[] = {
      "<|eot_id|>",    "<|im_end|>", "<|end|>",       "</s>",       "<|end_of_text|>",
      "<|endoftext|>", "<|eom_id|>", "<end_of_turn>", "<|return|>", "<eos>"};
  for (const char* e : kEnds) {
    auto it = vocab.find(e);
    if (it != vocab.end() && std::find(eog_ids.begin(), eog_ids.end(), it->second) == eog_ids.end())
      eog_ids.push_back(it->second);
  }
}

Status TokenizerImpl::finalize() {
  for (const AddedToken& t : added) {
    if (t.id < 0)
      return Status::error(strfmt("added token \"%s\" has a negative id", t.content.c_str()));
    if (t.id >= static_cast<int32_t>(tokens.size())) tokens.resize(t.id + 1);
    tokens[t.id] = t.content;
    vocab[t.content] = t.id;
  }
  // HF matches `normalized` added tokens on normalized text, with normalized content, and
  // decodes them from that normalized form too.
  decode_tokens = tokens;
  for (AddedToken& t : added) {
    t.pattern = t.normalized ? normalize(t.content) : t.content;
    decode_tokens[t.id] = t.pattern;
  }
  special.assign(tokens.size(), 0);
  for (const AddedToken& t : added)
    if (t.special) special[t.id] = 1;
  byte_ids.fill(-1);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = vocab.find(name);
    if (it != vocab.end()) byte_ids[b] = it->second;
  }
  if (mode == MergeMode::kScores) {
    scores.resize(tokens.size(), 0.0f);
    mergeable.resize(tokens.size(), 1);
  }
  // Raw bytes per token, for streaming.
  bool byte_level = false, byte_fb = false;
  std::string meta;
  std::vector<std::pair<std::string, std::string>> repl;
  for (const DecStep& d : decoders) {
    if (d.kind == DecKind::kByteLevel) byte_level = true;
    if (d.kind == DecKind::kByteFallback) byte_fb = true;
    if (d.kind == DecKind::kReplace) repl.emplace_back(d.a, d.b);
    if (d.kind == DecKind::kMetaspace) repl.emplace_back(d.a, " ");
    if ((d.kind == DecKind::kStrip && d.a == " " && d.start > 0) ||
        (d.kind == DecKind::kMetaspace && d.prepend != PrependScheme::kNever))
      strip_leading_space = true;
  }
  std::vector<uint8_t> is_added(tokens.size(), 0);
  for (const AddedToken& t : added) is_added[t.id] = !t.normalized;
  raw_bytes.assign(tokens.size(), std::string());
  for (size_t id = 0; id < tokens.size(); ++id) {
    const std::string& t = decode_tokens[id];
    uint8_t byte;
    if (is_added[id]) {
      raw_bytes[id] = t;
    } else if (byte_level) {
      auto b = byte_level_decode(t);
      raw_bytes[id] = b ? *b : t;
    } else if (byte_fb && parse_byte_token(t, byte)) {
      raw_bytes[id] = std::string(1, static_cast<char>(byte));
    } else {
      std::string s = t;
      for (auto& [a, b] : repl) replace_all(s, a, b);
      raw_bytes[id] = s;
    }
  }
  if (eog_ids.empty()) set_eog_defaults();
  bool metaspace_text = pre.empty() || (pre.size() == 1 && pre[0].kind == PreKind::kMetaspace &&
                                        !pre[0].split && pre[0].replacement == "\xE2\x96\x81");
  if (metaspace_text) {
    split_at_metaspace = true;
    const std::string meta = "\xE2\x96\x81";
    for (size_t id = 0; id < tokens.size() && split_at_metaspace; ++id) {
      if (is_added[id]) continue;
      const std::string& t = tokens[id];
      for (size_t at = t.find(meta, 1); at != std::string::npos; at = t.find(meta, at + 3)) {
        if (at < 3 || t.compare(at - 3, 3, meta) != 0) {
          split_at_metaspace = false;
          break;
        }
      }
    }
  }
  added_index = build_added_index(added);
  return Status::ok();
}

// ---------------------------------------------------------------------------------------------
Tokenizer::Tokenizer() : impl_(std::make_unique<TokenizerImpl>()) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer TokenizerBuilder::make(std::unique_ptr<TokenizerImpl> impl) {
  Tokenizer t;
  t.impl_ = std::move(impl);
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text_in, bool add_special_tokens) const {
  const TokenizerImpl& m = *impl_;
  std::string sanitized;
  std::string_view text = text_in;
  if (utf8_valid_prefix(text, true) != text.size()) {
    sanitized = utf8_sanitize(text);
    text = sanitized;
  }
  const AddedIndex& ix = m.added_index;
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = m.prefix_ids;
  std::vector<Piece> raw;
  split_added(text, ix.raw, ix.raw_first, raw, 0);
  std::vector<std::string> words;
  for (const Piece& p : raw) {
    if (p.id >= 0) {
      ids.push_back(p.id);
      continue;
    }
    std::string norm = m.normalize(p.text);
    std::vector<Piece> parts;
    split_added(norm, ix.norm, ix.norm_first, parts, 0);
    for (const Piece& q : parts) {
      if (q.id >= 0) {
        ids.push_back(q.id);
        continue;
      }
      words.clear();
      m.pre_tokenize(q.text, p.offset == 0 && q.offset == 0, words);
      for (const std::string& w : words) {
        if (w.size() <= kMaxCachedWordBytes) {
          std::lock_guard<std::mutex> lock(m.cache_mu);
          auto it = m.cache.find(w);
          if (it != m.cache.end()) {
            ids.insert(ids.end(), it->second.begin(), it->second.end());
            continue;
          }
        }
        size_t before = ids.size();
        m.bpe_word(w, ids);
        if (w.size() <= kMaxCachedWordBytes) {
          std::lock_guard<std::mutex> lock(m.cache_mu);
          if (m.cache.size() >= kMaxCacheEntries) m.cache.clear();
          m.cache.emplace(w, std::vector<int32_t>(ids.begin() + before, ids.end()));
        }
      }
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), m.suffix_ids.begin(), m.suffix_ids.end());
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  return impl_->decode(ids, skip_special_tokens);
}

std::string Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return std::string();
  return impl_->raw_bytes[id];
}

const std::string& Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return kEmpty;
  return impl_->tokens[id];
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->tokens.size()); }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->vocab.find(std::string(token));
  if (it == impl_->vocab.end()) return std::nullopt;
  return it->second;
}

int32_t Tokenizer::bos_id() const { return impl_->bos_id; }
int32_t Tokenizer::eos_id() const { return impl_->eos_id; }
const std::string& Tokenizer::bos_token() const { return impl_->bos_token; }
const std::string& Tokenizer::eos_token() const { return impl_->eos_token; }
bool Tokenizer::add_bos() const {
  return impl_->bos_id >= 0 && !impl_->prefix_ids.empty() && impl_->prefix_ids[0] == impl_->bos_id;
}
bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->special[id];
}
bool Tokenizer::is_end_of_generation(int32_t id) const {
  const auto& v = impl_->eog_ids;
  return std::find(v.begin(), v.end(), id) != v.end();
}
const std::vector<int32_t>& Tokenizer::end_of_generation_ids() const { return impl_->eog_ids; }
const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }
bool Tokenizer::strips_leading_space() const { return impl_->strip_leading_space; }

// ---------------------------------------------------------------------------------------------
StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skip_special_tokens)
    : tok_(tok), skip_special_(skip_special_tokens) {}

std::string StreamDecoder::push(int32_t id) {
  if (skip_special_ && tok_.is_special(id)) return std::string();
  std::string b = tok_.token_bytes(id);
  if (first_ && tok_.strips_leading_space() && !b.empty() && b[0] == ' ') b.erase(0, 1);
  first_ = false;
  pending_ += b;
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    size_t j = i;
    uint32_t cp;
    if (next_codepoint(pending_, j, cp)) {
      out.append(pending_, i, j - i);
      i = j;
      continue;
    }
    // Incomplete but valid so far at the end: wait for more bytes.
    unsigned char lead = static_cast<unsigned char>(pending_[i]);
    size_t need = utf8_len(lead);
    bool incomplete = need > 1 && i + need > pending_.size();
    for (size_t k = i + 1; incomplete && k < pending_.size(); ++k)
      incomplete = (static_cast<unsigned char>(pending_[k]) & 0xC0) == 0x80;
    if (incomplete) break;
    out += kReplacementChar;
    ++i;
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = utf8_sanitize(pending_);
  pending_.clear();
  return out;
}

}  // namespace fkv
