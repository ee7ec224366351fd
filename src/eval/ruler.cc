#include "eval/ruler.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/json_excerpt.h"

namespace fkv::eval {
namespace {

// Deterministic on every platform (std:: distributions are not): splitmix64.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t n) { return next() % n; }
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }
  // k distinct indices of [0, n), in draw order.
  std::vector<int> sample(int n, int k) {
    std::vector<int> all(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
    for (int i = 0; i < k; ++i)
      std::swap(all[static_cast<size_t>(i)],
                all[static_cast<size_t>(i) + below(static_cast<uint64_t>(n - i))]);
    all.resize(static_cast<size_t>(k));
    return all;
  }

 private:
  uint64_t s_;
};

uint64_t mix_seed(uint64_t seed, const std::string& task, int length, int index) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a over the task name
  for (char c : task) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  Rng r(seed ^ h ^ (static_cast<uint64_t>(length) << 20) ^ (static_cast<uint64_t>(index) << 44));
  return r.next();
}

// Word lists for keys ("adjective-noun", as RULER draws them from wonderwords) and for cwe.
const std::vector<std::string>& adjectives() {
  static const std::vector<std::string> v = {
      "abundant", "agreeable",  "amused",    "ancient",  "angry",    "anxious",   "bashful",
      "bitter",   "boundless",  "brave",     "bright",   "broad",    "calm",      "careful",
      "cheerful", "chilly",     "clever",    "cloudy",   "clumsy",   "crooked",   "curious",
      "damp",     "delightful", "dizzy",     "eager",    "elegant",  "empty",     "enormous",
      "fancy",    "fierce",     "fragile",   "friendly", "gentle",   "gifted",    "glossy",
      "graceful", "grumpy",     "handsome",  "helpful",  "hollow",   "humble",    "hungry",
      "icy",      "jolly",      "juicy",     "kind",     "lazy",     "lively",    "lonely",
      "loud",     "lucky",      "massive",   "mellow",   "mighty",   "modern",    "narrow",
      "nervous",  "noisy",      "obedient",  "odd",      "plain",    "polite",    "proud",
      "quaint",   "quick",      "quiet",     "rapid",    "rich",     "rough",     "rustic",
      "scary",    "shiny",      "silent",    "silly",    "sleepy",   "slippery",  "smooth",
      "soft",     "sour",       "sparkling", "spicy",    "splendid", "steady",    "sticky",
      "stormy",   "strange",    "sturdy",    "swift",    "tame",     "tender",    "thirsty",
      "tidy",     "tiny",       "tough",     "vast",     "vivid",    "wandering", "warm",
      "wicked",   "wise",       "witty",     "wooden",   "young",    "zealous"};
  return v;
}
const std::vector<std::string>& nouns() {
  static const std::vector<std::string> v = {
      "anchor",   "apple",    "arrow",    "badge",     "bakery",     "balloon", "banjo",
      "basket",   "beacon",   "blanket",  "bottle",    "bridge",     "bucket",  "cabin",
      "camera",   "candle",   "canyon",   "carpet",    "castle",     "cellar",  "chimney",
      "cloud",    "compass",  "cottage",  "crayon",    "crystal",    "curtain", "desert",
      "diamond",  "dolphin",  "dragon",   "drum",      "eagle",      "engine",  "falcon",
      "feather",  "fiddle",   "forest",   "fountain",  "garden",     "giraffe", "glacier",
      "hammer",   "harbor",   "helmet",   "island",    "jacket",     "jungle",  "kettle",
      "kitten",   "ladder",   "lantern",  "lemon",     "lighthouse", "magnet",  "meadow",
      "mirror",   "mountain", "needle",   "notebook",  "ocean",      "orchard", "otter",
      "paddle",   "panther",  "parrot",   "pebble",    "pencil",     "piano",   "pillow",
      "planet",   "pocket",   "puzzle",   "rabbit",    "raincoat",   "ribbon",  "river",
      "rocket",   "saddle",   "sailboat", "scarecrow", "shadow",     "shovel",  "spider",
      "squirrel", "statue",   "teapot",   "thunder",   "tiger",      "tractor", "trumpet",
      "tunnel",   "umbrella", "valley",   "violin",    "volcano",    "wagon",   "walrus",
      "whistle",  "window",   "wizard",   "zebra"};
  return v;
}

