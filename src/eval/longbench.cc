#include "eval/longbench.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <utility>

#include "core/json_excerpt.h"
#include "core/utf8.h"

namespace fkv::eval {

// The prompts are LongBench's config/dataset2prompt.json verbatim (they are part of the
// benchmark's definition; "asconcisely" is LongBench's own spelling).
const std::vector<LongBenchTask>& longbench_tasks() {
  using M = Metric;
  static const std::vector<LongBenchTask> t = {
      {"narrativeqa",
       "You are given a story, which can be either a novel or a movie script, and a question. "
       "Answer the question asconcisely as you can, using a single phrase if possible. Do not "
       "provide any explanation.\n\nStory: {context}\n\nNow, answer the question based on the "
       "story asconcisely as you can, using a single phrase if possible. Do not provide any "
       "explanation.\n\nQuestion: {input}\n\nAnswer:",
       128, M::kQaF1, true, false},
      {"qasper",
       "You are given a scientific article and a question. Answer the question as concisely as "
       "you can, using a single phrase or sentence if possible. If the question cannot be "
       "answered based on the information in the article, write \"unanswerable\". If the "
       "question is a yes/no question, answer \"yes\", \"no\", or \"unanswerable\". Do not "
       "provide any explanation.\n\nArticle: {context}\n\n Answer the question based on the "
       "above article as concisely as you can, using a single phrase or sentence if possible. "
       "If the question cannot be answered based on the information in the article, write "
       "\"unanswerable\". If the question is a yes/no question, answer \"yes\", \"no\", or "
       "\"unanswerable\". Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:",
       128, M::kQaF1, true, false},
      {"multifieldqa_en",
       "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following "
       "question based on the above text, only give me the answer and do not output any other "
       "words.\n\nQuestion: {input}\nAnswer:",
       64, M::kQaF1, true, false},
      {"multifieldqa_zh",
       "阅读以下文字并用中文简短回答：\n\n{context}"
       "\n\n现在请基于上面的文章回答下面的问题，只告诉我答案，"
       "不要输出任何其他字词。\n\n问题：{input}\n回答：",
       64, M::kQaF1Zh, true, false},
      {"hotpotqa",
       "Answer the question based on the given passages. Only give me the answer and do not "
       "output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the "
       "question based on the given passages. Only give me the answer and do not output any "
       "other words.\n\nQuestion: {input}\nAnswer:",
       32, M::kQaF1, true, false},
      {"2wikimqa",
       "Answer the question based on the given passages. Only give me the answer and do not "
       "output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the "
       "question based on the given passages. Only give me the answer and do not output any "
       "other words.\n\nQuestion: {input}\nAnswer:",
       32, M::kQaF1, true, false},
      {"musique",
       "Answer the question based on the given passages. Only give me the answer and do not "
       "output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the "
       "question based on the given passages. Only give me the answer and do not output any "
       "other words.\n\nQuestion: {input}\nAnswer:",
       32, M::kQaF1, true, false},
      {"dureader",
       "请基于给定的文章回答下述问题。\n\n文章：{context}"
       "\n\n请基于上述文章回答下面的问题。\n\n问题：{input}\n"
       "回答：",
       128, M::kRougeZh, true, false},
      {"gov_report",
       "You are given a report by a government agency. Write a one-page summary of the "
       "report.\n\nReport:\n{context}\n\nNow, write a one-page summary of the report.\n\nSummary:",
       512, M::kRouge, true, false},
      {"qmsum",
       "You are given a meeting transcript and a query containing a question or instruction. "
       "Answer the query in one or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the "
       "query based on the above meeting transcript in one or more sentences.\n\nQuery: "
       "{input}\nAnswer:",
       512, M::kRouge, true, false},
      {"multi_news",
       "You are given several news passages. Write a one-page summary of all news. "
       "\n\nNews:\n{context}\n\nNow, write a one-page summary of all the news.\n\nSummary:",
       512, M::kRouge, true, false},
      {"vcsum",
       "下面有一段会议记录，请你阅读后，写一段总结，总结会议的内容。\n会议记录：\n{context}"
       "\n\n会议总结：",
       512, M::kRougeZh, true, false},
      {"trec",
       "Please determine the type of the question below. Here are some examples of "
       "questions.\n\n{context}\n{input}",
       64, M::kClassification, false, true},
      {"triviaqa",
       "Answer the question based on the given passage. Only give me the answer and do not "
       "output any other words. The following are some examples.\n\n{context}\n\n{input}",
       32, M::kQaF1, false, true},
      {"samsum",
       "Summarize the dialogue into a few short sentences. The following are some "
       "examples.\n\n{context}\n\n{input}",
       128, M::kRouge, false, true},
      {"lsht", "请判断给定新闻的类别，下面是一些例子。\n\n{context}\n{input}", 64,
       M::kClassification, false, true},
      {"passage_count",
       "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. "
       "Please carefully read these paragraphs and determine how many unique paragraphs there "
       "are after removing duplicates. In other words, how many non-repeating paragraphs are "
       "there in total?\n\n{context}\n\nPlease enter the final count of unique paragraphs after "
       "removing duplicates. The output format should only contain the number, such as 1, 2, 3, "
       "and so on.\n\nThe final answer is: ",
       32, M::kCount, true, false},
      {"passage_retrieval_en",
       "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which "
       "paragraph the abstract is from.\n\n{context}\n\nThe following is an "
       "abstract.\n\n{input}\n\nPlease enter the number of the paragraph that the abstract is "
       "from. The answer format must be like \"Paragraph 1\", \"Paragraph 2\", etc.\n\nThe "
       "answer is: ",
       32, M::kRetrieval, true, false},
      {"passage_retrieval_zh",
       "以下是若干段落文字，以及其中一个段落的摘要。请确定给定的摘要出自哪一段。\n\n{context}"
       "\n\n下面是一个摘要\n\n{"
       "input}\n\n请输入摘要所属段落的编号。答案格式必须是\"段落1\"，\"段落2\"等格式\n\n答案是：",
       32, M::kRetrievalZh, true, false},
      {"lcc", "Please complete the code given below. \n{context}Next line of code:\n", 64,
       M::kCodeSim, false, false},
      {"repobench-p",
       "Please complete the code given below. \n{context}{input}Next line of code:\n", 64,
       M::kCodeSim, false, false},
  };
  return t;
}

const LongBenchTask* find_longbench_task(const std::string& dataset) {
  std::string name = dataset;
  if (name.size() > 2 && name.ends_with("_e")) name.resize(name.size() - 2);  // LongBench-E
  for (const LongBenchTask& t : longbench_tasks()) {
    if (name == t.name) return &t;
  }
  return nullptr;
}

namespace {
std::string replace_once(std::string s, const std::string& key, const std::string& value) {
  const size_t at = s.find(key);
  if (at != std::string::npos) s.replace(at, key.size(), value);
  return s;
}
}  // namespace

Expected<std::vector<EvalSample>> read_longbench_files(const std::vector<JsonlFile>& files,
                                                       const std::vector<std::string>& tasks,
                                                       int samples) {
  std::vector<EvalSample> out;
  std::map<std::string, int> taken_of;  // samples taken per task (a file may mix tasks)
  std::map<std::string, int> rows_of;   // rows seen per task (the id of a row without _id)
  // Where each (task, id) was first seen: results and resume are keyed by task + id, so a second
  // row with the same id would be scored twice or skipped on resume.
  std::map<std::pair<std::string, std::string>, std::pair<const std::string*, int>> first_at;
  for (const JsonlFile& f : files) {
    for (const auto& [lineno, line] : f.lines) {
      auto where = [&, lineno = lineno](const std::string& what) {
        return Status::error(strfmt("%s:%d: %s", f.path.c_str(), lineno, what.c_str()));
      };
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object()) return where("not a JSON object");
      // A present field of the wrong type is named with what it holds (it is not "missing").
      auto wrong_type = [&](const char* field, const char* expected) {
        return where(strfmt("field '%s' must be %s, got %s", field, expected,
                            json_excerpt(j[field]).c_str()));
      };
      if (j.contains("dataset") && !j["dataset"].is_string())
        return wrong_type("dataset", "a string");
      const std::string dataset = j.contains("dataset") ? j["dataset"].get<std::string>() : f.stem;
      if (!tasks.empty() && std::find(tasks.begin(), tasks.end(), dataset) == tasks.end()) continue;
      if (j.contains("_id") && !j["_id"].is_string()) return wrong_type("_id", "a string");
      int& row = rows_of[dataset];
      const std::string id = j.contains("_id") ? j["_id"].get<std::string>() : std::to_string(row);
      ++row;
      const auto [seen, fresh] = first_at.emplace(
          std::make_pair(dataset, id), std::make_pair(&f.path, static_cast<int>(lineno)));
      if (!fresh) {
        return where(
            strfmt("duplicate _id '%s' in task '%s' (first at %s:%d); each row of a task "
                   "needs its own _id",
                   escape_for_message(id).c_str(), escape_for_message(dataset).c_str(),
                   seen->second.first->c_str(), seen->second.second));
      }
      int& taken = taken_of[dataset];
      if (samples > 0 && taken >= samples) continue;
      const LongBenchTask* task = find_longbench_task(dataset);
      if (task == nullptr) return where("unknown LongBench dataset '" + dataset + "'");
      for (const char* field : {"context", "input"}) {
        if (!j.contains(field))
          return where(std::string("missing field '") + field + "' (a string)");
        if (!j[field].is_string()) return wrong_type(field, "a string");
      }
      if (!j.contains("answers"))
        return where("missing field 'answers' (a non-empty array of strings)");
      if (!j["answers"].is_array() || j["answers"].empty())
        return wrong_type("answers", "a non-empty array of strings");
      EvalSample s;
      s.task = dataset;
      s.id = id;
      for (size_t i = 0; i < j["answers"].size(); ++i) {
        const auto& a = j["answers"][i];
        if (!a.is_string()) {
          return where(strfmt("field 'answers' item %zu must be a string, got %s", i,
                              json_excerpt(a).c_str()));
        }
        s.answers.push_back(a.get<std::string>());
      }
      // all_classes is null in the official files for every task but trec and lsht.
      if (j.contains("all_classes") && !j["all_classes"].is_null()) {
        if (!j["all_classes"].is_array()) {
          return wrong_type("all_classes", "an array of strings or null");
        }
        for (size_t i = 0; i < j["all_classes"].size(); ++i) {
          const auto& c = j["all_classes"][i];
          if (!c.is_string()) {
            return where(strfmt("field 'all_classes' item %zu must be a string, got %s", i,
                                json_excerpt(c).c_str()));
          }
          s.all_classes.push_back(c.get<std::string>());
        }
      }
      if (task->metric == Metric::kClassification && s.all_classes.empty())
        return where("classification task without 'all_classes'");
      if (task->metric == Metric::kRetrieval || task->metric == Metric::kRetrievalZh) {
        for (const std::string& a : s.answers) {
          auto ok = task->metric == Metric::kRetrieval ? retrieval_score("", a)
                                                       : retrieval_zh_score("", a);
          if (!ok) return where(ok.error());
        }
      }
      // The prompt up to the end of {context} is the context part; the rest (with {input}) is
      // the question.
      const std::string prompt = task->prompt;
      const size_t ctx_end = prompt.find("{context}") + std::string("{context}").size();
      s.context =
          replace_once(prompt.substr(0, ctx_end), "{context}", j["context"].get<std::string>());
      s.question = replace_once(prompt.substr(ctx_end), "{input}", j["input"].get<std::string>());
      s.chat = task->chat;
      s.max_new_tokens = task->max_new_tokens;
      s.metric = task->metric;
      s.first_line_only = task->first_line_only;
      s.stop_on_newline = dataset == "samsum";
      out.push_back(std::move(s));
      ++taken;
    }
  }
  if (out.empty()) {
    std::string names, paths;
    for (const auto& t : tasks) names += (names.empty() ? "" : ",") + t;
    for (const auto& f : files) paths += (paths.empty() ? "" : ", ") + f.path;
    return Status::error("LongBench: no samples of --tasks " + names + " in " + paths);
  }
  return out;
}

}  // namespace fkv::eval
