// RULER (Hsieh et al. 2024) synthetic tasks: a seeded generator for the 11 retrieval, tracing and
// aggregation tasks at any length in the model's tokens, following RULER's templates, sizing
// loop and jsonl format ({index, input, outputs, length}), and a reader for RULER jsonl files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "eval/samples.h"
#include "tokenizer/tokenizer.h"

namespace fkv::eval {

// niah_single_1/2/3, niah_multikey_1/2/3, niah_multiquery, niah_multivalue, vt, cwe, fwe.
const std::vector<std::string>& ruler_tasks();

struct RulerRow {
  int index = 0;
  std::string input;  // template + answer prefix, as RULER writes it
  std::vector<std::string> outputs;
  int length = 0;  // tokens of input (no special tokens) + the task's tokens_to_generate
  // The same input in protocol parts: context (instructions + haystack), question, answer prefix.
  std::string context, question, answer_prefix;
};

// `essays`: the essay haystack (niah_single_2/3, multikey_1, multivalue, multiquery). Reproducible:
// the same (task, length, samples, seed, tokenizer) gives the same rows on every machine.
Expected<std::vector<RulerRow>> generate_ruler_task(const Tokenizer& tok, const std::string& task,
                                                    int max_seq_length, int samples, uint64_t seed,
                                                    const std::string& essays);
// One jsonl line in RULER's format.
std::string ruler_row_json(const RulerRow& row);

// Rows -> samples (chat, 64 new tokens, string_match_all).
std::vector<EvalSample> ruler_samples(const std::string& task, int length,
                                      const std::vector<RulerRow>& rows, int max_new_tokens);
// RULER jsonl files a user brings: the task is the file stem without a trailing _<length>
// ("niah_multikey_3_4096"); the answer prefix is split off the input's last line.
Expected<std::vector<EvalSample>> read_ruler_files(const std::vector<JsonlFile>& files,
                                                   const std::vector<std::string>& tasks,
                                                   int samples, int max_new_tokens);

}  // namespace fkv::eval