std::string random_word_key(Rng& r) {
  return adjectives()[r.below(adjectives().size())] + "-" + nouns()[r.below(nouns().size())];
}
std::string random_number(Rng& r) { return std::to_string(1000000 + r.below(9000000)); }
std::string random_uuid(Rng& r) {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 32; ++i) {
    int v = static_cast<int>(r.below(16));
    if (i == 12) v = 4;            // version 4
    if (i == 16) v = 8 + (v & 3);  // variant 10xx
    s += hex[v];
    if (i == 7 || i == 11 || i == 15 || i == 19) s += '-';
  }
  return s;
}
std::string random_of(const std::string& type, Rng& r) {
  if (type == "words") return random_word_key(r);
  if (type == "numbers") return random_number(r);
  return random_uuid(r);
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  size_t at = 0;
  while ((at = s.find(from, at)) != std::string::npos) {
    s.replace(at, from.size(), to);
    at += to.size();
  }
}

std::vector<std::string> split_words(const std::string& text) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    size_t j = i;
    while (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j]))) ++j;
    if (j > i) out.push_back(text.substr(i, j - i));
    i = j;
  }
  return out;
}

// Sentences of a text (a sentence ends with '.', '!' or '?' followed by a space).
std::vector<std::string> split_sentences(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t k = 0; k < text.size(); ++k) {
    const char c = text[k];
    if ((c == '.' || c == '!' || c == '?') && (k + 1 == text.size() || text[k + 1] == ' ')) {
      out.push_back(text.substr(start, k + 1 - start));
      start = k + 2;
    }
  }
  if (start < text.size()) out.push_back(text.substr(start));
  return out;
}

struct NiahConfig {
  std::string haystack;  // repeat | essay | needle
  std::string type_k, type_v;
  int num_k = 1, num_v = 1, num_q = 1;
};

const std::map<std::string, NiahConfig>& niah_configs() {
  static const std::map<std::string, NiahConfig> m = {
      {"niah_single_1", {"repeat", "words", "numbers", 1, 1, 1}},
      {"niah_single_2", {"essay", "words", "numbers", 1, 1, 1}},
      {"niah_single_3", {"essay", "words", "uuids", 1, 1, 1}},
      {"niah_multikey_1", {"essay", "words", "numbers", 4, 1, 1}},
      {"niah_multikey_2", {"needle", "words", "numbers", 1, 1, 1}},
      {"niah_multikey_3", {"needle", "uuids", "uuids", 1, 1, 1}},
      {"niah_multivalue", {"essay", "words", "numbers", 1, 4, 1}},
      {"niah_multiquery", {"essay", "words", "numbers", 4, 1, 4}},
  };
  return m;
}

constexpr const char* kNoise =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

// One generated input in protocol parts + references.
struct Generated {
  std::string context, question, answer_prefix;
  std::vector<std::string> outputs;
  std::string input() const { return context + question + answer_prefix; }
};

