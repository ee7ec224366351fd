// Unicode NFC (canonical decomposition, canonical ordering, canonical composition), for the
// HF "NFC" normalizer (Qwen2/3). Tables are generated from Python's unicodedata.
#include <algorithm>
#include <cstdint>

#include "core/utf8.h"
#include "tokenizer/tokenizer_impl.h"

namespace fkv {
namespace {

#include "tokenizer/nfc_tables.inc"

constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

int ccc(uint32_t cp) {
  auto* end = kCcc + sizeof(kCcc) / sizeof(kCcc[0]);
  auto* it =
      std::lower_bound(kCcc, end, cp, [](const uint32_t* e, uint32_t v) { return e[0] < v; });
  return it != end && (*it)[0] == cp ? static_cast<int>((*it)[1]) : 0;
}

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  auto* end = kDecomp + sizeof(kDecomp) / sizeof(kDecomp[0]);
  auto* it =
      std::lower_bound(kDecomp, end, cp, [](const uint32_t* e, uint32_t v) { return e[0] < v; });
  if (it != end && (*it)[0] == cp) {
    out.insert(out.end(), kDecompPool + (*it)[1], kDecompPool + (*it)[1] + (*it)[2]);
  } else {
    out.push_back(cp);
  }
}

// Primary composite of (a, b), or 0.
uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  auto* end = kComp + sizeof(kComp) / sizeof(kComp[0]);
  auto* it = std::lower_bound(kComp, end, std::make_pair(a, b),
                              [](const uint32_t* e, std::pair<uint32_t, uint32_t> v) {
                                return e[0] < v.first || (e[0] == v.first && e[1] < v.second);
                              });
  return it != end && (*it)[0] == a && (*it)[1] == b ? (*it)[2] : 0;
}

}  // namespace

std::string nfc(std::string_view s) {
  // Below U+0300 nothing decomposes or combines, so most text is returned as is.
  bool simple = true;
  for (size_t i = 0; i < s.size() && simple; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    simple = c < 0xCC;  // lead bytes >= 0xCC start code points >= U+0300
  }
  if (simple) return std::string(s);
  std::vector<uint32_t> cps;
  cps.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    uint32_t cp;
    if (!next_codepoint(s, i, cp)) cp = 0xFFFD;
    decompose(cp, cps);
  }
  // Canonical ordering: stable sort each run of non-starters by combining class.
  for (size_t a = 0; a < cps.size();) {
    if (ccc(cps[a]) == 0) {
      ++a;
      continue;
    }
    size_t b = a;
    while (b < cps.size() && ccc(cps[b]) != 0) ++b;
    std::stable_sort(cps.begin() + a, cps.begin() + b,
                     [](uint32_t x, uint32_t y) { return ccc(x) < ccc(y); });
    a = b;
  }
  // Canonical composition (UAX #15 reference algorithm). last_class is 0 right after the
  // starter; a mark is blocked from the starter by an earlier mark of the same or higher class.
  std::vector<uint32_t> out;
  out.reserve(cps.size());
  int starter = -1;
  int last_class = 0;
  for (uint32_t cp : cps) {
    int c = ccc(cp);
    if (starter >= 0 && (last_class < c || last_class == 0)) {
      uint32_t comp = compose(out[starter], cp);
      if (comp != 0) {
        out[starter] = comp;
        continue;
      }
    }
    if (c == 0) {
      starter = static_cast<int>(out.size());
    } else if (starter < 0) {
      c = 256;  // leading marks: nothing to compose with
    }
    last_class = c;
    out.push_back(cp);
  }
  std::string r;
  r.reserve(s.size());
  for (uint32_t cp : out) append_utf8(cp, r);
  return r;
}

}  // namespace fkv
