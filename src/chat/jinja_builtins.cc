// Filters, tests, globals, attribute/item access and Python-like string methods.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>
#include <map>

#include "chat/jinja_ast.h"

namespace fkv::jinja {
namespace {

[[noreturn]] void fail(const std::string& msg) { throw JinjaError(msg); }

// ----- UTF-8 helpers (Python strings index and strip by code point).

std::vector<std::string> code_points(const std::string& s) {
  std::vector<std::string> out;
  for (size_t k = 0; k < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[k]);
    size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    len = std::min(len, s.size() - k);
    out.push_back(s.substr(k, len));
    k += len;
  }
  return out;
}

uint32_t decode(const std::string& cp) {
  const unsigned char c = static_cast<unsigned char>(cp[0]);
  if (cp.size() == 1) return c;
  uint32_t v = cp.size() == 2 ? (c & 0x1F) : cp.size() == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t k = 1; k < cp.size(); ++k) v = (v << 6) | (static_cast<unsigned char>(cp[k]) & 0x3F);
  return v;
}

// Python str.isspace() code points.
bool is_space_cp(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

std::string py_strip(const std::string& s, const Value& chars, bool left, bool right) {
  const std::vector<std::string> cps = code_points(s);
  std::vector<std::string> set;
  const bool ws = chars.is_undefined() || chars.is_none();
  if (!ws) {
    if (!chars.is_string()) fail("strip arg must be None or str");
    set = code_points(chars.s);
  }
  auto strip_it = [&](const std::string& cp) {
    if (ws) return is_space_cp(decode(cp));
    return std::find(set.begin(), set.end(), cp) != set.end();
  };
  size_t a = 0, b = cps.size();
  if (left) {
    while (a < b && strip_it(cps[a])) ++a;
  }
  if (right) {
    while (b > a && strip_it(cps[b - 1])) --b;
  }
  std::string out;
  for (size_t k = a; k < b; ++k) out += cps[k];
  return out;
}

std::string ascii_upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}
std::string ascii_lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
bool ascii_alpha(char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; }

// Python str.title(): upper-case a letter following a non-letter, lower-case the rest.
std::string py_title(const std::string& s) {
  std::string out = s;
  bool prev_cased = false;
  for (auto& c : out) {
    if (ascii_alpha(c)) {
      c = static_cast<char>(prev_cased ? std::tolower(static_cast<unsigned char>(c))
                                       : std::toupper(static_cast<unsigned char>(c)));
      prev_cased = true;
    } else {
      prev_cased = static_cast<unsigned char>(c) >= 0x80 && prev_cased;
    }
  }
  return out;
}

std::string py_capitalize(const std::string& s) {
  std::string out = ascii_lower(s);
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

std::string py_replace(const std::string& s, const std::string& from, const std::string& to,
                       int64_t count) {
  if (from.empty()) {
    // Python inserts `to` around every code point.
    std::string out;
    int64_t n = 0;
    for (const auto& cp : code_points(s)) {
      if (count < 0 || n < count) {
        out += to;
        ++n;
      }
      out += cp;
    }
    if (count < 0 || n < count) out += to;
    return out;
  }
  std::string out;
  size_t p = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    const size_t q = s.find(from, p);
    if (q == std::string::npos) break;
    out += s.substr(p, q - p) + to;
    p = q + from.size();
    ++n;
  }
  return out + s.substr(p);
}

