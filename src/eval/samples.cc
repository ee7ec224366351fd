#include "eval/samples.h"

#include <algorithm>
#include <filesystem>

#include "chat/chat_template.h"
#include "core/file_io.h"
#include "engine/app.h"

namespace fkv::eval {

const char* family_name(Family f) {
  switch (f) {
    case Family::kNeedle:
      return "needle";
    case Family::kRuler:
      return "ruler";
    case Family::kLongBench:
      return "longbench";
  }
  return "?";
}

Expected<Family> parse_family(const std::string& name) {
  if (name == "needle") return Family::kNeedle;
  if (name == "ruler") return Family::kRuler;
  if (name == "longbench") return Family::kLongBench;
  return Status::error("unknown benchmark family '" + name + "' (needle, ruler, longbench)");
}

namespace {

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  const size_t b = s.find_last_not_of(" \t\r\n");
  return s.substr(a, b - a + 1);
}

// Keeps the first and last halves of `ids` (LongBench's middle truncation).
std::vector<int32_t> middle_truncate(const std::vector<int32_t>& ids, size_t keep) {
  const size_t half = keep / 2;
  std::vector<int32_t> out(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(half));
  out.insert(out.end(), ids.end() - static_cast<std::ptrdiff_t>(half), ids.end());
  return out;
}

}  // namespace

Expected<PromptTokens> build_prompt(const Tokenizer& tok, const EvalSample& sample,
                                    const PromptBuildOptions& opts) {
  PromptTokens out;
  std::string context = sample.context;
  std::string question = sample.question;
  // LongBench: tokenize the user text, keep first and last halves, decode (specials skipped).
  if (opts.max_prompt_tokens > 0) {
    const std::vector<int32_t> ids = tok.encode(context + question, /*add_special_tokens=*/true);
    if (ids.size() > static_cast<size_t>(opts.max_prompt_tokens)) {
      const size_t half = static_cast<size_t>(opts.max_prompt_tokens) / 2;
      std::vector<int32_t> head(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(half));
      std::vector<int32_t> tail(ids.end() - static_cast<std::ptrdiff_t>(half), ids.end());
      const std::string text = tok.decode(head, true) + tok.decode(tail, true);
      out.truncated = true;
      // The question sits at the end; find it again to keep the protocol split.
      const size_t at = question.empty() ? std::string::npos : text.rfind(question);
      if (at != std::string::npos) {
        context = text.substr(0, at);
        question = text.substr(at);
      } else {
        context = text;
        question.clear();
      }
    }
  }
  const bool chat = sample.chat && opts.chat;
  std::string rendered;
  if (chat) {
    std::vector<ChatMessage> msgs;
    if (!sample.system.empty()) msgs.push_back({"system", sample.system});
    msgs.push_back({"user", context + question});
    auto r = render_chat(tok, msgs, opts.chat_template, /*add_generation_prompt=*/true);
    if (!r) return r.status();
    rendered = *r + sample.answer_prefix;
  } else {
    rendered = context + question + sample.answer_prefix;
  }
  // Split where the question starts (templates may trim the message, so search its trimmed
  // form); tokenize both sides separately.
  const std::string key = trim(question);
  size_t split = key.empty() ? std::string::npos : rendered.rfind(key);
  if (split == std::string::npos) split = rendered.size();
  std::vector<int32_t> ctx_ids =
      tok.encode(rendered.substr(0, split), /*add_special_tokens=*/!chat);
  std::vector<int32_t> q_ids = tok.encode(rendered.substr(split), /*add_special_tokens=*/false);
  if (ctx_ids.empty() && tok.bos_id() >= 0) ctx_ids.push_back(tok.bos_id());
  if (q_ids.empty()) {
    if (ctx_ids.size() < 2) return Status::error(sample.task + "/" + sample.id + ": empty prompt");
    q_ids.push_back(ctx_ids.back());
    ctx_ids.pop_back();
  }
  // The model's window: prompt + answer must fit; cut the middle of the context further.
  if (opts.context_limit > 0) {
    const int64_t room = static_cast<int64_t>(opts.context_limit) - sample.max_new_tokens -
                         static_cast<int64_t>(q_ids.size());
    if (room < 16) {
      return Status::error(
          strfmt("%s/%s: the question (%zu tokens) and %d new tokens do not fit "
                 "the model's %d-token context",
                 sample.task.c_str(), sample.id.c_str(), q_ids.size(), sample.max_new_tokens,
                 opts.context_limit));
    }
    if (static_cast<int64_t>(ctx_ids.size()) > room) {
      ctx_ids = middle_truncate(ctx_ids, static_cast<size_t>(room));
      out.truncated = true;
    }
  }
  out.context_len = static_cast<int>(ctx_ids.size());
  out.ids = std::move(ctx_ids);
  out.ids.insert(out.ids.end(), q_ids.begin(), q_ids.end());
  return out;
}

Expected<std::vector<JsonlFile>> read_jsonl_inputs(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<std::string> files;
  if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::directory_iterator(path, ec)) {
      if (e.is_regular_file() && e.path().extension() == ".jsonl")
        files.push_back(e.path().string());
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) return Status::error("--data " + path + ": the folder has no *.jsonl files");
  } else if (fs::exists(path, ec)) {
    files.push_back(path);
  } else {
    return Status::error("--data " + path + ": no such file or folder");
  }
  std::vector<JsonlFile> out;
  for (const std::string& f : files) {
    auto text = read_text_file(f, "--data file", /*allow_empty=*/false);
    if (!text) return text.status();
    JsonlFile jf;
    jf.path = f;
    jf.stem = fs::path(f).stem().string();
    size_t start = 0;
    int lineno = 0;
    while (start < text->size()) {
      ++lineno;
      size_t end = text->find('\n', start);
      if (end == std::string::npos) end = text->size();
      std::string line = text->substr(start, end - start);
      if (!trim(line).empty()) jf.lines.emplace_back(lineno, std::move(line));
      start = end + 1;
    }
    out.push_back(std::move(jf));
  }
  return out;
}

}  // namespace fkv::eval
