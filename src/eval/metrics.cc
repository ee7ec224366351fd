#include "eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "eval/text.h"

namespace fkv::eval {
namespace {

using U32 = std::u32string;

// LongBench's cn_punctuation (metrics.py), plus string.punctuation below.
const std::u32string& cn_punctuation() {
  static const U32 s = utf8_to_u32(
      "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔"
      "〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏.");
  return s;
}

U32 join(const std::vector<U32>& parts, std::u32string_view sep) {
  U32 out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out += sep;
    out += parts[i];
  }
  return out;
}

bool contains(std::u32string_view hay, std::u32string_view needle) {
  return hay.find(needle) != std::u32string_view::npos;
}

// LongBench f1_score over token lists: Counter intersection.
template <class Tok>
double f1_of_tokens(const std::vector<Tok>& pred, const std::vector<Tok>& truth) {
  std::map<Tok, int> count_pred, count_truth;
  for (const auto& t : pred) ++count_pred[t];
  for (const auto& t : truth) ++count_truth[t];
  int64_t same = 0;
  for (const auto& [t, c] : count_pred) {
    auto it = count_truth.find(t);
    if (it != count_truth.end()) same += std::min(c, it->second);
  }
  if (same == 0) return 0.0;
  const double precision = 1.0 * static_cast<double>(same) / static_cast<double>(pred.size());
  const double recall = 1.0 * static_cast<double>(same) / static_cast<double>(truth.size());
  return (2 * precision * recall) / (precision + recall);
}

// re.sub(r"\b(a|an|the)\b", " ", text) on lowercased text.
U32 remove_articles(const U32& s) {
  static const U32 kArticles[] = {U"a", U"an", U"the"};
  U32 out;
  size_t i = 0;
  while (i < s.size()) {
    const bool boundary_before = i == 0 || !py_isword(s[i - 1]);
    bool replaced = false;
    if (boundary_before && py_isword(s[i])) {
      for (const U32& art : kArticles) {
        if (s.compare(i, art.size(), art) != 0) continue;
        const size_t end = i + art.size();
        if (end == s.size() || !py_isword(s[end])) {
          out += U' ';
          i = end;
          replaced = true;
          break;
        }
      }
    }
    if (!replaced) out += s[i++];
  }
  return out;
}

U32 normalize_answer_u32(std::u32string_view text) {
  U32 s = py_lower(text);
  U32 no_punc;
  for (char32_t c : s)
    if (!is_ascii_punct(c)) no_punc += c;
  return join(py_split(remove_articles(no_punc)), U" ");
}

U32 normalize_zh_u32(std::u32string_view text) {
  const U32 s = py_lower(text);
  const U32& cn = cn_punctuation();
  U32 no_punc;
  for (char32_t c : s) {
    if (is_ascii_punct(c) || cn.find(c) != U32::npos) continue;
    no_punc += c;
  }
  return join(py_split(no_punc), U"");
}

// ---- rouge (pltrdy) ROUGE-L, summary level, exclusive=True ----

// hyp.split(".") keeping pieces with len > 0, each " ".join(piece.split()).
std::vector<U32> rouge_sentences(std::u32string_view text) {
  std::vector<U32> out;
  for (const U32& piece : py_split_on(text, U'.')) {
    if (piece.empty()) continue;
    out.push_back(join(py_split(piece), U" "));
  }
  return out;
}

// The set of words of the LCS rouge's _recon_lcs reconstructs (x = reference words).
void lcs_words(const std::vector<U32>& x, const std::vector<U32>& y, std::set<U32>& out) {
  const size_t n = x.size(), m = y.size();
  std::vector<std::vector<int32_t>> t(n + 1, std::vector<int32_t>(m + 1, 0));
  for (size_t i = 1; i <= n; ++i)
    for (size_t j = 1; j <= m; ++j)
      t[i][j] = x[i - 1] == y[j - 1] ? t[i - 1][j - 1] + 1 : std::max(t[i - 1][j], t[i][j - 1]);
  size_t i = n, j = m;
  while (i > 0 && j > 0) {
    if (x[i - 1] == y[j - 1]) {
      out.insert(x[i - 1]);
      --i;
      --j;
    } else if (t[i - 1][j] > t[i][j - 1]) {
      --i;
    } else {
      --j;
    }
  }
}

std::vector<U32> split_space(const U32& s) { return py_split_on(s, U' '); }

}  // namespace

std::string normalize_answer(std::string_view s) {
  return u32_to_utf8(normalize_answer_u32(utf8_to_u32(s)));
}