Value py_split(const std::string& s, const Value& sep, int64_t maxsplit) {
  ValueList out;
  if (sep.is_undefined() || sep.is_none()) {
    // Runs of whitespace separate; leading/trailing whitespace yields no empty strings.
    const std::vector<std::string> cps = code_points(s);
    size_t k = 0;
    int64_t splits = 0;
    while (k < cps.size()) {
      while (k < cps.size() && is_space_cp(decode(cps[k]))) ++k;
      if (k >= cps.size()) break;
      std::string word;
      if (maxsplit >= 0 && splits >= maxsplit) {
        for (; k < cps.size(); ++k) word += cps[k];
        // Python keeps the remainder verbatim but strips trailing whitespace? It does not
        // strip: only leading whitespace is skipped.
        out.push_back(Value::string(word));
        break;
      }
      while (k < cps.size() && !is_space_cp(decode(cps[k]))) word += cps[k++];
      out.push_back(Value::string(word));
      ++splits;
    }
    return Value::make_list(std::move(out));
  }
  if (!sep.is_string()) fail("must be str or None, not " + type_name(sep));
  if (sep.s.empty()) fail("empty separator");
  size_t p = 0;
  int64_t n = 0;
  while (maxsplit < 0 || n < maxsplit) {
    const size_t q = s.find(sep.s, p);
    if (q == std::string::npos) break;
    out.push_back(Value::string(s.substr(p, q - p)));
    p = q + sep.s.size();
    ++n;
  }
  out.push_back(Value::string(s.substr(p)));
  return Value::make_list(std::move(out));
}

int64_t int_arg(const Value& v, int64_t dflt) {
  if (v.is_undefined() || v.is_none()) return dflt;
  if (v.kind == Kind::kInt) return v.i;
  if (v.kind == Kind::kBool) return v.b;
  fail("expected an integer argument, got " + type_name(v));
}

bool prefix_match(const std::string& s, const Value& arg, bool at_end) {
  auto one = [&](const Value& p) {
    if (!p.is_string()) fail("startswith/endswith first arg must be str or a tuple of str");
    if (p.s.size() > s.size()) return false;
    return at_end ? s.compare(s.size() - p.s.size(), p.s.size(), p.s) == 0
                  : s.compare(0, p.s.size(), p.s) == 0;
  };
  if (arg.is_list()) {
    for (const auto& p : *arg.list) {
      if (one(p)) return true;
    }
    return false;
  }
  return one(arg);
}

Value string_method(const std::string& s, const std::string& name) {
  auto m = [](auto f) { return Value::function(f); };
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const bool l = name != "rstrip", r = name != "lstrip";
    return m([s, l, r](Args& a) { return Value::string(py_strip(s, a.get(0, "chars"), l, r)); });
  }
  if (name == "split") {
    return m(
        [s](Args& a) { return py_split(s, a.get(0, "sep"), int_arg(a.get(1, "maxsplit"), -1)); });
  }
  if (name == "startswith" || name == "endswith") {
    const bool end = name == "endswith";
    return m(
        [s, end](Args& a) { return Value::boolean(prefix_match(s, a.get(0, "prefix"), end)); });
  }
  if (name == "replace") {
    return m([s](Args& a) {
      const Value from = a.get(0, "old"), to = a.get(1, "new");
      if (!from.is_string() || !to.is_string()) fail("replace() arguments must be str");
      return Value::string(py_replace(s, from.s, to.s, int_arg(a.get(2, "count"), -1)));
    });
  }
  if (name == "upper") return m([s](Args&) { return Value::string(ascii_upper(s)); });
  if (name == "lower") return m([s](Args&) { return Value::string(ascii_lower(s)); });
  if (name == "title") return m([s](Args&) { return Value::string(py_title(s)); });
  if (name == "capitalize") return m([s](Args&) { return Value::string(py_capitalize(s)); });
  if (name == "find") {
    return m([s](Args& a) {
      const Value sub = a.get(0, "sub");
      if (!sub.is_string()) fail("find() argument must be str");
      const size_t p = s.find(sub.s);
      if (p == std::string::npos) return Value::integer(-1);
      return Value::integer(static_cast<int64_t>(code_points(s.substr(0, p)).size()));
    });
  }
  if (name == "count") {
    return m([s](Args& a) {
      const Value sub = a.get(0, "sub");
      if (!sub.is_string()) fail("count() argument must be str");
      if (sub.s.empty()) return Value::integer(static_cast<int64_t>(code_points(s).size()) + 1);
      int64_t n = 0;
      for (size_t p = s.find(sub.s); p != std::string::npos; p = s.find(sub.s, p + sub.s.size()))
        ++n;
      return Value::integer(n);
    });
  }
  if (name == "join") {
    return m([s](Args& a) {
      std::string out;
      bool first = true;
      for (const auto& x : iterate(a.get(0, "iterable"))) {
        if (!x.is_string())
          fail("sequence item: expected str instance, " + type_name(x) + " found");
        if (!first) out += s;
        first = false;
        out += x.s;
      }
      return Value::string(out);
    });
  }
  if (name == "isdigit" || name == "isalpha" || name == "isspace") {
    return m([s, name](Args&) {
      if (s.empty()) return Value::boolean(false);
      for (char c : s) {
        const unsigned char u = static_cast<unsigned char>(c);
        const bool ok = name == "isdigit"   ? std::isdigit(u)
                        : name == "isalpha" ? std::isalpha(u)
                                            : std::isspace(u);
        if (!ok) return Value::boolean(false);
      }
      return Value::boolean(true);
    });
  }
  return Value::undefined(name);
}