Generated gen_niah(const NiahConfig& c, int num_haystack, Rng& r,
                   const std::vector<std::string>& essay_words) {
  std::vector<std::string> keys, needles;
  std::vector<std::vector<std::string>> values;
  for (int k = 0; k < c.num_k; ++k) {
    keys.push_back(random_of(c.type_k, r));
    std::vector<std::string> vs;
    for (int v = 0; v < c.num_v; ++v) {
      vs.push_back(random_of(c.type_v, r));
      needles.push_back("One of the special magic " + c.type_v + " for " + keys.back() +
                        " is: " + vs.back() + ".");
    }
    values.push_back(vs);
  }
  r.shuffle(needles);
  std::string context;
  if (c.haystack == "essay") {
    std::string text;
    for (int i = 0; i < num_haystack && i < static_cast<int>(essay_words.size()); ++i) {
      if (i > 0) text += ' ';
      text += essay_words[static_cast<size_t>(i)];
    }
    const std::vector<std::string> sents = split_sentences(text);
    // Depths from RULER's 40-point grid, one per needle.
    std::vector<int> depths;
    for (int i = 0; i < 40; ++i) depths.push_back(static_cast<int>(std::lround(i * 100.0 / 39.0)));
    std::vector<int> pos = {0};
    for (int d : r.sample(40, static_cast<int>(needles.size())))
      pos.push_back(static_cast<int>(static_cast<double>(sents.size()) *
                                     depths[static_cast<size_t>(d)] / 100.0));
    std::sort(pos.begin() + 1, pos.end());
    pos.push_back(static_cast<int>(sents.size()));
    std::vector<std::string> parts;
    for (size_t i = 1; i < pos.size(); ++i) {
      std::string chunk;
      for (int s = pos[i - 1]; s < pos[i]; ++s) {
        if (!chunk.empty()) chunk += ' ';
        chunk += sents[static_cast<size_t>(s)];
      }
      parts.push_back(chunk);
      if (i - 1 < needles.size()) parts.push_back(needles[i - 1]);
    }
    for (size_t i = 0; i < parts.size(); ++i) {
      if (i) context += " ";
      context += parts[i];
    }
  } else {
    std::vector<std::string> sents;
    for (int i = 0; i < num_haystack; ++i) {
      if (c.haystack == "repeat") {
        sents.push_back(kNoise);
      } else {
        sents.push_back("One of the special magic " + c.type_v + " for " + random_of(c.type_k, r) +
                        " is: " + random_of(c.type_v, r) + ".");
      }
    }
    std::vector<int> idx = r.sample(num_haystack, static_cast<int>(needles.size()));
    std::sort(idx.rbegin(), idx.rend());
    for (size_t i = 0; i < idx.size(); ++i) sents.insert(sents.begin() + idx[i], needles[i]);
    for (size_t i = 0; i < sents.size(); ++i) {
      if (i) context += "\n";
      context += sents[i];
    }
  }
  std::vector<int> qi = r.sample(c.num_k, c.num_q);
  std::vector<std::string> queries;
  Generated g;
  for (int q : qi) {
    queries.push_back(keys[static_cast<size_t>(q)]);
    for (const auto& v : values[static_cast<size_t>(q)]) g.outputs.push_back(v);
  }
  std::string query = queries[0];
  if (queries.size() > 1) {
    query.clear();
    for (size_t i = 0; i + 1 < queries.size(); ++i) {
      if (i) query += ", ";
      query += queries[i];
    }
    query += ", and " + queries.back();
  }
  std::string head =
      "Some special magic {type_needle_v} are hidden within the following text. Make sure to "
      "memorize it. I will quiz you about the {type_needle_v} afterwards.\n";
  std::string question =
      "\nWhat are all the special magic {type_needle_v} for {query} mentioned in the provided "
      "text?";
  std::string prefix =
      " The special magic {type_needle_v} for {query} mentioned in the provided text are";
  std::string type_v = c.type_v;
  if (c.num_q * c.num_v == 1) {  // RULER's singular wording
    for (std::string* t : {&head, &question, &prefix}) {
      replace_all(*t, "Some", "A");
      replace_all(*t, "are all", "is");
      replace_all(*t, "are", "is");
      replace_all(*t, "answers", "answer");
    }
    type_v.pop_back();
  }
  for (std::string* t : {&head, &question, &prefix}) {
    replace_all(*t, "{type_needle_v}", type_v);
    replace_all(*t, "{query}", query);
  }
  g.context = head + context;
  g.question = question;
  g.answer_prefix = prefix;
  return g;
}

