#include "eval/jieba.h"

#include <sys/stat.h>

#include <array>
#include <cmath>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string_view>
#include <unordered_map>

#include "core/file_io.h"
#include "core/utf8.h"
#include "eval/text.h"

namespace fkv::eval {
namespace {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

constexpr double kMinFloat = -3.14e100;  // jieba's MIN_FLOAT for unseen emissions / transitions
constexpr int kB = 0, kM = 1, kE = 2, kS = 3;
constexpr char kStateChar[4] = {'B', 'M', 'E', 'S'};

bool is_han(char32_t c) { return c >= 0x4E00 && c <= 0x9FD5; }
// jieba's re_han_default: [\u4E00-\u9FD5a-zA-Z0-9+#&\._%\-]
bool in_default_run(char32_t c) {
  return is_han(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '+' || c == '#' || c == '&' || c == '.' || c == '_' || c == '%' || c == '-';
}
bool is_ascii_alnum(char32_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// A tiny reader for the Python literals of finalseg/prob_*.py: nested dicts of single-quoted
// strings to floats or dicts.
class PyLiteral {
 public:
  PyLiteral(std::string_view text, std::string name) : s_(text), name_(std::move(name)) {}
  Status parse_top(std::map<std::u32string, double>* flat,
                   std::map<std::u32string, std::map<std::u32string, double>>* nested) {
    const size_t at = s_.find("P=");
    if (at == std::string_view::npos) return err("no 'P=' assignment");
    i_ = at + 2;
    if (!eat('{')) return err("expected '{'");
    while (true) {
      skip_ws();
      if (eat('}')) return Status::ok();
      std::u32string key;
      FKV_RETURN_IF_ERROR(parse_string(key));
      if (!eat(':')) return err("expected ':'");
      skip_ws();
      if (peek() == '{') {
        if (nested == nullptr) return err("unexpected nested dict");
        ++i_;
        auto& inner = (*nested)[key];
        while (true) {
          skip_ws();
          if (eat('}')) break;
          std::u32string k2;
          FKV_RETURN_IF_ERROR(parse_string(k2));
          if (!eat(':')) return err("expected ':'");
          double v = 0;
          FKV_RETURN_IF_ERROR(parse_number(v));
          inner[k2] = v;
          eat(',');
        }
      } else {
        if (flat == nullptr) return err("expected a nested dict");
        double v = 0;
        FKV_RETURN_IF_ERROR(parse_number(v));
        (*flat)[key] = v;
      }
      eat(',');
    }
  }

 private:
  Status err(const std::string& what) const {
    return Status::error(strfmt("%s: %s at byte %zu", name_.c_str(), what.c_str(), i_));
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t'))
      ++i_;
  }
  bool eat(char c) {
    skip_ws();
    if (peek() != c) return false;
    ++i_;
    return true;
  }
  Status parse_string(std::u32string& out) {
    skip_ws();
    if (peek() != '\'' && peek() != '"') return err("expected a string");
    const char quote = s_[i_++];
    std::string raw;
    while (i_ < s_.size() && s_[i_] != quote) {
      if (s_[i_] != '\\') {
        raw += s_[i_++];
        continue;
      }
      if (i_ + 1 >= s_.size()) return err("unterminated escape");
      const char e = s_[i_ + 1];
      int hex_len = e == 'u' ? 4 : e == 'U' ? 8 : e == 'x' ? 2 : 0;
      if (hex_len > 0) {
        if (i_ + 2 + hex_len > s_.size()) return err("short escape");
        const std::string hex(s_.substr(i_ + 2, hex_len));
        char* end = nullptr;
        const unsigned long cp = std::strtoul(hex.c_str(), &end, 16);
        if (end != hex.c_str() + hex_len) return err("bad escape");
        raw += u32_to_utf8(std::u32string(1, static_cast<char32_t>(cp)));
        i_ += 2 + hex_len;
      } else {
        raw += e == 'n' ? '\n' : e == 't' ? '\t' : e;
        i_ += 2;
      }
    }
    if (i_ >= s_.size()) return err("unterminated string");
    ++i_;
    out = utf8_to_u32(raw);
    return Status::ok();
  }
  Status parse_number(double& v) {
    skip_ws();
    const size_t start = i_;
    while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) || s_[i_] == '-' ||
                              s_[i_] == '+' || s_[i_] == '.' || s_[i_] == 'e' || s_[i_] == 'E'))
      ++i_;
    const std::string num(s_.substr(start, i_ - start));
    char* end = nullptr;
    v = std::strtod(num.c_str(), &end);  // correctly rounded: Python's repr round-trips exactly
    if (num.empty() || end != num.c_str() + num.size()) return err("bad number '" + num + "'");
    return Status::ok();
  }
  std::string_view s_;
  std::string name_;
  size_t i_ = 0;
};

int state_index(const std::u32string& s) {
  if (s.size() != 1) return -1;
  for (int k = 0; k < 4; ++k)
    if (s[0] == static_cast<char32_t>(kStateChar[k])) return k;
  return -1;
}

bool file_exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

struct Jieba::Impl {
  std::unordered_map<std::string, int64_t, StringHash, std::equal_to<>> freq;  // words + prefixes
  double log_total = 0;
  std::array<double, 4> start{};
  std::array<std::array<double, 4>, 4> trans{};  // [from][to], kMinFloat when absent
  std::array<std::unordered_map<char32_t, double>, 4> emit;