Value dict_method(const Value& d, const std::string& name) {
  if (name == "items") {
    return Value::function([d](Args&) {
      ValueList out;
      for (const auto& [k, v] : *d.dict)
        out.push_back(Value::make_list({Value::string(k), v}, true));
      return Value::make_list(std::move(out));
    });
  }
  if (name == "keys") {
    return Value::function([d](Args&) {
      ValueList out;
      for (const auto& kv : *d.dict) out.push_back(Value::string(kv.first));
      return Value::make_list(std::move(out));
    });
  }
  if (name == "values") {
    return Value::function([d](Args&) {
      ValueList out;
      for (const auto& kv : *d.dict) out.push_back(kv.second);
      return Value::make_list(std::move(out));
    });
  }
  if (name == "get") {
    return Value::function([d](Args& a) {
      const Value key = a.get(0, "key");
      const Value* v = key.is_string() ? d.find(key.s) : nullptr;
      return v ? *v : a.get(1, "default", Value::none());
    });
  }
  return Value::undefined(name);
}

// ----- filters

Value f_length(const Value& v, Args&, Context&) {
  if (v.is_string()) return Value::integer(static_cast<int64_t>(code_points(v.s).size()));
  if (v.is_list()) return Value::integer(static_cast<int64_t>(v.list->size()));
  if (v.is_dict()) return Value::integer(static_cast<int64_t>(v.dict->size()));
  if (v.is_undefined()) return Value::integer(0);
  fail("object of type '" + type_name(v) + "' has no len()");
}

Value f_trim(const Value& v, Args& a, Context&) {
  return Value::string(py_strip(to_str(v), a.get(0, "chars"), true, true));
}
Value f_upper(const Value& v, Args&, Context&) { return Value::string(ascii_upper(to_str(v))); }
Value f_lower(const Value& v, Args&, Context&) { return Value::string(ascii_lower(to_str(v))); }
Value f_capitalize(const Value& v, Args&, Context&) {
  return Value::string(py_capitalize(to_str(v)));
}

// jinja2's title filter: capitalize each piece split on runs of [-\s({[<].
Value f_title(const Value& v, Args&, Context&) {
  const std::string s = to_str(v);
  std::string out;
  bool start = true;
  for (char c : s) {
    const bool sep = c == '-' || std::isspace(static_cast<unsigned char>(c)) || c == '(' ||
                     c == '{' || c == '[' || c == '<';
    if (sep) {
      out += c;
      start = true;
    } else {
      out += static_cast<char>(start ? std::toupper(static_cast<unsigned char>(c))
                                     : std::tolower(static_cast<unsigned char>(c)));
      start = false;
    }
  }
  return Value::string(out);
}

// transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
Value f_tojson(const Value& v, Args& a, Context&) {
  JsonStyle st;
  const Value indent = a.get(1, "indent", Value::none());
  if (!indent.is_none()) {
    if (indent.kind != Kind::kInt) fail("tojson: indent must be an integer");
    st.indent = static_cast<int>(std::max<int64_t>(0, indent.i));
  }
  st.ensure_ascii = truthy(a.get(0, "ensure_ascii", Value::boolean(false)));
  const Value seps = a.get(2, "separators", Value::none());
  if (!seps.is_none()) {
    if (!seps.is_list() || seps.list->size() != 2 || !(*seps.list)[0].is_string() ||
        !(*seps.list)[1].is_string()) {
      fail("tojson: separators must be a pair of strings");
    }
    st.item_sep = (*seps.list)[0].s;
    st.key_sep = (*seps.list)[1].s;
  }
  st.sort_keys = truthy(a.get(3, "sort_keys", Value::boolean(false)));
  for (const auto& [k, x] : a.kw) {
    if (k != "indent" && k != "sort_keys" && k != "ensure_ascii" && k != "separators") {
      fail("tojson: unexpected keyword argument '" + k + "'");
    }
  }
  return Value::string(to_json(v, st));
}