std::string random_var(Rng& r) {
  std::string v;
  for (int i = 0; i < 5; ++i) v += static_cast<char>('A' + r.below(26));
  return v;
}

Generated gen_vt(int num_noises, Rng& r) {
  const int hops = 4;
  std::vector<std::string> vars;
  std::set<std::string> seen;
  while (static_cast<int>(vars.size()) < hops + 1) {
    std::string v = random_var(r);
    if (seen.insert(v).second) vars.push_back(v);
  }
  const std::string value = std::to_string(10000 + r.below(90000));
  std::vector<std::string> chain = {"VAR " + vars[0] + " = " + value};
  for (int i = 1; i <= hops; ++i)
    chain.push_back("VAR " + vars[static_cast<size_t>(i)] + " = VAR " +
                    vars[static_cast<size_t>(i - 1)]);
  std::vector<std::string> sents(static_cast<size_t>(num_noises), kNoise);
  std::vector<int> pos = r.sample(std::max(num_noises, static_cast<int>(chain.size())),
                                  static_cast<int>(chain.size()));
  std::sort(pos.begin(), pos.end());
  for (size_t j = 0; j < chain.size(); ++j)
    sents.insert(sents.begin() + std::min<size_t>(sents.size(), static_cast<size_t>(pos[j]) + j),
                 chain[j]);
  std::string context;
  for (size_t i = 0; i < sents.size(); ++i) {
    if (i) context += "\n";
    context += sents[i];
  }
  Generated g;
  g.context =
      "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n" +
      context + "\n";
  g.question =
      "Question: Find all variables that are assigned the value " + value + " in the text above.";
  g.answer_prefix =
      " Answer: According to the chain(s) of variable assignment in the text above, " +
      std::to_string(hops + 1) + " variables are assigned the value " + value + ", they are: ";
  g.outputs = vars;
  return g;
}

// Vocabulary for cwe: the word lists, then pronounceable made-up words when more are needed.
std::vector<std::string> cwe_vocabulary(int n, Rng& r) {
  std::vector<std::string> words = adjectives();
  words.insert(words.end(), nouns().begin(), nouns().end());
  static const char* cons = "bcdfghjklmnprstvwz";
  static const char* vow = "aeiou";
  std::set<std::string> seen(words.begin(), words.end());
  while (static_cast<int>(words.size()) < n) {
    std::string w;
    const int syl = 2 + static_cast<int>(r.below(2));
    for (int s = 0; s < syl; ++s) {
      w += cons[r.below(18)];
      w += vow[r.below(5)];
    }
    if (seen.insert(w).second) words.push_back(w);
  }
  r.shuffle(words);
  words.resize(static_cast<size_t>(n));
  return words;
}

// freq_cw: 30 repeats of each common word (RULER's setting); short prompts (< 4096 tokens)
// cannot hold 300 list entries, so they use 10.
Generated gen_cwe(int num_words, int freq_cw, Rng& r) {
  const int num_cw = 10, freq_ucw = 3;
  std::vector<std::string> vocab = cwe_vocabulary(num_cw + num_words, r);
  std::vector<std::string> common(vocab.begin(), vocab.begin() + num_cw);
  std::vector<std::string> list;
  for (const auto& w : common)
    for (int i = 0; i < freq_cw; ++i) list.push_back(w);
  for (size_t k = num_cw; k < vocab.size(); ++k)
    for (int i = 0; i < freq_ucw; ++i) list.push_back(vocab[k]);
  r.shuffle(list);
  std::string context;
  for (size_t i = 0; i < list.size(); ++i) {
    if (i) context += " ";
    context += std::to_string(i + 1) + ". " + list[i];
  }
  Generated g;
  g.context =
      "Below is a numbered list of words. In these words, some appear more often than others. "
      "Memorize the ones that appear most often.\n" +
      context + "\n";
  g.question = "Question: What are the 10 most common words in the above list?";
  g.answer_prefix = " Answer: The top 10 words that appear most often in the list are:";
  g.outputs = common;
  return g;
}

