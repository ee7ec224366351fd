// Jinja syntax tree and its evaluation.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "chat/jinja_value.h"

namespace fkv::jinja {

struct Context;

struct Expr {
  int line = 0;
  int col = 0;
  virtual ~Expr() = default;
  virtual Value eval(Context& ctx) const = 0;
};
using ExprPtr = std::unique_ptr<Expr>;

struct Node {
  int line = 0;
  virtual ~Node() = default;
  virtual void render(Context& ctx, std::string& out) const = 0;
};
using NodePtr = std::unique_ptr<Node>;
using NodeList = std::vector<NodePtr>;

enum class Flow { kNormal, kBreak, kContinue };

struct Context {
  std::vector<std::unordered_map<std::string, Value>> frames;  // [0] = globals
  Flow flow = Flow::kNormal;
  int line = 0;   // line of the statement being executed, for error messages
  int depth = 0;  // macro recursion guard

  Value lookup(const std::string& name) const {
    for (auto it = frames.rbegin(); it != frames.rend(); ++it) {
      auto f = it->find(name);
      if (f != it->end()) return f->second;
    }
    return Value::undefined(name);
  }
  void assign(const std::string& name, Value v) { frames.back()[name] = std::move(v); }
};

void render_body(const NodeList& body, Context& ctx, std::string& out);

// Filters and tests (jinja_builtins.cc).
using FilterFn = Value (*)(const Value& self, Args& args, Context& ctx);
using TestFn = bool (*)(const Value& self, Args& args);
FilterFn find_filter(const std::string& name);
TestFn find_test(const std::string& name);
void install_globals(Context& ctx);
Value get_attr(const Value& obj, const std::string& name);
Value get_item(const Value& obj, const Value& key);
ValueList iterate(const Value& v);
Value call_value(const Value& callee, Args& args, const std::string& what);
[[noreturn]] void raise_undefined(const Value& v);

struct TemplateNode {
  NodeList body;
};

// Throws JinjaError("line L, col C: ...").
std::unique_ptr<TemplateNode> parse_template(const std::string& source);

}  // namespace fkv::jinja