Value f_default(const Value& v, Args& a, Context&) {
  const Value dflt = a.get(0, "default_value", Value::string(""));
  const bool boolean = truthy(a.get(1, "boolean", Value::boolean(false)));
  if (v.is_undefined() || (boolean && !truthy(v))) return dflt;
  return v;
}

Value f_first(const Value& v, Args&, Context&) {
  const ValueList items = iterate(v);
  return items.empty() ? Value::undefined("first") : items.front();
}
Value f_last(const Value& v, Args&, Context&) {
  const ValueList items = iterate(v);
  return items.empty() ? Value::undefined("last") : items.back();
}

Value attr_path(const Value& v, const std::string& path) {
  Value cur = v;
  size_t p = 0;
  while (true) {
    const size_t q = path.find('.', p);
    const std::string part = path.substr(p, q == std::string::npos ? std::string::npos : q - p);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    if (numeric) {
      long long index = 0;
      try {
        index = std::stoll(part);
      } catch (...) {
        fail("attribute index out of range: " + part);
      }
      cur = get_item(cur, Value::integer(index));
    } else {
      cur = get_item(cur, Value::string(part));
    }
    if (q == std::string::npos) return cur;
    p = q + 1;
  }
}

Value f_join(const Value& v, Args& a, Context&) {
  const Value sep = a.get(0, "d", Value::string(""));
  const Value attr = a.get(1, "attribute", Value::none());
  std::string out;
  bool first = true;
  for (const auto& x : iterate(v)) {
    if (!first) out += to_str(sep);
    first = false;
    out += to_str(attr.is_none() ? x : attr_path(x, to_str(attr)));
  }
  return Value::string(out);
}

Value f_replace(const Value& v, Args& a, Context&) {
  const Value from = a.get(0, "old"), to = a.get(1, "new");
  return Value::string(
      py_replace(to_str(v), to_str(from), to_str(to), int_arg(a.get(2, "count"), -1)));
}

Value f_string(const Value& v, Args&, Context&) { return Value::string(to_str(v)); }

Value f_int(const Value& v, Args& a, Context&) {
  const Value dflt = a.get(0, "default", Value::integer(0));
  if (v.kind == Kind::kInt) return v;
  if (v.kind == Kind::kBool) return Value::integer(v.b);
  if (v.kind == Kind::kFloat) return Value::integer(static_cast<int64_t>(v.f));
  if (v.is_string()) {
    const std::string s = py_strip(v.s, Value::undefined(), true, true);
    char* end = nullptr;
    const long long x = std::strtoll(s.c_str(), &end, 10);
    if (!s.empty() && end && *end == '\0') return Value::integer(x);
    const double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end && *end == '\0') return Value::integer(static_cast<int64_t>(d));
  }
  return dflt;
}

Value f_float(const Value& v, Args& a, Context&) {
  const Value dflt = a.get(0, "default", Value::number(0.0));
  if (v.is_number())
    return Value::number(
        v.kind == Kind::kFloat ? v.f : static_cast<double>(v.kind == Kind::kInt ? v.i : v.b));
  if (v.is_string()) {
    const std::string s = py_strip(v.s, Value::undefined(), true, true);
    char* end = nullptr;
    const double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end && *end == '\0') return Value::number(d);
  }
  return dflt;
}

Value f_abs(const Value& v, Args&, Context&) {
  if (v.kind == Kind::kInt) return Value::integer(v.i < 0 ? -v.i : v.i);
  if (v.kind == Kind::kFloat) return Value::number(std::fabs(v.f));
  fail("bad operand type for abs(): '" + type_name(v) + "'");
}