  // FREQ.get(word) with the Python truthiness jieba uses: absent and 0 are both "no word".
  int64_t word_freq(std::string_view w) const {
    auto it = freq.find(w);
    return it == freq.end() ? 0 : it->second;
  }
  bool has_prefix(std::string_view w) const { return freq.find(w) != freq.end(); }

  void hmm_cut(const std::u32string& run, std::vector<std::string>& out) const;
  void viterbi_cut(const std::u32string& han, std::vector<std::string>& out) const;
  void dag_cut(const std::u32string& run, std::vector<std::string>& out) const;
};

Jieba::Jieba() : impl_(std::make_unique<Impl>()) {}
Jieba::~Jieba() = default;

Expected<std::unique_ptr<Jieba>> Jieba::load(const std::string& dir) {
  const std::string dict_path = dir + "/dict.txt";
  if (!file_exists(dict_path)) {
    return Status::error(strfmt(
        "jieba dictionary not found: %s (the Chinese LongBench metrics need it; install it with "
        "'apt-get install python3-jieba' or 'pip install jieba', or point --jieba-dir / "
        "FASTKV_JIEBA_DIR at the jieba package folder)",
        dict_path.c_str()));
  }
  auto dict = read_text_file(dict_path, "jieba dictionary", /*allow_empty=*/false);
  if (!dict) return dict.status();
  std::unique_ptr<Jieba> j(new Jieba());
  Impl& im = *j->impl_;
  im.freq.reserve(700000);
  int64_t total = 0;
  size_t line_start = 0, lineno = 0;
  const std::string& d = *dict;
  while (line_start < d.size()) {
    size_t line_end = d.find('\n', line_start);
    if (line_end == std::string::npos) line_end = d.size();
    ++lineno;
    std::string_view line(d.data() + line_start, line_end - line_start);
    line_start = line_end + 1;
    // line.strip(): ASCII whitespace around the line.
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
      line.remove_suffix(1);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line.empty()) continue;
    const size_t sp1 = line.find(' ');
    if (sp1 == std::string_view::npos) {
      return Status::error(strfmt("%s:%zu: expected 'word freq [tag]'", dict_path.c_str(), lineno));
    }
    const std::string_view word = line.substr(0, sp1);
    std::string_view freq_text = line.substr(sp1 + 1);
    freq_text = freq_text.substr(0, freq_text.find(' '));
    char* end = nullptr;
    const std::string ft(freq_text);
    const long long f = std::strtoll(ft.c_str(), &end, 10);
    if (ft.empty() || end != ft.c_str() + ft.size()) {
      return Status::error(
          strfmt("%s:%zu: bad frequency '%s'", dict_path.c_str(), lineno, ft.c_str()));
    }
    im.freq[std::string(word)] = f;
    total += f;
    // Every prefix of a word is a key (value 0 unless it is a word itself).
    const std::u32string w32 = utf8_to_u32(word);
    std::string prefix;
    for (size_t k = 0; k + 1 < w32.size(); ++k) {
      append_utf8(static_cast<uint32_t>(w32[k]), prefix);
      im.freq.try_emplace(prefix, 0);
    }
  }
  if (total <= 0) return Status::error(dict_path + ": no word frequencies");
  im.log_total = std::log(static_cast<double>(total));