Generated gen_fwe(int num_words, Rng& r) {
  const int vocab_size = 2000, word_len = 6;
  const double alpha = 2.0;
  std::set<std::string> uniq;
  while (static_cast<int>(uniq.size()) < vocab_size) {
    std::string w;
    for (int i = 0; i < word_len; ++i) w += static_cast<char>('a' + r.below(26));
    uniq.insert(w);
  }
  std::vector<std::string> vocab(uniq.begin(), uniq.end());
  r.shuffle(vocab);
  vocab[0] = "....";                      // the top-ranked "word" is noise, as in RULER
  const double zeta = M_PI * M_PI / 6.0;  // zeta(2)
  std::vector<std::string> words;
  for (int k = 1; k <= vocab_size; ++k) {
    const int cnt = static_cast<int>(num_words * std::pow(k, -alpha) / zeta);
    for (int i = 0; i < cnt; ++i) words.push_back(vocab[static_cast<size_t>(k - 1)]);
  }
  r.shuffle(words);
  std::string context;
  for (size_t i = 0; i < words.size(); ++i) {
    if (i) context += " ";
    context += words[i];
  }
  Generated g;
  g.context =
      "Read the following coded text and track the frequency of each coded word. Find the "
      "three most frequently appeared coded words. " +
      context + "\n";
  g.question =
      "Question: Do not provide any explanation. Please ignore the dots '....'. What are "
      "the three most frequently appeared words in the above coded text?";
  g.answer_prefix =
      " Answer: According to the coded text above, the three most frequently appeared "
      "words are:";
  g.outputs = {vocab[1], vocab[2], vocab[3]};
  return g;
}

// RULER's tokens_to_generate per task (the sizing reserves them; `length` includes them).
int tokens_to_generate(const std::string& task) {
  if (task == "vt") return 30;
  if (task == "cwe") return 120;
  if (task == "fwe") return 50;
  return 128;
}

}  // namespace

const std::vector<std::string>& ruler_tasks() {
  static const std::vector<std::string> t = {"niah_single_1",
                                             "niah_single_2",
                                             "niah_single_3",
                                             "niah_multikey_1",
                                             "niah_multikey_2",
                                             "niah_multikey_3",
                                             "niah_multiquery",
                                             "niah_multivalue",
                                             "vt",
                                             "cwe",
                                             "fwe"};
  return t;
}