Value f_list(const Value& v, Args&, Context&) { return Value::make_list(iterate(v)); }

Value f_items(const Value& v, Args&, Context&) {
  if (v.is_undefined()) return Value::make_list();
  if (!v.is_dict())
    fail("items filter: can only get item pairs from a mapping, got " + type_name(v));
  Args none;
  return call_value(dict_method(v, "items"), none, "items");
}

Value f_reverse(const Value& v, Args&, Context&) {
  if (v.is_string()) {
    std::vector<std::string> cps = code_points(v.s);
    std::string out;
    for (auto it = cps.rbegin(); it != cps.rend(); ++it) out += *it;
    return Value::string(out);
  }
  ValueList items = iterate(v);
  std::reverse(items.begin(), items.end());
  return Value::make_list(std::move(items));
}

Value f_unique(const Value& v, Args&, Context&) {
  ValueList out;
  for (const auto& x : iterate(v)) {
    bool seen = false;
    for (const auto& y : out) seen |= values_equal(x, y);
    if (!seen) out.push_back(x);
  }
  return Value::make_list(std::move(out));
}

Value f_safe(const Value& v, Args&, Context&) { return v; }

// select/reject/selectattr/rejectattr share one body.
Value select_impl(const Value& v, Args& a, bool by_attr, bool keep_on) {
  ValueList out;
  const size_t first_test_arg = by_attr ? 1 : 0;
  const Value attr = by_attr ? a.get(0, "attribute") : Value::none();
  TestFn test = nullptr;
  Args test_args;
  if (a.pos.size() > first_test_arg) {
    const Value name = a.pos[first_test_arg];
    if (!name.is_string()) fail("select: test name must be a string");
    test = find_test(name.s);
    if (!test) fail("unknown test '" + name.s + "'");
    test_args.pos.assign(a.pos.begin() + static_cast<long>(first_test_arg) + 1, a.pos.end());
  }
  for (const auto& x : iterate(v)) {
    const Value subject = by_attr ? attr_path(x, to_str(attr)) : x;
    const bool ok = test ? test(subject, test_args) : truthy(subject);
    if (ok == keep_on) out.push_back(x);
  }
  return Value::make_list(std::move(out));
}
Value f_select(const Value& v, Args& a, Context&) { return select_impl(v, a, false, true); }
Value f_reject(const Value& v, Args& a, Context&) { return select_impl(v, a, false, false); }
Value f_selectattr(const Value& v, Args& a, Context&) { return select_impl(v, a, true, true); }
Value f_rejectattr(const Value& v, Args& a, Context&) { return select_impl(v, a, true, false); }

Value f_map(const Value& v, Args& a, Context& ctx) {
  ValueList out;
  const Value attr = a.get(99, "attribute");
  if (!attr.is_undefined()) {
    const Value dflt = a.get(99, "default");
    for (const auto& x : iterate(v)) {
      Value y = attr_path(x, to_str(attr));
      out.push_back(y.is_undefined() && !dflt.is_undefined() ? dflt : y);
    }
    return Value::make_list(std::move(out));
  }
  if (a.pos.empty() || !a.pos[0].is_string()) fail("map: expected a filter name or attribute=");
  FilterFn f = find_filter(a.pos[0].s);
  if (!f) fail("unknown filter '" + a.pos[0].s + "'");
  Args rest;
  rest.pos.assign(a.pos.begin() + 1, a.pos.end());
  rest.kw = a.kw;
  for (const auto& x : iterate(v)) out.push_back(f(x, rest, ctx));
  return Value::make_list(std::move(out));
}

Value f_sum(const Value& v, Args& a, Context&) {
  Value total = a.get(1, "start", Value::integer(0));
  const Value attr = a.get(0, "attribute", Value::none());
  for (const auto& x : iterate(v)) {
    const Value y = attr.is_none() ? x : attr_path(x, to_str(attr));
    if (!y.is_number() || !total.is_number()) fail("sum: non-numeric item");
    if (y.kind == Kind::kFloat || total.kind == Kind::kFloat) {
      const double t = total.kind == Kind::kFloat ? total.f : static_cast<double>(total.i);
      total = Value::number(t + (y.kind == Kind::kFloat
                                     ? y.f
                                     : static_cast<double>(y.kind == Kind::kInt ? y.i : y.b)));
    } else {
      total = Value::integer(total.i + (y.kind == Kind::kInt ? y.i : y.b));
    }
  }
  return total;
}