  auto read_prob =
      [&](const char* name, std::map<std::u32string, double>* flat,
          std::map<std::u32string, std::map<std::u32string, double>>* nested) -> Status {
    const std::string path = dir + "/finalseg/" + name;
    auto text = read_text_file(path, "jieba HMM table", /*allow_empty=*/false);
    if (!text) return text.status();
    return PyLiteral(*text, path).parse_top(flat, nested);
  };
  std::map<std::u32string, double> start;
  std::map<std::u32string, std::map<std::u32string, double>> trans, emit;
  FKV_RETURN_IF_ERROR(read_prob("prob_start.py", &start, nullptr));
  FKV_RETURN_IF_ERROR(read_prob("prob_trans.py", nullptr, &trans));
  FKV_RETURN_IF_ERROR(read_prob("prob_emit.py", nullptr, &emit));
  for (int s = 0; s < 4; ++s) {
    const std::u32string key(1, static_cast<char32_t>(kStateChar[s]));
    if (!start.count(key) || !emit.count(key)) {
      return Status::error(dir + "/finalseg: HMM tables lack state " +
                           std::string(1, kStateChar[s]));
    }
    im.start[s] = start[key];
    for (int t = 0; t < 4; ++t) im.trans[s][t] = kMinFloat;
    for (const auto& [to, p] : trans[key]) {
      const int ti = state_index(to);
      if (ti >= 0) im.trans[s][ti] = p;
    }
    for (const auto& [ch, p] : emit[key]) {
      if (ch.size() == 1) im.emit[s][ch[0]] = p;
    }
  }
  return j;
}

// finalseg.__cut: Viterbi over BMES for one run of Han characters.
void Jieba::Impl::viterbi_cut(const std::u32string& obs, std::vector<std::string>& out) const {
  // PrevStatus: the states that may precede each state, in jieba's order.
  static constexpr int kPrev[4][2] = {{kE, kS}, {kM, kB}, {kB, kM}, {kS, kE}};
  const size_t n = obs.size();
  auto em = [&](int s, char32_t c) {
    auto it = emit[s].find(c);
    return it == emit[s].end() ? kMinFloat : it->second;
  };
  std::vector<std::array<double, 4>> v(n);
  std::vector<std::array<int, 4>> back(n);
  for (int s = 0; s < 4; ++s) v[0][s] = start[s] + em(s, obs[0]);
  for (size_t t = 1; t < n; ++t) {
    for (int y = 0; y < 4; ++y) {
      const double e = em(y, obs[t]);
      // max over (prob, state) tuples: ties go to the larger state letter.
      int best = -1;
      double best_p = 0;
      for (int y0 : kPrev[y]) {
        const double p = v[t - 1][y0] + trans[y0][y] + e;
        if (best < 0 || p > best_p || (p == best_p && kStateChar[y0] > kStateChar[best])) {
          best = y0;
          best_p = p;
        }
      }
      v[t][y] = best_p;
      back[t][y] = best;
    }
  }
  // The last state is E or S; ties to 'S'.
  int state = v[n - 1][kS] >= v[n - 1][kE] ? kS : kE;
  std::vector<int> path(n);
  for (size_t t = n; t-- > 0;) {
    path[t] = state;
    if (t > 0) state = back[t][state];
  }
  size_t begin = 0, next = 0;
  for (size_t i = 0; i < n; ++i) {
    if (path[i] == kB) {
      begin = i;
    } else if (path[i] == kE) {
      out.push_back(u32_to_utf8(obs.substr(begin, i + 1 - begin)));
      next = i + 1;
    } else if (path[i] == kS) {
      out.push_back(u32_to_utf8(obs.substr(i, 1)));
      next = i + 1;
    }
  }
  if (next < n) out.push_back(u32_to_utf8(obs.substr(next)));
}

// finalseg.cut: Han runs through Viterbi; the rest split by [a-zA-Z0-9]+(?:\.\d+)?%? matches.
void Jieba::Impl::hmm_cut(const std::u32string& s, std::vector<std::string>& out) const {
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    if (is_han(s[i])) {
      while (j < s.size() && is_han(s[j])) ++j;
      viterbi_cut(s.substr(i, j - i), out);
      i = j;
      continue;
    }
    while (j < s.size() && !is_han(s[j])) ++j;
    // Non-Han block [i, j): alternating non-matching text and skip-pattern matches.
    const std::u32string blk = s.substr(i, j - i);
    size_t p = 0, pending = 0;
    while (p < blk.size()) {
      if (!is_ascii_alnum(blk[p])) {
        ++p;
        continue;
      }
      size_t q = p;
      while (q < blk.size() && is_ascii_alnum(blk[q])) ++q;
      if (q + 1 < blk.size() && blk[q] == '.' && blk[q + 1] >= '0' && blk[q + 1] <= '9') {
        q += 1;
        while (q < blk.size() && blk[q] >= '0' && blk[q] <= '9') ++q;
      }
      if (q < blk.size() && blk[q] == '%') ++q;
      if (p > pending) out.push_back(u32_to_utf8(blk.substr(pending, p - pending)));
      out.push_back(u32_to_utf8(blk.substr(p, q - p)));
      pending = p = q;
    }
    if (blk.size() > pending) out.push_back(u32_to_utf8(blk.substr(pending)));
    i = j;
  }
}

