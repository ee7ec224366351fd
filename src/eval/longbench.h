// LongBench (Bai et al. 2023): the official jsonl rows, the standard per-task prompts
// (dataset2prompt.json), output lengths (dataset2maxlen.json), metrics (dataset2metric), and which
// tasks skip the chat template (trec, triviaqa, samsum, lsht, lcc, repobench-p), as pred.py /
// eval.py use them.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"
#include "eval/samples.h"

namespace fkv::eval {

struct LongBenchTask {
  const char* name;
  const char* prompt;  // with {context} and {input}
  int max_new_tokens;
  Metric metric;
  bool chat;             // pred.py's build_chat applies
  bool first_line_only;  // eval.py cuts the prediction to its first line
};
const std::vector<LongBenchTask>& longbench_tasks();
// The task of a dataset name ("multi_news", or LongBench-E's "multi_news_e"); null if unknown.
const LongBenchTask* find_longbench_task(const std::string& dataset);

// Rows of the official files; the task is the row's "dataset" field (else the file stem).
Expected<std::vector<EvalSample>> read_longbench_files(const std::vector<JsonlFile>& files,
                                                       const std::vector<std::string>& tasks,
                                                       int samples);

}  // namespace fkv::eval