std::string normalize_zh_answer(std::string_view s) {
  return u32_to_utf8(normalize_zh_u32(utf8_to_u32(s)));
}

double qa_f1_score(std::string_view prediction, std::string_view ground_truth) {
  const auto p = py_split(normalize_answer_u32(utf8_to_u32(prediction)));
  const auto g = py_split(normalize_answer_u32(utf8_to_u32(ground_truth)));
  return f1_of_tokens(p, g);
}

double qa_f1_zh_score(std::string_view prediction, std::string_view ground_truth, const Jieba& jb) {
  auto tokens = [&](std::string_view text) {
    std::vector<U32> out;
    for (const std::string& t : jb.cut(text)) {
      U32 n = normalize_zh_u32(utf8_to_u32(t));
      if (!n.empty()) out.push_back(std::move(n));
    }
    return out;
  };
  return f1_of_tokens(tokens(prediction), tokens(ground_truth));
}

double rouge_score(std::string_view prediction, std::string_view ground_truth) {
  const std::vector<U32> hyp = rouge_sentences(utf8_to_u32(prediction));
  const std::vector<U32> ref = rouge_sentences(utf8_to_u32(ground_truth));
  // The package raises ValueError for an empty side; LongBench returns 0.0 then.
  if (hyp.empty() || ref.empty()) return 0.0;
  std::set<U32> ref_words, hyp_words;
  for (const U32& s : ref)
    for (U32& w : split_space(s)) ref_words.insert(std::move(w));
  for (const U32& s : hyp)
    for (U32& w : split_space(s)) hyp_words.insert(std::move(w));
  const double m = static_cast<double>(ref_words.size());
  const double n = static_cast<double>(hyp_words.size());
  std::set<U32> lcs_union;
  for (const U32& r : ref) {
    const std::vector<U32> rw = split_space(r);
    for (const U32& h : hyp) lcs_words(rw, split_space(h), lcs_union);
  }
  const double llcs = static_cast<double>(lcs_union.size());
  const double r_lcs = llcs / m;
  const double p_lcs = llcs / n;
  return 2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8));
}

double rouge_zh_score(std::string_view prediction, std::string_view ground_truth, const Jieba& jb) {
  auto spaced = [&](std::string_view text) {
    std::string out;
    const auto words = jb.cut(text);
    for (size_t i = 0; i < words.size(); ++i) {
      if (i > 0) out += ' ';
      out += words[i];
    }
    return out;
  };
  return rouge_score(spaced(prediction), spaced(ground_truth));
}

double sequence_matcher_ratio(std::u32string_view a, std::u32string_view b) {
  const size_t la = a.size(), lb = b.size();
  if (la + lb == 0) return 1.0;
  // b2j without the popular elements (autojunk: len(b) >= 200, more than len(b)//100 + 1 uses).
  std::unordered_map<char32_t, std::vector<int>> b2j;
  for (size_t j = 0; j < lb; ++j) b2j[b[j]].push_back(static_cast<int>(j));
  if (lb >= 200) {
    const size_t ntest = lb / 100 + 1;
    for (auto it = b2j.begin(); it != b2j.end();) {
      it = it->second.size() > ntest ? b2j.erase(it) : std::next(it);
    }
  }
  static const std::vector<int> kNothing;
  auto longest = [&](int alo, int ahi, int blo, int bhi, int& bi, int& bj, int& bsize) {
    bi = alo;
    bj = blo;
    bsize = 0;
    std::unordered_map<int, int> j2len, next;
    for (int i = alo; i < ahi; ++i) {
      next.clear();
      auto found = b2j.find(a[i]);
      const std::vector<int>& js = found == b2j.end() ? kNothing : found->second;
      for (int j : js) {
        if (j < blo) continue;
        if (j >= bhi) break;
        auto prev = j2len.find(j - 1);
        const int k = (prev == j2len.end() ? 0 : prev->second) + 1;
        next[j] = k;
        if (k > bsize) {
          bi = i - k + 1;
          bj = j - k + 1;
          bsize = k;
        }
      }
      std::swap(j2len, next);
    }
    // Extend over equal elements on both ends (there is no junk: isjunk is None).
    while (bi > alo && bj > blo && a[bi - 1] == b[bj - 1]) {
      --bi;
      --bj;
      ++bsize;
    }
    while (bi + bsize < ahi && bj + bsize < bhi && a[bi + bsize] == b[bj + bsize]) ++bsize;
  };
  int64_t matches = 0;
  struct Range {
    int alo, ahi, blo, bhi;
  };
  std::vector<Range> queue = {{0, static_cast<int>(la), 0, static_cast<int>(lb)}};
  while (!queue.empty()) {
    const Range r = queue.back();
    queue.pop_back();
    int i = 0, j = 0, k = 0;
    longest(r.alo, r.ahi, r.blo, r.bhi, i, j, k);
    if (k == 0) continue;
    matches += k;
    if (r.alo < i && r.blo < j) queue.push_back({r.alo, i, r.blo, j});
    if (i + k < r.ahi && j + k < r.bhi) queue.push_back({i + k, r.ahi, j + k, r.bhi});
  }
  return 2.0 * static_cast<double>(matches) / static_cast<double>(la + lb);
}