Value f_round(const Value& v, Args& a, Context&) {
  const int64_t prec = int_arg(a.get(0, "precision"), 0);
  const std::string method = to_str(a.get(1, "method", Value::string("common")));
  const double x =
      v.kind == Kind::kFloat ? v.f : static_cast<double>(v.kind == Kind::kInt ? v.i : 0);
  const double scale = std::pow(10.0, static_cast<double>(prec));
  double r = x * scale;
  r = method == "floor" ? std::floor(r) : method == "ceil" ? std::ceil(r) : std::round(r);
  return Value::number(r / scale);
}

Value f_indent(const Value& v, Args& a, Context&) {
  const Value width = a.get(0, "width", Value::integer(4));
  const bool first = truthy(a.get(1, "first", Value::boolean(false)));
  const bool blank = truthy(a.get(2, "blank", Value::boolean(false)));
  const std::string pad =
      width.is_string() ? width.s : std::string(static_cast<size_t>(int_arg(width, 4)), ' ');
  const std::string s = to_str(v);
  std::string out;
  size_t p = 0;
  bool first_line = true;
  while (true) {
    const size_t q = s.find('\n', p);
    const std::string line = s.substr(p, q == std::string::npos ? std::string::npos : q - p);
    const bool do_pad = first_line ? first : (blank || !line.empty());
    out += (do_pad ? pad : "") + line;
    if (q == std::string::npos) break;
    out += '\n';
    p = q + 1;
    first_line = false;
  }
  return Value::string(out);
}

const std::map<std::string, FilterFn>& filters() {
  static const std::map<std::string, FilterFn> kFilters = {
      {"abs", f_abs},         {"capitalize", f_capitalize},
      {"count", f_length},    {"d", f_default},
      {"default", f_default}, {"first", f_first},
      {"float", f_float},     {"indent", f_indent},
      {"int", f_int},         {"items", f_items},
      {"join", f_join},       {"last", f_last},
      {"length", f_length},   {"list", f_list},
      {"lower", f_lower},     {"map", f_map},
      {"reject", f_reject},   {"rejectattr", f_rejectattr},
      {"replace", f_replace}, {"reverse", f_reverse},
      {"round", f_round},     {"safe", f_safe},
      {"select", f_select},   {"selectattr", f_selectattr},
      {"string", f_string},   {"sum", f_sum},
      {"title", f_title},     {"tojson", f_tojson},
      {"trim", f_trim},       {"unique", f_unique},
      {"upper", f_upper},
  };
  return kFilters;
}

// ----- tests

