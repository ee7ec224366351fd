#include "eval/needle.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/file_io.h"

namespace fkv::eval {

Expected<std::string> read_haystack(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return Status::error("haystack folder " + dir + " does not exist (give --data DIR with *.txt)");
  }
  std::vector<std::string> files;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file() && it->path().extension() == ".txt")
      files.push_back(it->path().string());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) return Status::error("haystack folder " + dir + " has no *.txt files");
  std::string text;
  for (const std::string& f : files) {
    auto t = read_text_file(f, "haystack file");
    if (!t) return t.status();
    text += *t;
  }
  return text;
}

namespace {

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

// The last sentence end (after '.', '!' or '?' followed by whitespace) at or before `pos`.
size_t sentence_boundary_before(const std::string& text, size_t pos) {
  pos = std::min(pos, text.size());
  for (size_t k = pos; k-- > 0;) {
    if ((text[k] == '.' || text[k] == '!' || text[k] == '?') &&
        (k + 1 == text.size() || is_space(text[k + 1]))) {
      return k + 1;
    }
  }
  return 0;
}

EvalSample needle_sample(const NeedleOptions& o, const std::string& haystack, int length,
                         double depth) {
  EvalSample s;
  s.task = strfmt("needle_%d", length);
  s.id = strfmt("L%d_d%g", length, depth);
  s.system =
      "You are a helpful AI bot that answers questions for a user. Keep your response short "
      "and direct.";
  s.context = haystack + "\n\n";
  s.question = o.question + " Don't give information outside the document or repeat your findings.";
  s.answers = {o.answer};
  s.max_new_tokens = o.max_new_tokens;
  s.metric = Metric::kNeedle;
  s.length = length;
  s.depth = depth;
  return s;
}

}  // namespace

Expected<std::vector<EvalSample>> make_needle_samples(const Tokenizer& tok,
                                                      const NeedleOptions& opts,
                                                      const PromptBuildOptions& popts) {
  if (opts.lengths.empty() || opts.depths.empty()) {
    return Status::error("needle: give at least one length and one depth");
  }
  for (double d : opts.depths) {
    if (!(d >= 0 && d <= 100))
      return Status::error(strfmt("needle: depth %g is outside 0..100", d));
  }
  auto haystack = read_haystack(opts.haystack_dir);
  if (!haystack) return haystack.status();
  const int max_len = *std::max_element(opts.lengths.begin(), opts.lengths.end());
  // Enough text for the longest prompt (8 bytes per token is generous for every tokenizer).
  std::string text =
      haystack->substr(0, std::min(haystack->size(), static_cast<size_t>(max_len) * 8));
  std::vector<int32_t> hay_ids = tok.encode(text, /*add_special_tokens=*/false);
  if (static_cast<int>(hay_ids.size()) < max_len && text.size() < haystack->size()) {
    hay_ids = tok.encode(*haystack, false);
  }
  std::vector<EvalSample> out;
  for (int length : opts.lengths) {
    // Tokens the template, question and needle take with an empty haystack.
    EvalSample probe = needle_sample(opts, opts.needle, length, 0);
    auto base = build_prompt(tok, probe, popts);
    if (!base) return base.status();
    const int overhead = static_cast<int>(base->ids.size());
    if (length - overhead < 16) {
      return Status::error(
          strfmt("needle: length %d is too short: the template, question and needle "
                 "already take %d tokens",
                 length, overhead));
    }
    if (length - overhead > static_cast<int>(hay_ids.size())) {
      return Status::error(strfmt("needle: the haystack has only %zu tokens, length %d needs %d",
                                  hay_ids.size(), length, length - overhead));
    }
    for (double depth : opts.depths) {
      int budget = length - overhead;
      EvalSample s;
      for (int attempt = 0; attempt < 8; ++attempt) {
        std::vector<int32_t> cut(hay_ids.begin(), hay_ids.begin() + budget);
        const std::string hay = tok.decode(cut, /*skip_special_tokens=*/true);
        // Character offset of the depth: the decoded length of the token prefix.
        const int at_tok = static_cast<int>(std::lround(depth / 100.0 * budget));
        std::vector<int32_t> prefix(cut.begin(), cut.begin() + at_tok);
        const std::string before = tok.decode(prefix, true);
        size_t pos = hay.compare(0, before.size(), before) == 0
                         ? before.size()
                         : static_cast<size_t>(depth / 100.0 * static_cast<double>(hay.size()));
        std::string with_needle;
        if (depth >= 100) {
          with_needle = hay + " " + opts.needle;
        } else {
          pos = sentence_boundary_before(hay, pos);
          with_needle = pos == 0 ? opts.needle + " " + hay
                                 : hay.substr(0, pos) + " " + opts.needle + hay.substr(pos);
        }
        s = needle_sample(opts, with_needle, length, depth);
        auto built = build_prompt(tok, s, popts);
        if (!built) return built.status();
        const int excess = static_cast<int>(built->ids.size()) - length;
        if (excess <= 0) break;
        budget -= excess;
      }
      out.push_back(std::move(s));
    }
  }
  return out;
}

}  // namespace fkv::eval