int fuzz_ratio(std::string_view a, std::string_view b) {
  if (a == b) return 100;                // check_for_equivalence
  if (a.empty() || b.empty()) return 0;  // check_empty_string
  const double r = sequence_matcher_ratio(utf8_to_u32(a), utf8_to_u32(b));
  return static_cast<int>(std::nearbyint(100 * r));  // Python round(): half to even
}

double code_sim_score(std::string_view prediction, std::string_view ground_truth) {
  std::string_view p = prediction;
  while (!p.empty() && p.front() == '\n') p.remove_prefix(1);
  std::string chosen;
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find('\n', start);
    if (end == std::string_view::npos) end = p.size();
    const std::string_view line = p.substr(start, end - start);
    if (line.find('`') == std::string_view::npos && line.find('#') == std::string_view::npos &&
        line.find("//") == std::string_view::npos) {
      chosen = std::string(line);
      break;
    }
    start = end + 1;
  }
  return fuzz_ratio(chosen, ground_truth) / 100.0;
}

double classification_score(std::string_view prediction, std::string_view ground_truth,
                            const std::vector<std::string>& all_classes) {
  std::vector<std::string> matched;
  for (const std::string& c : all_classes) {
    if (prediction.find(c) != std::string_view::npos) matched.push_back(c);
  }
  // Python removes from the list it iterates: list.remove drops the first equal element (at or
  // before the iterator), the rest slides left and the iterator's next index skips one element.
  for (size_t i = 0; i < matched.size(); ++i) {
    const std::string term = matched[i];
    if (ground_truth.find(term) != std::string_view::npos && term != ground_truth) {
      matched.erase(std::find(matched.begin(), matched.end(), term));
    }
  }
  if (std::find(matched.begin(), matched.end(), std::string(ground_truth)) == matched.end()) {
    return 0.0;
  }
  return 1.0 / static_cast<double>(matched.size());
}

double count_score(std::string_view prediction, std::string_view ground_truth) {
  const auto numbers = find_digit_runs(utf8_to_u32(prediction));
  const U32 truth = utf8_to_u32(ground_truth);
  int right = 0;
  for (const U32& n : numbers)
    if (n == truth) ++right;
  return numbers.empty() ? 0.0 : static_cast<double>(right) / static_cast<double>(numbers.size());
}

namespace {
// First `prefix` + \d+ in the truth; empty when absent.
U32 paragraph_id(std::u32string_view truth, std::u32string_view prefix) {
  size_t at = 0;
  while ((at = truth.find(prefix, at)) != std::u32string_view::npos) {
    size_t j = at + prefix.size();
    size_t k = j;
    while (k < truth.size() && py_isdecimal(truth[k])) ++k;
    if (k > j) return U32(truth.substr(j, k - j));
    ++at;
  }
  return U32();
}
Expected<double> retrieval_with(std::string_view prediction, std::string_view ground_truth,
                                std::u32string_view prefix) {
  const U32 id = paragraph_id(utf8_to_u32(ground_truth), prefix);
  if (id.empty()) {
    return Status::error(strfmt("retrieval answer '%.*s' names no '%s<number>'",
                                static_cast<int>(ground_truth.size()), ground_truth.data(),
                                u32_to_utf8(prefix).c_str()));
  }
  const auto numbers = find_digit_runs(utf8_to_u32(prediction));
  int right = 0;
  for (const U32& n : numbers)
    if (n == id) ++right;
  return numbers.empty() ? 0.0 : static_cast<double>(right) / static_cast<double>(numbers.size());
}
}  // namespace

Expected<double> retrieval_score(std::string_view prediction, std::string_view ground_truth) {
  return retrieval_with(prediction, ground_truth, U"Paragraph ");
}
Expected<double> retrieval_zh_score(std::string_view prediction, std::string_view ground_truth) {
  return retrieval_with(prediction, ground_truth, U"段落");
}