bool t_defined(const Value& v, Args&) { return !v.is_undefined(); }
bool t_undefined(const Value& v, Args&) { return v.is_undefined(); }
bool t_none(const Value& v, Args&) { return v.is_none(); }
bool t_string(const Value& v, Args&) { return v.is_string(); }
bool t_number(const Value& v, Args&) { return v.is_number(); }
bool t_integer(const Value& v, Args&) { return v.kind == Kind::kInt; }
bool t_float(const Value& v, Args&) { return v.kind == Kind::kFloat; }
bool t_boolean(const Value& v, Args&) { return v.kind == Kind::kBool; }
bool t_true(const Value& v, Args&) { return v.kind == Kind::kBool && v.b; }
bool t_false(const Value& v, Args&) { return v.kind == Kind::kBool && !v.b; }
bool t_mapping(const Value& v, Args&) { return v.is_dict(); }
bool t_iterable(const Value& v, Args&) { return v.is_list() || v.is_dict() || v.is_string(); }
bool t_sequence(const Value& v, Args&) { return v.is_list() || v.is_dict() || v.is_string(); }
bool t_callable(const Value& v, Args&) { return v.kind == Kind::kFunc; }
bool t_lower(const Value& v, Args&) { return v.is_string() && ascii_lower(v.s) == v.s; }
bool t_upper(const Value& v, Args&) { return v.is_string() && ascii_upper(v.s) == v.s; }
int64_t int_subject(const Value& v) {
  if (v.kind == Kind::kInt) return v.i;
  if (v.kind == Kind::kBool) return v.b;
  fail("test expects an integer, got " + type_name(v));
}
bool t_odd(const Value& v, Args&) { return (int_subject(v) % 2 + 2) % 2 == 1; }
bool t_even(const Value& v, Args&) { return int_subject(v) % 2 == 0; }
bool t_divisibleby(const Value& v, Args& a) {
  const int64_t d = int_arg(a.get(0, "num"), 1);
  if (d == 0) fail("integer division or modulo by zero");
  return int_subject(v) % d == 0;
}
bool t_eq(const Value& v, Args& a) { return values_equal(v, a.get(0, "other")); }
bool t_ne(const Value& v, Args& a) { return !values_equal(v, a.get(0, "other")); }
bool t_sameas(const Value& v, Args& a) {
  const Value o = a.get(0, "other");
  if (v.kind != o.kind) return false;
  if (v.is_list()) return v.list == o.list;
  if (v.is_dict()) return v.dict == o.dict;
  return values_equal(v, o);
}
double num(const Value& v) {
  if (v.kind == Kind::kFloat) return v.f;
  if (v.kind == Kind::kInt) return static_cast<double>(v.i);
  if (v.kind == Kind::kBool) return v.b;
  fail("comparison test expects numbers, got " + type_name(v));
}
bool t_lt(const Value& v, Args& a) { return num(v) < num(a.get(0, "other")); }
bool t_gt(const Value& v, Args& a) { return num(v) > num(a.get(0, "other")); }
bool t_le(const Value& v, Args& a) { return num(v) <= num(a.get(0, "other")); }
bool t_ge(const Value& v, Args& a) { return num(v) >= num(a.get(0, "other")); }
bool t_in(const Value& v, Args& a) {
  const Value c = a.get(0, "seq");
  if (c.is_string()) return v.is_string() && c.s.find(v.s) != std::string::npos;
  for (const auto& x : iterate(c)) {
    if (values_equal(x, v)) return true;
  }
  return false;
}

const std::map<std::string, TestFn>& tests() {
  static const std::map<std::string, TestFn> kTests = {
      {"defined", t_defined},
      {"undefined", t_undefined},
      {"none", t_none},
      {"string", t_string},
      {"number", t_number},
      {"integer", t_integer},
      {"float", t_float},
      {"boolean", t_boolean},
      {"true", t_true},
      {"false", t_false},
      {"mapping", t_mapping},
      {"iterable", t_iterable},
      {"sequence", t_sequence},
      {"callable", t_callable},
      {"lower", t_lower},
      {"upper", t_upper},
      {"odd", t_odd},
      {"even", t_even},
      {"divisibleby", t_divisibleby},
      {"eq", t_eq},
      {"equalto", t_eq},
      {"==", t_eq},
      {"ne", t_ne},
      {"!=", t_ne},
      {"sameas", t_sameas},
      {"lt", t_lt},
      {"lessthan", t_lt},
      {"<", t_lt},
      {"gt", t_gt},
      {"greaterthan", t_gt},
      {">", t_gt},
      {"le", t_le},
      {"<=", t_le},
      {"ge", t_ge},
      {">=", t_ge},
      {"in", t_in},
  };
  return kTests;
}

}  // namespace

FilterFn find_filter(const std::string& name) {
  auto it = filters().find(name);
  return it == filters().end() ? nullptr : it->second;
}

TestFn find_test(const std::string& name) {
  auto it = tests().find(name);
  return it == tests().end() ? nullptr : it->second;
}

[[noreturn]] void raise_undefined(const Value& v) {
  if (v.s.empty()) fail("undefined value used");
  fail("'" + v.s + "' is undefined");
}

