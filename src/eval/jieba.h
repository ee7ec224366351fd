// Chinese word segmentation with jieba's default mode (jieba.cut(s, cut_all=False, HMM=True)),
// the segmentation LongBench's Chinese metrics (qa_f1_zh, rouge_zh) are defined by. jieba's data
// is read at run time from an installed jieba (Debian python3-jieba or pip jieba: dict.txt and
// finalseg/prob_{start,trans,emit}.py); it is never copied into the repository.
//
// Algorithm (jieba 0.42): the text is split into runs of [\u4E00-\u9FD5a-zA-Z0-9+#&._%-] and the
// rest; a run is segmented by a DAG of dictionary words over a prefix dictionary, the route of
// maximum log frequency (ties: the longer word), and consecutive single characters that do not
// form a dictionary word go through the BMES HMM (Viterbi). Outside runs, "\r\n" and each
// whitespace character are tokens, every other character is its own token.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace fkv::eval {

class Jieba {
 public:
  // `dir` holds dict.txt and finalseg/prob_*.py (the jieba package folder).
  static Expected<std::unique_ptr<Jieba>> load(const std::string& dir);
  ~Jieba();
  std::vector<std::string> cut(std::string_view text) const;

 private:
  Jieba();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// $FASTKV_JIEBA_DIR when set, else the first of the Debian and common pip locations that holds
// dict.txt (the Debian path when none does, so that the error names it).
std::string default_jieba_dir();

// Loads the dictionary of `dir` (empty: default_jieba_dir()) once per process (thread-safe) and
// returns it; a missing dictionary is an error that says how to install it.
Expected<const Jieba*> shared_jieba(const std::string& dir = "");

}  // namespace fkv::eval
