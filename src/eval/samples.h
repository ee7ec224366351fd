// What every benchmark family produces: samples (prompt parts, references, metric, output
// budget), and how a sample becomes token ids for either protocol.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "eval/metrics.h"
#include "tokenizer/tokenizer.h"

namespace fkv::eval {

enum class Family { kNeedle, kRuler, kLongBench };
const char* family_name(Family f);
Expected<Family> parse_family(const std::string& name);

// The user message is context + question. Under the joint protocol both are prefilled together;
// under context-first only the context is prefilled (and compressed), the question is appended
// with Session::extend. answer_prefix (RULER) follows the assistant header.
struct EvalSample {
  std::string task;
  std::string id;      // unique within the task
  std::string system;  // system message (chat only; empty: none)
  std::string context;
  std::string question;
  std::string answer_prefix;
  bool chat = true;  // the protocol wraps the prompt in the chat template
  std::vector<std::string> answers;
  std::vector<std::string> all_classes;
  int max_new_tokens = 32;
  Metric metric = Metric::kQaF1;
  bool first_line_only = false;  // LongBench trec/triviaqa/samsum/lsht
  bool stop_on_newline = false;  // LongBench samsum: "\n" ends the answer too
  int length = 0;                // requested length in tokens (needle, RULER); 0: none
  double depth = -1;             // needle depth in percent; < 0: none
};

struct PromptBuildOptions {
  bool chat = true;           // false: never apply a chat template (--chat off)
  std::string chat_template;  // template source overriding the model's (empty: the model's)
  int max_prompt_tokens = 0;  // LongBench middle truncation of the user text (0: none)
  int context_limit = 0;      // the model's context: prompt + new tokens must fit (0: none)
};

struct PromptTokens {
  std::vector<int32_t> ids;  // the whole prompt
  int context_len = 0;       // ids[0, context_len) is the context part, the rest the question
  bool truncated = false;
};

// Renders (chat template when sample.chat && opts.chat), truncates and tokenizes the sample.
// The context and question are tokenized separately at the split so that both protocols see
// the same ids; the question part always has at least one token.
Expected<PromptTokens> build_prompt(const Tokenizer& tok, const EvalSample& sample,
                                    const PromptBuildOptions& opts);

// Jsonl rows of a file or every *.jsonl of a folder (sorted by name); each row with its source.
struct JsonlFile {
  std::string path;
  std::string stem;  // file name without .jsonl
  std::vector<std::pair<int, std::string>>
      lines;  // (1-based line number, text), blank lines skipped
};
Expected<std::vector<JsonlFile>> read_jsonl_inputs(const std::string& path);

}  // namespace fkv::eval