// Jieba.__cut_DAG for one run of re_han_default characters.
void Jieba::Impl::dag_cut(const std::u32string& run, std::vector<std::string>& out) const {
  const size_t n = run.size();
  // UTF-8 byte offsets of every code point, so that run[a:b] is a string_view of `bytes`.
  std::string bytes;
  std::vector<size_t> off(n + 1);
  for (size_t k = 0; k < n; ++k) {
    off[k] = bytes.size();
    append_utf8(static_cast<uint32_t>(run[k]), bytes);
  }
  off[n] = bytes.size();
  auto frag = [&](size_t a, size_t b) {  // run[a:b]
    return std::string_view(bytes.data() + off[a], off[b] - off[a]);
  };
  std::vector<std::vector<size_t>> dag(n);
  for (size_t k = 0; k < n; ++k) {
    size_t i = k;
    while (i < n && has_prefix(frag(k, i + 1))) {
      if (word_freq(frag(k, i + 1)) != 0) dag[k].push_back(i);
      ++i;
    }
    if (dag[k].empty()) dag[k].push_back(k);
  }
  std::vector<double> route_p(n + 1, 0.0);
  std::vector<size_t> route_x(n + 1, 0);
  for (size_t idx = n; idx-- > 0;) {
    bool first = true;
    for (size_t x : dag[idx]) {
      const int64_t f = word_freq(frag(idx, x + 1));
      const double p = std::log(static_cast<double>(f != 0 ? f : 1)) - log_total + route_p[x + 1];
      // max over (prob, x): ties go to the larger x.
      if (first || p > route_p[idx] || (p == route_p[idx] && x > route_x[idx])) {
        route_p[idx] = p;
        route_x[idx] = x;
        first = false;
      }
    }
  }
  std::u32string buf;
  auto flush_buf = [&]() {
    if (buf.empty()) return;
    if (buf.size() == 1) {
      out.push_back(u32_to_utf8(buf));
    } else if (word_freq(u32_to_utf8(buf)) == 0) {
      hmm_cut(buf, out);
    } else {
      for (char32_t c : buf) out.push_back(u32_to_utf8(std::u32string(1, c)));
    }
    buf.clear();
  };
  size_t x = 0;
  while (x < n) {
    const size_t y = route_x[x] + 1;
    if (y - x == 1) {
      buf += run[x];
    } else {
      flush_buf();
      out.push_back(std::string(frag(x, y)));
    }
    x = y;
  }
  flush_buf();
}

std::vector<std::string> Jieba::cut(std::string_view text) const {
  const std::u32string s = utf8_to_u32(text);
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    if (in_default_run(s[i])) {
      while (j < s.size() && in_default_run(s[j])) ++j;
      impl_->dag_cut(s.substr(i, j - i), out);
      i = j;
      continue;
    }
    while (j < s.size() && !in_default_run(s[j])) ++j;
    // re_skip_default "(\r\n|\s)": "\r\n" and whitespace are tokens; other characters one each.
    for (size_t k = i; k < j; ++k) {
      if (s[k] == '\r' && k + 1 < j && s[k + 1] == '\n') {
        out.push_back("\r\n");
        ++k;
      } else {
        out.push_back(u32_to_utf8(s.substr(k, 1)));
      }
    }
    i = j;
  }
  return out;
}

std::string default_jieba_dir() {
  if (const char* env = std::getenv("FASTKV_JIEBA_DIR"); env != nullptr && *env != '\0') return env;
  static const char* kCandidates[] = {"/usr/lib/python3/dist-packages/jieba",
                                      "/usr/local/lib/python3/dist-packages/jieba"};
  for (const char* c : kCandidates) {
    if (file_exists(std::string(c) + "/dict.txt")) return c;
  }
  return kCandidates[0];
}

Expected<const Jieba*> shared_jieba(const std::string& dir) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<Jieba>> loaded;
  const std::string d = dir.empty() ? default_jieba_dir() : dir;
  std::lock_guard<std::mutex> lock(mu);
  auto it = loaded.find(d);
  if (it != loaded.end()) return static_cast<const Jieba*>(it->second.get());
  auto j = Jieba::load(d);
  if (!j) return j.status();
  const Jieba* p = j->get();
  loaded[d] = std::move(j.value());
  return p;
}

}  // namespace fkv::eval