double string_match_all(std::string_view prediction, const std::vector<std::string>& references) {
  if (references.empty()) return 0.0;
  // RULER postprocess_pred: strip, control characters (\x00-\x1f) to '\n', strip again.
  U32 p = utf8_to_u32(prediction);
  for (char32_t& c : p)
    if (c < 0x20) c = U'\n';
  auto strip = [](U32 s) {
    size_t a = 0, b = s.size();
    while (a < b && py_isspace(s[a])) ++a;
    while (b > a && py_isspace(s[b - 1])) --b;
    return s.substr(a, b - a);
  };
  const U32 lower = py_lower(strip(p));
  double hits = 0;
  for (const std::string& r : references) {
    if (contains(lower, py_lower(utf8_to_u32(r)))) hits += 1.0;
  }
  return hits / static_cast<double>(references.size());
}

double needle_score(std::string_view prediction, std::string_view expected_answer) {
  auto words = [](std::string_view text) {
    U32 s = py_lower(utf8_to_u32(text));
    for (char32_t& c : s)
      if (is_ascii_punct(c)) c = U' ';
    return py_split(s);
  };
  const auto expected = words(expected_answer);
  if (expected.empty()) return 0.0;
  const auto got = words(prediction);
  const std::unordered_set<U32> got_set(got.begin(), got.end());
  int found = 0;
  for (const U32& w : expected)
    if (got_set.count(w)) ++found;
  return static_cast<double>(found) / static_cast<double>(expected.size());
}

const char* metric_name(Metric m) {
  switch (m) {
    case Metric::kQaF1:
      return "qa_f1";
    case Metric::kQaF1Zh:
      return "qa_f1_zh";
    case Metric::kRouge:
      return "rouge";
    case Metric::kRougeZh:
      return "rouge_zh";
    case Metric::kClassification:
      return "classification";
    case Metric::kRetrieval:
      return "retrieval";
    case Metric::kRetrievalZh:
      return "retrieval_zh";
    case Metric::kCount:
      return "count";
    case Metric::kCodeSim:
      return "code_sim";
    case Metric::kStringMatchAll:
      return "string_match_all";
    case Metric::kNeedle:
      return "needle";
  }
  return "?";
}

bool metric_needs_jieba(Metric m) { return m == Metric::kQaF1Zh || m == Metric::kRougeZh; }

Expected<double> score_sample(Metric m, std::string_view prediction,
                              const std::vector<std::string>& answers,
                              const std::vector<std::string>& all_classes, bool first_line_only,
                              const Jieba* jb) {
  if (metric_needs_jieba(m) && jb == nullptr) {
    return Status::error(strfmt("metric %s needs the jieba dictionary", metric_name(m)));
  }
  if (m == Metric::kStringMatchAll) return string_match_all(prediction, answers);
  if (m == Metric::kNeedle) {
    if (answers.empty()) return Status::error("needle sample without an expected answer");
    return needle_score(prediction, answers[0]);
  }
  std::string pred(prediction);
  if (first_line_only) {
    // prediction.lstrip('\n').split('\n')[0]
    size_t a = pred.find_first_not_of('\n');
    pred = a == std::string::npos ? std::string() : pred.substr(a);
    pred = pred.substr(0, pred.find('\n'));
  }
  double best = 0.0;
  for (const std::string& gt : answers) {
    double s = 0.0;
    switch (m) {
      case Metric::kQaF1:
        s = qa_f1_score(pred, gt);
        break;
      case Metric::kQaF1Zh:
        s = qa_f1_zh_score(pred, gt, *jb);
        break;
      case Metric::kRouge:
        s = rouge_score(pred, gt);
        break;
      case Metric::kRougeZh:
        s = rouge_zh_score(pred, gt, *jb);
        break;
      case Metric::kClassification:
        s = classification_score(pred, gt, all_classes);
        break;
      case Metric::kCount:
        s = count_score(pred, gt);
        break;
      case Metric::kCodeSim:
        s = code_sim_score(pred, gt);
        break;
      case Metric::kRetrieval:
      case Metric::kRetrievalZh: {
        auto r = m == Metric::kRetrieval ? retrieval_score(pred, gt) : retrieval_zh_score(pred, gt);
        if (!r) return r.status();
        s = *r;
        break;
      }
      default:
        break;
    }
    best = std::max(best, s);
  }
  return best;
}

}  // namespace fkv::eval