Value get_attr(const Value& obj, const std::string& name) {
  switch (obj.kind) {
    case Kind::kUndefined:
      raise_undefined(obj);
    case Kind::kDict: {
      if (!obj.is_namespace) {
        Value m = dict_method(obj, name);
        if (!m.is_undefined()) return m;
      }
      const Value* v = obj.find(name);
      return v ? *v : Value::undefined(name);
    }
    case Kind::kString:
      return string_method(obj.s, name);
    default:
      return Value::undefined(name);
  }
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) raise_undefined(obj);
  if (obj.is_dict()) {
    if (key.is_string()) {
      const Value* v = obj.find(key.s);
      if (v) return *v;
      return obj.is_namespace ? Value::undefined(key.s) : dict_method(obj, key.s);
    }
    return Value::undefined();
  }
  if ((obj.is_list() || obj.is_string()) && (key.kind == Kind::kInt || key.kind == Kind::kBool)) {
    int64_t k = key.kind == Kind::kInt ? key.i : key.b;
    if (obj.is_list()) {
      const int64_t n = static_cast<int64_t>(obj.list->size());
      if (k < 0) k += n;
      if (k < 0 || k >= n) return Value::undefined();
      return (*obj.list)[static_cast<size_t>(k)];
    }
    const std::vector<std::string> cps = code_points(obj.s);
    const int64_t n = static_cast<int64_t>(cps.size());
    if (k < 0) k += n;
    if (k < 0 || k >= n) return Value::undefined();
    return Value::string(cps[static_cast<size_t>(k)]);
  }
  if (key.is_string()) return get_attr(obj, key.s);
  return Value::undefined();
}

ValueList iterate(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined:
      return {};
    case Kind::kList:
      return *v.list;
    case Kind::kDict: {
      ValueList out;
      for (const auto& kv : *v.dict) out.push_back(Value::string(kv.first));
      return out;
    }
    case Kind::kString: {
      ValueList out;
      for (auto& cp : code_points(v.s)) out.push_back(Value::string(cp));
      return out;
    }
    default:
      fail("'" + type_name(v) + "' object is not iterable");
  }
}

Value call_value(const Value& callee, Args& args, const std::string& what) {
  if (callee.kind == Kind::kFunc) return (*callee.fn)(args);
  if (callee.is_undefined()) {
    fail("'" + (callee.s.empty() ? what : callee.s) + "' is undefined (cannot call it)");
  }
  fail("'" + type_name(callee) + "' object is not callable");
}

void install_globals(Context& ctx) {
  auto& g = ctx.frames.front();
  g["raise_exception"] =
      Value::function([](Args& a) -> Value { throw RaiseException(to_str(a.get(0, "message"))); });
  g["strftime_now"] = Value::function([](Args& a) -> Value {
    const std::string fmt = to_str(a.get(0, "format"));
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[512];
    const size_t n = std::strftime(buf, sizeof(buf), fmt.c_str(), &tm);
    return Value::string(std::string(buf, n));
  });
  g["namespace"] = Value::function([](Args& a) -> Value {
    Value ns = Value::make_dict();
    ns.is_namespace = true;
    for (const auto& p : a.pos) {
      if (!p.is_dict()) fail("namespace() positional argument must be a dict");
      for (const auto& [k, v] : *p.dict) ns.set(k, v);
    }
    for (const auto& [k, v] : a.kw) ns.set(k, v);
    return ns;
  });
  g["dict"] = Value::function([](Args& a) -> Value {
    Value d = Value::make_dict();
    for (const auto& [k, v] : a.kw) d.set(k, v);
    return d;
  });
  g["range"] = Value::function([](Args& a) -> Value {
    int64_t start = 0, stop, step = 1;
    if (a.pos.size() == 1) {
      stop = int_arg(a.pos[0], 0);
    } else if (a.pos.size() >= 2) {
      start = int_arg(a.pos[0], 0);
      stop = int_arg(a.pos[1], 0);
      if (a.pos.size() > 2) step = int_arg(a.pos[2], 1);
    } else {
      fail("range expected at least 1 argument, got 0");
    }
    if (step == 0) fail("range() arg 3 must not be zero");
    ValueList out;
    for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
      out.push_back(Value::integer(k));
      if (out.size() > 100000) fail("range too big");
    }
    return Value::make_list(std::move(out));
  });
}

}  // namespace fkv::jinja
