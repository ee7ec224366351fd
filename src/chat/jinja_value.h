// Runtime values of the Jinja interpreter (Python-like: lists and dicts are shared references).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace fkv::jinja {

// Internal error type; caught at the public API and turned into a Status.
struct JinjaError : std::runtime_error {
  explicit JinjaError(const std::string& m) : std::runtime_error(m) {}
};

// Thrown by the template's raise_exception(); carries the template's own message.
struct RaiseException : JinjaError {
  using JinjaError::JinjaError;
};

struct Value;
struct Args;
using ValueList = std::vector<Value>;
using DictItems = std::vector<std::pair<std::string, Value>>;
using NativeFn = std::function<Value(Args&)>;

enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunc };

struct Value {
  Kind kind = Kind::kUndefined;
  bool b = false;
  int64_t i = 0;
  double f = 0.0;
  std::string s;  // string payload, or the name of an undefined value (for messages)
  std::shared_ptr<ValueList> list;
  bool tuple = false;         // list printed as (a, b)
  bool is_namespace = false;  // dict that accepts `ns.attr = v`
  std::shared_ptr<DictItems> dict;
  std::shared_ptr<NativeFn> fn;

  static Value undefined(std::string name = "") {
    Value v;
    v.s = std::move(name);
    return v;
  }
  static Value none() {
    Value v;
    v.kind = Kind::kNone;
    return v;
  }
  static Value boolean(bool x) {
    Value v;
    v.kind = Kind::kBool;
    v.b = x;
    return v;
  }
  static Value integer(int64_t x) {
    Value v;
    v.kind = Kind::kInt;
    v.i = x;
    return v;
  }
  static Value number(double x) {
    Value v;
    v.kind = Kind::kFloat;
    v.f = x;
    return v;
  }
  static Value string(std::string x) {
    Value v;
    v.kind = Kind::kString;
    v.s = std::move(x);
    return v;
  }
  static Value make_list(ValueList items = {}, bool is_tuple = false) {
    Value v;
    v.kind = Kind::kList;
    v.list = std::make_shared<ValueList>(std::move(items));
    v.tuple = is_tuple;
    return v;
  }
  static Value make_dict(DictItems items = {}) {
    Value v;
    v.kind = Kind::kDict;
    v.dict = std::make_shared<DictItems>(std::move(items));
    return v;
  }
  static Value function(NativeFn f) {
    Value v;
    v.kind = Kind::kFunc;
    v.fn = std::make_shared<NativeFn>(std::move(f));
    return v;
  }

  bool is_undefined() const { return kind == Kind::kUndefined; }
  bool is_none() const { return kind == Kind::kNone; }
  bool is_string() const { return kind == Kind::kString; }
  bool is_number() const {
    return kind == Kind::kInt || kind == Kind::kFloat || kind == Kind::kBool;
  }
  bool is_list() const { return kind == Kind::kList; }
  bool is_dict() const { return kind == Kind::kDict; }

  // Dict lookup; nullptr when absent.
  const Value* find(const std::string& key) const;
  void set(const std::string& key, Value v);
};

struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  // Positional i or keyword `name`, else `fallback`.
  Value get(size_t i, const char* name, Value fallback = Value::undefined()) const;
};

bool truthy(const Value& v);
// Python str() of a value (what {{ }} prints).
std::string to_str(const Value& v);
// Python repr().
std::string repr(const Value& v);
std::string type_name(const Value& v);
bool values_equal(const Value& a, const Value& b);
Value from_json(const nlohmann::ordered_json& j);
struct JsonStyle {
  int indent = -1;  // < 0: single line
  bool sort_keys = false;
  bool ensure_ascii = false;
  std::optional<std::string> item_sep;  // unset: Python's default (", " or "," when indented)
  std::string key_sep = ": ";
};
// Python json.dumps(v, ensure_ascii=..., indent=..., separators=..., sort_keys=...).
std::string to_json(const Value& v, const JsonStyle& style);
// Python float repr: shortest round-trip digits, "1.0", "1e+20", "inf", "nan".
std::string float_repr(double d);

}  // namespace fkv::jinja