Expected<std::vector<RulerRow>> generate_ruler_task(const Tokenizer& tok, const std::string& task,
                                                    int max_seq_length, int samples, uint64_t seed,
                                                    const std::string& essays) {
  const auto& known = ruler_tasks();
  if (std::find(known.begin(), known.end(), task) == known.end()) {
    std::string names;
    for (const auto& k : known) names += (names.empty() ? "" : ", ") + k;
    return Status::error("unknown RULER task '" + task + "' (tasks: " + names + ")");
  }
  const int gen_tokens = tokens_to_generate(task);
  const int budget = max_seq_length - gen_tokens;
  if (budget < 64) {
    return Status::error(
        strfmt("RULER %s: length %d is too short (it reserves %d tokens to generate)", task.c_str(),
               max_seq_length, gen_tokens));
  }
  const auto niah = niah_configs().find(task);
  const std::vector<std::string> essay_words = split_words(essays);
  if (niah != niah_configs().end() && niah->second.haystack == "essay" && essay_words.empty()) {
    return Status::error("RULER " + task + " needs the essay haystack (--haystack DIR)");
  }
  // Haystack units added per sizing step, as RULER does.
  int incremental = 10;
  if (niah != niah_configs().end()) {
    incremental = niah->second.haystack == "essay" ? 500 : 25;
    if (niah->second.haystack != "essay" && max_seq_length < 4096) incremental = 5;
  } else if (task == "cwe") {
    incremental = 10;
  } else if (task == "fwe") {
    incremental = 100;
  }
  auto generate = [&](int units, uint64_t sample_seed) {
    Rng r(sample_seed);
    if (niah != niah_configs().end()) return gen_niah(niah->second, units, r, essay_words);
    if (task == "vt") return gen_vt(units, r);
    if (task == "cwe") return gen_cwe(units, max_seq_length >= 4096 ? 30 : 10, r);
    return gen_fwe(units, r);
  };
  // RULER's fit test: tokens of input + the answers joined by spaces, plus tokens_to_generate.
  auto total_tokens = [&](const Generated& g) {
    std::string answers;
    for (size_t i = 0; i < g.outputs.size(); ++i) {
      if (i) answers += " ";
      answers += g.outputs[i];
    }
    return static_cast<int>(tok.encode(g.input() + answers, false).size());
  };
  auto fits = [&](int units, uint64_t s) {
    return total_tokens(generate(units, s)) + gen_tokens <= max_seq_length;
  };
  // The largest multiple of `incremental` that fits (sample 0 decides, as in RULER): doubling,
  // then bisection (the token count grows with the haystack).
  const uint64_t seed0 = mix_seed(seed, task, max_seq_length, 0);
  // Short prompts (tiny models) cannot take one step of RULER's increment: step by one unit.
  if (!fits(incremental, seed0)) incremental = 1;
  if (!fits(incremental, seed0)) {
    return Status::error(strfmt("RULER %s: length %d is too short for the smallest haystack",
                                task.c_str(), max_seq_length));
  }
  const int max_units = niah != niah_configs().end() && niah->second.haystack == "essay"
                            ? static_cast<int>(essay_words.size()) / incremental
                            : 1 << 20;
  int lo = 1, hi = 2;  // in steps of `incremental`
  while (hi <= max_units && fits(hi * incremental, seed0)) {
    lo = hi;
    hi *= 2;
  }
  hi = std::min(hi, max_units + 1);
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    (fits(mid * incremental, seed0) ? lo : hi) = mid;
  }
  const int units = lo * incremental;
  std::vector<RulerRow> rows;
  for (int i = 0; i < samples; ++i) {
    const uint64_t s = mix_seed(seed, task, max_seq_length, i);
    int u = units;
    Generated g = generate(u, s);
    // A sample that draws longer values than sample 0 steps down until it fits.
    while (u > incremental && total_tokens(g) + gen_tokens > max_seq_length) {
      u -= incremental;
      g = generate(u, s);
    }
    RulerRow row;
    row.index = i;
    row.input = g.input();
    row.outputs = g.outputs;
    row.length = static_cast<int>(tok.encode(row.input, false).size()) + gen_tokens;
    row.context = g.context;
    row.question = g.question;
    row.answer_prefix = g.answer_prefix;
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string ruler_row_json(const RulerRow& row) {
  nlohmann::ordered_json j;
  j["index"] = row.index;
  j["input"] = row.input;
  j["outputs"] = row.outputs;
  j["length"] = row.length;
  return j.dump();
}

std::vector<EvalSample> ruler_samples(const std::string& task, int length,
                                      const std::vector<RulerRow>& rows, int max_new_tokens) {
  std::vector<EvalSample> out;
  for (const RulerRow& r : rows) {
    EvalSample s;
    s.task = task;
    s.id = std::to_string(r.index);
    s.context = r.context;
    s.question = r.question;
    s.answer_prefix = r.answer_prefix;
    s.answers = r.outputs;
    s.max_new_tokens = max_new_tokens;
    s.metric = Metric::kStringMatchAll;
    s.length = length;
    out.push_back(std::move(s));
  }
  return out;
}

namespace {
// Splits a RULER input into context / question / answer prefix: the question is the last line;
// the answer prefix starts at " Answer:" in it, or after its last "? ".
void split_ruler_input(const std::string& input, std::string& context, std::string& question,
                       std::string& prefix) {
  const size_t nl = input.rfind('\n');
  context = nl == std::string::npos ? "" : input.substr(0, nl + 1);
  std::string last = nl == std::string::npos ? input : input.substr(nl + 1);
  size_t cut = last.rfind(" Answer:");
  if (cut == std::string::npos) {
    const size_t q = last.rfind("? ");
    cut = q == std::string::npos ? std::string::npos : q + 1;
  }
  if (cut == std::string::npos || cut == 0) {
    question = last;
    prefix.clear();
  } else {
    question = last.substr(0, cut);
    prefix = last.substr(cut);
  }
}
}  // namespace

Expected<std::vector<EvalSample>> read_ruler_files(const std::vector<JsonlFile>& files,
                                                   const std::vector<std::string>& tasks,
                                                   int samples, int max_new_tokens) {
  std::vector<EvalSample> out;
  for (const JsonlFile& f : files) {
    std::string task = f.stem;
    int length = 0;
    const size_t us = task.rfind('_');
    if (us != std::string::npos && us + 1 < task.size() &&
        task.find_first_not_of("0123456789", us + 1) == std::string::npos) {
      length = std::stoi(task.substr(us + 1));
      task = task.substr(0, us);
    }
    if (!tasks.empty() && std::find(tasks.begin(), tasks.end(), task) == tasks.end()) continue;
    int taken = 0;
    for (const auto& [lineno, line] : f.lines) {
      if (samples > 0 && taken >= samples) break;
      auto where = [&, lineno = lineno](const std::string& what) {
        return Status::error(strfmt("%s:%d: %s", f.path.c_str(), lineno, what.c_str()));
      };
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object()) return where("not a JSON object");
      if (!j.contains("input")) return where("missing field 'input' (a string)");
      if (!j["input"].is_string())
        return where("field 'input' must be a string, got " + json_excerpt(j["input"]));
      if (!j.contains("outputs")) return where("missing field 'outputs' (an array of strings)");
      if (!j["outputs"].is_array() || j["outputs"].empty()) {
        return where("field 'outputs' must be a non-empty array of strings, got " +
                     json_excerpt(j["outputs"]));
      }
      EvalSample s;
      s.task = task;
      s.id = j.contains("index") ? j["index"].dump() : std::to_string(taken);
      for (const auto& o : j["outputs"]) {
        if (!o.is_string()) return where("'outputs' holds a non-string");
        s.answers.push_back(o.get<std::string>());
      }
      std::string input = j["input"];
      if (j.contains("answer_prefix") && j["answer_prefix"].is_string()) {
        // Newer RULER files keep the answer prefix apart (and may repeat it in the input).
        const std::string prefix = j["answer_prefix"];
        if (!prefix.empty() && input.size() >= prefix.size() &&
            input.compare(input.size() - prefix.size(), prefix.size(), prefix) == 0) {
          input.resize(input.size() - prefix.size());
        }
        const size_t nl = input.rfind('\n');
        s.context = nl == std::string::npos ? "" : input.substr(0, nl + 1);
        s.question = nl == std::string::npos ? input : input.substr(nl + 1);
        s.answer_prefix = prefix;
      } else {
        split_ruler_input(input, s.context, s.question, s.answer_prefix);
      }
      s.max_new_tokens = max_new_tokens;
      s.metric = Metric::kStringMatchAll;
      s.length =
          j.contains("length") && j["length"].is_number_integer() ? j["length"].get<int>() : length;
      out.push_back(std::move(s));
      ++taken;
    }
  }
  if (out.empty()) {
    std::string names, paths;
    for (const auto& t : tasks) names += (names.empty() ? "" : ",") + t;
    for (const auto& f : files) paths += (paths.empty() ? "" : ", ") + f.path;
    return Status::error("RULER: no samples" +
                         (names.empty() ? std::string() : " of --tasks " + names) + " in " + paths);
  }
  return out;
}

}  // namespace fkv::eval
