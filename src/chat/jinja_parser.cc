// Parser and evaluator of the Jinja subset: expressions follow jinja2's precedence
// (or < and < not < compare < +,- < ~ < *,/,//,% < ** < unary < postfix/filters/tests).
#include <climits>
#include <cmath>
#include <cstdint>
#include <set>

#include "chat/jinja_ast.h"
#include "chat/jinja_lexer.h"

namespace fkv::jinja {
namespace {

[[noreturn]] void type_error(const std::string& msg) { throw JinjaError(msg); }

double as_double(const Value& v) {
  if (v.kind == Kind::kFloat) return v.f;
  if (v.kind == Kind::kInt) return static_cast<double>(v.i);
  return v.b ? 1.0 : 0.0;
}
int64_t as_int(const Value& v) { return v.kind == Kind::kInt ? v.i : (v.b ? 1 : 0); }

// ---------------------------------------------------------------------------------------------
// Expressions

struct Literal : Expr {
  Value value;
  Value eval(Context&) const override { return value; }
};

struct Name : Expr {
  std::string name;
  Value eval(Context& ctx) const override { return ctx.lookup(name); }
};

struct ListExpr : Expr {
  std::vector<ExprPtr> items;
  bool tuple = false;
  Value eval(Context& ctx) const override {
    ValueList out;
    for (const auto& e : items) out.push_back(e->eval(ctx));
    return Value::make_list(std::move(out), tuple);
  }
};

struct DictExpr : Expr {
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
  Value eval(Context& ctx) const override {
    Value d = Value::make_dict();
    for (const auto& [k, v] : items) {
      const Value key = k->eval(ctx);
      if (!key.is_string()) type_error("only string dict keys are supported");
      d.set(key.s, v->eval(ctx));
    }
    return d;
  }
};

struct GetAttr : Expr {
  ExprPtr obj;
  std::string name;
  Value eval(Context& ctx) const override { return get_attr(obj->eval(ctx), name); }
};

struct GetItem : Expr {
  ExprPtr obj, key;
  Value eval(Context& ctx) const override { return get_item(obj->eval(ctx), key->eval(ctx)); }
};

// Python slice semantics over code points (strings) or items (lists).
struct SliceExpr : Expr {
  ExprPtr obj, start, stop, step;
  Value eval(Context& ctx) const override {
    const Value v = obj->eval(ctx);
    auto opt = [&](const ExprPtr& e, bool& present) -> int64_t {
      present = false;
      if (!e) return 0;
      const Value x = e->eval(ctx);
      if (x.is_none()) return 0;
      if (x.kind != Kind::kInt) type_error("slice indices must be integers or None");
      present = true;
      return x.i;
    };
    bool has_start, has_stop, has_step;
    int64_t a = opt(start, has_start), b = opt(stop, has_stop), s = opt(step, has_step);
    if (!has_step) s = 1;
    if (s == 0) type_error("slice step cannot be zero");
    std::vector<std::string> chars;
    int64_t n;
    if (v.is_string()) {
      for (size_t k = 0; k < v.s.size();) {
        size_t len = 1;
        const unsigned char c = static_cast<unsigned char>(v.s[k]);
        if (c >= 0xF0)
          len = 4;
        else if (c >= 0xE0)
          len = 3;
        else if (c >= 0xC0)
          len = 2;
        chars.push_back(v.s.substr(k, len));
        k += len;
      }
      n = static_cast<int64_t>(chars.size());
    } else if (v.is_list()) {
      n = static_cast<int64_t>(v.list->size());
    } else if (v.is_undefined()) {
      raise_undefined(v);
    } else {
      type_error("'" + type_name(v) + "' object is not subscriptable");
    }
    auto clamp = [&](int64_t x, bool present, int64_t dflt) -> int64_t {
      if (!present) return dflt;
      if (x < 0) x += n;
      if (s > 0) return std::max<int64_t>(0, std::min(x, n));
      return std::max<int64_t>(-1, std::min(x, n - 1));
    };
    const int64_t lo = clamp(a, has_start, s > 0 ? 0 : n - 1);
    const int64_t hi = clamp(b, has_stop, s > 0 ? n : -1);
    std::vector<int64_t> idx;
    for (int64_t k = lo; s > 0 ? k < hi : k > hi; k += s) idx.push_back(k);
    if (v.is_string()) {
      std::string out;
      for (int64_t k : idx) out += chars[static_cast<size_t>(k)];
      return Value::string(out);
    }
    ValueList out;
    for (int64_t k : idx) out.push_back((*v.list)[static_cast<size_t>(k)]);
    return Value::make_list(std::move(out), v.tuple);
  }
};

struct CallArgs {
  std::vector<ExprPtr> pos;
  std::vector<std::pair<std::string, ExprPtr>> kw;
  Args eval(Context& ctx) const {
    Args a;
    for (const auto& e : pos) a.pos.push_back(e->eval(ctx));
    for (const auto& [k, e] : kw) a.kw.emplace_back(k, e->eval(ctx));
    return a;
  }
};

struct Call : Expr {
  ExprPtr callee;
  CallArgs args;
  std::string what;
  Value eval(Context& ctx) const override {
    const Value f = callee->eval(ctx);
    Args a = args.eval(ctx);
    return call_value(f, a, what);
  }
};

struct FilterExpr : Expr {
  ExprPtr obj;
  std::string name;
  FilterFn fn = nullptr;
  CallArgs args;
  Value eval(Context& ctx) const override {
    const Value v = obj->eval(ctx);
    Args a = args.eval(ctx);
    return fn(v, a, ctx);
  }
};

struct TestExpr : Expr {
  ExprPtr obj;
  TestFn fn = nullptr;
  CallArgs args;
  bool negated = false;
  Value eval(Context& ctx) const override {
    const Value v = obj->eval(ctx);
    Args a = args.eval(ctx);
    return Value::boolean(fn(v, a) != negated);
  }
};

struct CondExpr : Expr {
  ExprPtr cond, then, otherwise;
  Value eval(Context& ctx) const override {
    if (truthy(cond->eval(ctx))) return then->eval(ctx);
    return otherwise ? otherwise->eval(ctx) : Value::undefined();
  }
};

struct Unary : Expr {
  std::string op;
  ExprPtr operand;
  Value eval(Context& ctx) const override {
    const Value v = operand->eval(ctx);
    if (op == "not") return Value::boolean(!truthy(v));
    if (v.is_undefined()) raise_undefined(v);
    if (!v.is_number()) type_error("bad operand type for unary " + op + ": '" + type_name(v) + "'");
    if (op == "+") return v.kind == Kind::kFloat ? v : Value::integer(as_int(v));
    if (v.kind == Kind::kFloat) return Value::number(-v.f);
    if (as_int(v) == INT64_MIN) type_error("integer overflow in unary '-'");
    return Value::integer(-as_int(v));
  }
};

Value arith(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined()) raise_undefined(a);
  if (b.is_undefined()) raise_undefined(b);
  if (op == "+") {
    if (a.is_string() && b.is_string()) return Value::string(a.s + b.s);
    if (a.is_list() && b.is_list()) {
      ValueList out = *a.list;
      out.insert(out.end(), b.list->begin(), b.list->end());
      return Value::make_list(std::move(out), a.tuple);
    }
  }
  if (op == "*") {
    const Value* seq =
        a.is_string() || a.is_list() ? &a : (b.is_string() || b.is_list() ? &b : nullptr);
    const Value* cnt = seq == &a ? &b : &a;
    if (seq && (cnt->kind == Kind::kInt || cnt->kind == Kind::kBool)) {
      const int64_t n = as_int(*cnt);
      const size_t unit = seq->is_string() ? seq->s.size() : seq->list->size();
      if (n > 0 && unit > 0 && static_cast<uint64_t>(n) > (uint64_t{1} << 26) / unit) {
        type_error("sequence repetition too large");
      }
      if (seq->is_string()) {
        std::string out;
        for (int64_t k = 0; k < n; ++k) out += seq->s;
        return Value::string(out);
      }
      ValueList out;
      for (int64_t k = 0; k < n; ++k) out.insert(out.end(), seq->list->begin(), seq->list->end());
      return Value::make_list(std::move(out), seq->tuple);
    }
  }
  if (!a.is_number() || !b.is_number()) {
    if (op == "+" && a.is_string()) {
      type_error("can only concatenate str (not \"" + type_name(b) + "\") to str");
    }
    type_error("unsupported operand type(s) for " + op + ": '" + type_name(a) + "' and '" +
               type_name(b) + "'");
  }
  const bool fl = a.kind == Kind::kFloat || b.kind == Kind::kFloat;
  if (op == "/") {
    if (as_double(b) == 0.0) type_error("division by zero");
    return Value::number(as_double(a) / as_double(b));
  }
  if (op == "**") {
    if (!fl && as_int(b) >= 0) {
      int64_t r = 1;
      for (int64_t k = 0; k < as_int(b) && r != 0; ++k) {
        if (__builtin_mul_overflow(r, as_int(a), &r)) {
          type_error("integer overflow in '**' (64-bit integers only)");
        }
        if (r == 1 || r == -1) {  // 1**n / (-1)**n: finish without looping n times
          if (r == -1 && (as_int(b) - k - 1) % 2 == 1) r = 1;
          break;
        }
      }
      return Value::integer(r);
    }
    return Value::number(std::pow(as_double(a), as_double(b)));
  }
  if (fl) {
    const double x = as_double(a), y = as_double(b);
    if (op == "+") return Value::number(x + y);
    if (op == "-") return Value::number(x - y);
    if (op == "*") return Value::number(x * y);
    if (y == 0.0) type_error("float division by zero");
    if (op == "//") return Value::number(std::floor(x / y));
    double m = std::fmod(x, y);
    if (m != 0.0 && ((m < 0) != (y < 0))) m += y;
    return Value::number(m);
  }
  const int64_t x = as_int(a), y = as_int(b);
  int64_t r64 = 0;
  // Python ints are unbounded; ours are 64-bit, so overflow is an error rather than UB.
  if (op == "+" || op == "-" || op == "*") {
    const bool over = op == "+"   ? __builtin_add_overflow(x, y, &r64)
                      : op == "-" ? __builtin_sub_overflow(x, y, &r64)
                                  : __builtin_mul_overflow(x, y, &r64);
    if (over) type_error("integer overflow in '" + op + "' (64-bit integers only)");
    return Value::integer(r64);
  }
  if (y == 0) type_error("integer division or modulo by zero");
  if (x == INT64_MIN && y == -1)
    type_error("integer overflow in '" + op + "' (64-bit integers only)");
  int64_t q = x / y, r = x % y;
  if (r != 0 && ((r < 0) != (y < 0))) {
    --q;
    r += y;
  }
  return Value::integer(op == "//" ? q : r);
}

bool less_than(const Value& a, const Value& b, const std::string& op) {
  if (a.is_number() && b.is_number()) return as_double(a) < as_double(b);
  if (a.is_string() && b.is_string()) return a.s < b.s;
  if (a.is_undefined()) raise_undefined(a);
  if (b.is_undefined()) raise_undefined(b);
  type_error("'" + op + "' not supported between instances of '" + type_name(a) + "' and '" +
             type_name(b) + "'");
}

bool contains(const Value& container, const Value& item) {
  if (container.is_string()) {
    if (!item.is_string()) type_error("'in <string>' requires string as left operand");
    return container.s.find(item.s) != std::string::npos;
  }
  if (container.is_list()) {
    for (const auto& x : *container.list) {
      if (values_equal(x, item)) return true;
    }
    return false;
  }
  if (container.is_dict()) return item.is_string() && container.find(item.s) != nullptr;
  if (container.is_undefined()) raise_undefined(container);
  type_error("argument of type '" + type_name(container) + "' is not iterable");
}

struct Binary : Expr {
  std::string op;
  ExprPtr left, right;
  Value eval(Context& ctx) const override {
    if (op == "and") {
      Value l = left->eval(ctx);
      return truthy(l) ? right->eval(ctx) : l;
    }
    if (op == "or") {
      Value l = left->eval(ctx);
      return truthy(l) ? l : right->eval(ctx);
    }
    const Value l = left->eval(ctx);
    const Value r = right->eval(ctx);
    if (op == "~") return Value::string(to_str(l) + to_str(r));
    if (op == "==") return Value::boolean(values_equal(l, r));
    if (op == "!=") return Value::boolean(!values_equal(l, r));
    if (op == "<") return Value::boolean(less_than(l, r, op));
    if (op == ">") return Value::boolean(less_than(r, l, op));
    if (op == "<=") return Value::boolean(!less_than(r, l, op));
    if (op == ">=") return Value::boolean(!less_than(l, r, op));
    if (op == "in") return Value::boolean(contains(r, l));
    if (op == "not in") return Value::boolean(!contains(r, l));
    return arith(op, l, r);
  }
};

// Chained comparison a < b < c == (a < b) and (b < c), each operand evaluated once.
struct Compare : Expr {
  ExprPtr first;
  std::vector<std::pair<std::string, ExprPtr>> rest;
  Value eval(Context& ctx) const override {
    Value l = first->eval(ctx);
    for (const auto& [op, e] : rest) {
      Value r = e->eval(ctx);
      bool ok;
      if (op == "==")
        ok = values_equal(l, r);
      else if (op == "!=")
        ok = !values_equal(l, r);
      else if (op == "<")
        ok = less_than(l, r, op);
      else if (op == ">")
        ok = less_than(r, l, op);
      else if (op == "<=")
        ok = !less_than(r, l, op);
      else if (op == ">=")
        ok = !less_than(l, r, op);
      else if (op == "in")
        ok = contains(r, l);
      else
        ok = !contains(r, l);
      if (!ok) return Value::boolean(false);
      l = std::move(r);
    }
    return Value::boolean(true);
  }
};

// ---------------------------------------------------------------------------------------------
// Statements

struct TextNode : Node {
  std::string text;
  void render(Context&, std::string& out) const override { out += text; }
};

struct OutputNode : Node {
  ExprPtr expr;
  void render(Context& ctx, std::string& out) const override {
    ctx.line = line;
    out += to_str(expr->eval(ctx));
  }
};

struct IfNode : Node {
  std::vector<std::pair<ExprPtr, NodeList>> branches;
  NodeList otherwise;
  void render(Context& ctx, std::string& out) const override {
    for (const auto& [cond, body] : branches) {
      ctx.line = cond->line;
      if (truthy(cond->eval(ctx))) {
        render_body(body, ctx, out);
        return;
      }
    }
    render_body(otherwise, ctx, out);
  }
};

// Assignment target: a name, a tuple of names, or ns.attr.
struct Target {
  std::vector<std::string> names;  // >1 => tuple unpacking
  std::string attr_of;             // set => names[0] is the namespace, attr_of the attribute
  void assign(Context& ctx, const Value& v) const {
    if (!attr_of.empty()) {
      const Value ns = ctx.lookup(names[0]);
      if (!ns.is_dict() || !ns.is_namespace) {
        type_error("cannot assign attribute on non-namespace object '" + names[0] + "'");
      }
      const_cast<Value&>(ns).set(attr_of, v);
      return;
    }
    if (names.size() == 1) {
      ctx.assign(names[0], v);
      return;
    }
    const ValueList items = iterate(v);
    if (items.size() != names.size()) {
      type_error("cannot unpack " + std::to_string(items.size()) + " values into " +
                 std::to_string(names.size()) + " names");
    }
    for (size_t k = 0; k < names.size(); ++k) ctx.assign(names[k], items[k]);
  }
};

struct SetNode : Node {
  Target target;
  ExprPtr expr;   // {% set x = expr %}
  NodeList body;  // {% set x %}...{% endset %}
  void render(Context& ctx, std::string&) const override {
    ctx.line = line;
    if (expr) {
      target.assign(ctx, expr->eval(ctx));
    } else {
      std::string captured;
      render_body(body, ctx, captured);
      target.assign(ctx, Value::string(captured));
    }
  }
};

struct ForNode : Node {
  Target target;
  ExprPtr iter, filter;
  NodeList body, otherwise;
  void render(Context& ctx, std::string& out) const override {
    ctx.line = line;
    const Value seq = iter->eval(ctx);
    if (seq.is_none()) type_error("'NoneType' object is not iterable");
    ValueList items = iterate(seq);
    if (filter) {
      // The loop filter runs before loop.* is computed, with the target bound.
      ValueList kept;
      for (const auto& x : items) {
        ctx.frames.emplace_back();
        target.assign(ctx, x);
        const bool keep = truthy(filter->eval(ctx));
        ctx.frames.pop_back();
        if (keep) kept.push_back(x);
      }
      items = std::move(kept);
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t k = 0; k < n; ++k) {
      Value loop = Value::make_dict();
      loop.set("index", Value::integer(k + 1));
      loop.set("index0", Value::integer(k));
      loop.set("revindex", Value::integer(n - k));
      loop.set("revindex0", Value::integer(n - k - 1));
      loop.set("first", Value::boolean(k == 0));
      loop.set("last", Value::boolean(k == n - 1));
      loop.set("length", Value::integer(n));
      loop.set("depth", Value::integer(1));
      loop.set("depth0", Value::integer(0));
      loop.set("previtem",
               k > 0 ? items[static_cast<size_t>(k - 1)] : Value::undefined("previtem"));
      loop.set("nextitem",
               k + 1 < n ? items[static_cast<size_t>(k + 1)] : Value::undefined("nextitem"));
      const int64_t idx = k;
      loop.set("cycle", Value::function([idx](Args& a) -> Value {
                 if (a.pos.empty()) type_error("no items for cycling given");
                 return a.pos[static_cast<size_t>(idx) % a.pos.size()];
               }));
      // Each iteration gets a fresh scope: {% set %} inside does not survive it.
      ctx.frames.emplace_back();
      ctx.assign("loop", loop);
      target.assign(ctx, items[static_cast<size_t>(k)]);
      render_body(body, ctx, out);
      ctx.frames.pop_back();
      const Flow f = ctx.flow;
      ctx.flow = Flow::kNormal;
      if (f == Flow::kBreak) break;
    }
    if (n == 0) render_body(otherwise, ctx, out);
  }
};

struct FlowNode : Node {
  Flow flow;
  void render(Context& ctx, std::string&) const override { ctx.flow = flow; }
};

struct BlockNode : Node {  // {% generation %}: renders its body unchanged
  NodeList body;
  void render(Context& ctx, std::string& out) const override { render_body(body, ctx, out); }
};

struct MacroNode : Node {
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // aligned with params; null = required
  NodeList body;
  void render(Context& ctx, std::string&) const override {
    Context* c = &ctx;
    const MacroNode* self = this;
    ctx.assign(name, Value::function([c, self](Args& a) -> Value {
                 if (++c->depth > 64) type_error("macro recursion too deep");
                 if (a.pos.size() > self->params.size()) {
                   type_error("macro '" + self->name + "' takes not more than " +
                              std::to_string(self->params.size()) + " argument(s)");
                 }
                 std::unordered_map<std::string, Value> frame;
                 for (size_t k = 0; k < self->params.size(); ++k) {
                   Value v = a.get(k, self->params[k].c_str());
                   if (v.is_undefined() && self->defaults[k]) v = self->defaults[k]->eval(*c);
                   if (v.is_undefined()) v = Value::undefined(self->params[k]);
                   frame[self->params[k]] = v;
                 }
                 for (const auto& [k, v] : a.kw) {
                   bool known = false;
                   for (const auto& p : self->params) known |= p == k;
                   if (!known)
                     type_error("macro '" + self->name + "' has no parameter '" + k + "'");
                 }
                 c->frames.push_back(std::move(frame));
                 std::string out;
                 const int saved_line = c->line;
                 render_body(self->body, *c, out);
                 c->line = saved_line;
                 c->frames.pop_back();
                 --c->depth;
                 return Value::string(out);
               }));
  }
};

// ---------------------------------------------------------------------------------------------
// Parser

class Parser {
 public:
  explicit Parser(std::vector<Token> toks) : t_(std::move(toks)) {}

  std::unique_ptr<TemplateNode> parse() {
    auto root = std::make_unique<TemplateNode>();
    std::string end;
    root->body = parse_body({}, end);
    return root;
  }

 private:
  const Token& cur() const { return t_[p_]; }
  const Token& peek(size_t k = 1) const { return t_[std::min(p_ + k, t_.size() - 1)]; }
  Token next() { return t_[p_ < t_.size() - 1 ? p_++ : p_]; }

  [[noreturn]] void fail(const Token& at, const std::string& msg) const {
    throw JinjaError("line " + std::to_string(at.line) + ", col " + std::to_string(at.col) + ": " +
                     msg);
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::kEof:
        return "end of template";
      case Tok::kVarEnd:
        return "'}}'";
      case Tok::kBlockEnd:
        return "'%}'";
      case Tok::kString:
        return "string literal";
      case Tok::kText:
        return "template text";
      default:
        return "'" + t.text + "'";
    }
  }
  bool is_op(const char* op) const { return cur().type == Tok::kOp && cur().text == op; }
  bool is_name(const char* n) const { return cur().type == Tok::kName && cur().text == n; }
  void expect_op(const char* op) {
    if (!is_op(op)) fail(cur(), std::string("expected '") + op + "', got " + describe(cur()));
    next();
  }
  std::string expect_name() {
    if (cur().type != Tok::kName) fail(cur(), "expected a name, got " + describe(cur()));
    return next().text;
  }
  void expect_block_end() {
    if (cur().type != Tok::kBlockEnd) fail(cur(), "expected '%}', got " + describe(cur()));
    next();
  }

  template <class T>
  std::unique_ptr<T> make(const Token& at) {
    auto n = std::make_unique<T>();
    n->line = at.line;
    if constexpr (std::is_base_of_v<Expr, T>) n->col = at.col;
    return n;
  }

  // Parses nodes until a block tag named in `ends` (left unconsumed after its name: `end`
  // receives the tag name and the tokens continue right after the name).
  NodeList parse_body(const std::set<std::string>& ends, std::string& end) {
    NodeList out;
    while (true) {
      const Token& t = cur();
      if (t.type == Tok::kEof) {
        if (!ends.empty()) {
          fail(t, "unexpected end of template; expected " + join(ends) + " to close a block");
        }
        return out;
      }
      if (t.type == Tok::kText) {
        auto n = make<TextNode>(t);
        n->text = t.text;
        next();
        out.push_back(std::move(n));
      } else if (t.type == Tok::kVarBegin) {
        next();
        auto n = make<OutputNode>(t);
        n->expr = parse_tuple_or_expr();
        if (cur().type != Tok::kVarEnd) fail(cur(), "expected '}}', got " + describe(cur()));
        next();
        out.push_back(std::move(n));
      } else if (t.type == Tok::kBlockBegin) {
        next();
        const Token& name_tok = cur();
        if (name_tok.type != Tok::kName)
          fail(name_tok, "expected a tag name, got " + describe(name_tok));
        const std::string name = name_tok.text;
        if (ends.count(name)) {
          next();
          end = name;
          return out;
        }
        out.push_back(parse_statement());
      } else {
        fail(t, "unexpected " + describe(t));
      }
    }
  }

  static std::string join(const std::set<std::string>& s) {
    std::string out;
    for (const auto& x : s) out += (out.empty() ? "'" : " or '") + x + "'";
    return out;
  }

  NodePtr parse_statement() {
    DepthGuard guard(this);
    const Token tag = next();
    const std::string& name = tag.text;
    if (name == "if") {
      auto n = make<IfNode>(tag);
      ExprPtr cond = parse_expr();
      expect_block_end();
      while (true) {
        std::string end;
        NodeList body = parse_body({"elif", "else", "endif"}, end);
        n->branches.emplace_back(std::move(cond), std::move(body));
        if (end == "elif") {
          cond = parse_expr();
          expect_block_end();
          continue;
        }
        if (end == "else") {
          expect_block_end();
          n->otherwise = parse_body({"endif"}, end);
        }
        expect_block_end();
        return n;
      }
    }
    if (name == "for") {
      auto n = make<ForNode>(tag);
      n->target = parse_target(false);
      if (!is_name("in")) fail(cur(), "expected 'in' in for loop, got " + describe(cur()));
      next();
      n->iter = parse_tuple_or_expr(/*no_condexpr=*/true);
      if (is_name("if")) {
        next();
        n->filter = parse_expr();
      }
      if (is_name("recursive")) fail(cur(), "unsupported construct: recursive for loops");
      expect_block_end();
      std::string end;
      n->body = parse_body({"else", "endfor"}, end);
      if (end == "else") {
        expect_block_end();
        n->otherwise = parse_body({"endfor"}, end);
      }
      expect_block_end();
      return n;
    }
    if (name == "set") {
      auto n = make<SetNode>(tag);
      n->target = parse_target(true);
      if (is_op("=")) {
        next();
        n->expr = parse_tuple_or_expr();
        expect_block_end();
      } else {
        expect_block_end();
        std::string end;
        n->body = parse_body({"endset"}, end);
        expect_block_end();
      }
      return n;
    }
    if (name == "macro") {
      auto n = make<MacroNode>(tag);
      n->name = expect_name();
      expect_op("(");
      while (!is_op(")")) {
        n->params.push_back(expect_name());
        if (is_op("=")) {
          next();
          n->defaults.push_back(parse_expr());
        } else {
          n->defaults.push_back(nullptr);
        }
        if (!is_op(")")) expect_op(",");
      }
      next();
      expect_block_end();
      std::string end;
      n->body = parse_body({"endmacro"}, end);
      if (cur().type == Tok::kName) next();  // {% endmacro name %}
      expect_block_end();
      return n;
    }
    if (name == "break" || name == "continue") {
      auto n = make<FlowNode>(tag);
      n->flow = name == "break" ? Flow::kBreak : Flow::kContinue;
      expect_block_end();
      return n;
    }
    if (name == "generation") {
      auto n = make<BlockNode>(tag);
      expect_block_end();
      std::string end;
      n->body = parse_body({"endgeneration"}, end);
      expect_block_end();
      return n;
    }
    fail(tag, "unsupported or unknown tag '" + name + "'");
  }

  Target parse_target(bool allow_attr) {
    Target t;
    t.names.push_back(expect_name());
    if (allow_attr && is_op(".")) {
      next();
      t.attr_of = expect_name();
      return t;
    }
    while (is_op(",")) {
      next();
      t.names.push_back(expect_name());
    }
    return t;
  }

  // `a, b` without parentheses is a tuple (jinja2 parse_tuple).
  ExprPtr parse_tuple_or_expr(bool no_condexpr = false) {
    const Token& start = cur();
    ExprPtr first = no_condexpr ? parse_or() : parse_expr();
    if (!is_op(",")) return first;
    auto list = make<ListExpr>(start);
    list->tuple = true;
    list->items.push_back(std::move(first));
    while (is_op(",")) {
      next();
      if (cur().type == Tok::kVarEnd || cur().type == Tok::kBlockEnd || is_op(")")) break;
      list->items.push_back(no_condexpr ? parse_or() : parse_expr());
    }
    return list;
  }

  ExprPtr parse_expr() {
    DepthGuard guard(this);
    const Token& start = cur();
    ExprPtr e = parse_or();
    while (is_name("if")) {
      next();
      auto c = make<CondExpr>(start);
      c->then = std::move(e);
      c->cond = parse_or();
      if (is_name("else")) {
        next();
        c->otherwise = parse_expr();
      }
      e = std::move(c);
    }
    return e;
  }

  ExprPtr binary(const Token& at, const std::string& op, ExprPtr l, ExprPtr r) {
    auto b = make<Binary>(at);
    b->op = op;
    b->left = std::move(l);
    b->right = std::move(r);
    return b;
  }

  ExprPtr parse_or() {
    ExprPtr l = parse_and();
    while (is_name("or")) {
      const Token at = next();
      l = binary(at, "or", std::move(l), parse_and());
    }
    return l;
  }
  ExprPtr parse_and() {
    ExprPtr l = parse_not();
    while (is_name("and")) {
      const Token at = next();
      l = binary(at, "and", std::move(l), parse_not());
    }
    return l;
  }
  ExprPtr parse_not() {
    DepthGuard guard(this);
    if (is_name("not")) {
      const Token at = next();
      auto u = make<Unary>(at);
      u->op = "not";
      u->operand = parse_not();
      return u;
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    const Token& start = cur();
    ExprPtr first = parse_math1();
    std::vector<std::pair<std::string, ExprPtr>> rest;
    while (true) {
      std::string op;
      if (cur().type == Tok::kOp &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == ">" ||
           cur().text == "<=" || cur().text == ">=")) {
        op = next().text;
      } else if (is_name("in")) {
        next();
        op = "in";
      } else if (is_name("not") && peek().type == Tok::kName && peek().text == "in") {
        next();
        next();
        op = "not in";
      } else {
        break;
      }
      rest.emplace_back(op, parse_math1());
    }
    if (rest.empty()) return first;
    if (rest.size() == 1)
      return binary(start, rest[0].first, std::move(first), std::move(rest[0].second));
    auto c = make<Compare>(start);
    c->first = std::move(first);
    c->rest = std::move(rest);
    return c;
  }
  ExprPtr parse_math1() {
    ExprPtr l = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token at = next();
      l = binary(at, at.text, std::move(l), parse_concat());
    }
    return l;
  }
  ExprPtr parse_concat() {
    ExprPtr l = parse_math2();
    while (is_op("~")) {
      const Token at = next();
      l = binary(at, "~", std::move(l), parse_math2());
    }
    return l;
  }
  ExprPtr parse_math2() {
    ExprPtr l = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token at = next();
      l = binary(at, at.text, std::move(l), parse_pow());
    }
    return l;
  }
  ExprPtr parse_pow() {
    ExprPtr l = parse_unary(true);
    while (is_op("**")) {
      const Token at = next();
      l = binary(at, "**", std::move(l), parse_unary(true));
    }
    return l;
  }
  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(this);
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      const Token at = next();
      auto u = make<Unary>(at);
      u->op = at.text;
      u->operand = parse_unary(false);
      node = std::move(u);
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token t = cur();
    switch (t.type) {
      case Tok::kName: {
        next();
        auto lit = make<Literal>(t);
        if (t.text == "true" || t.text == "True") {
          lit->value = Value::boolean(true);
        } else if (t.text == "false" || t.text == "False") {
          lit->value = Value::boolean(false);
        } else if (t.text == "none" || t.text == "None") {
          lit->value = Value::none();
        } else {
          auto n = make<Name>(t);
          n->name = t.text;
          return n;
        }
        return lit;
      }
      case Tok::kString: {
        std::string s;
        while (cur().type == Tok::kString) s += next().text;  // adjacent literals concatenate
        auto lit = make<Literal>(t);
        lit->value = Value::string(s);
        return lit;
      }
      case Tok::kInt: {
        next();
        auto lit = make<Literal>(t);
        try {
          lit->value = Value::integer(std::stoll(t.text));
        } catch (...) {
          fail(t, "integer literal out of range: " + t.text);
        }
        return lit;
      }
      case Tok::kFloat: {
        next();
        auto lit = make<Literal>(t);
        lit->value = Value::number(std::strtod(t.text.c_str(), nullptr));
        return lit;
      }
      case Tok::kOp:
        if (t.text == "(") {
          next();
          if (is_op(")")) {
            next();
            auto l = make<ListExpr>(t);
            l->tuple = true;
            return l;
          }
          ExprPtr e = parse_tuple_or_expr();
          expect_op(")");
          return e;
        }
        if (t.text == "[") {
          next();
          auto l = make<ListExpr>(t);
          while (!is_op("]")) {
            l->items.push_back(parse_expr());
            if (!is_op("]")) expect_op(",");
          }
          next();
          return l;
        }
        if (t.text == "{") {
          next();
          auto d = make<DictExpr>(t);
          while (!is_op("}")) {
            ExprPtr k = parse_expr();
            expect_op(":");
            d->items.emplace_back(std::move(k), parse_expr());
            if (!is_op("}")) expect_op(",");
          }
          next();
          return d;
        }
        break;
      default:
        break;
    }
    fail(t, "unexpected " + describe(t));
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (is_op(".")) {
        const Token at = next();
        if (cur().type == Tok::kInt) {  // foo.0 == foo[0]
          auto g = make<GetItem>(at);
          g->obj = std::move(node);
          const Token index = next();
          auto lit = make<Literal>(index);
          try {
            lit->value = Value::integer(std::stoll(index.text));
          } catch (...) {
            fail(index, "integer index out of range: " + index.text);
          }
          g->key = std::move(lit);
          node = std::move(g);
          continue;
        }
        auto g = make<GetAttr>(at);
        g->obj = std::move(node);
        g->name = expect_name();
        node = std::move(g);
      } else if (is_op("[")) {
        node = parse_subscript(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr node) {
    const Token at = next();  // '['
    ExprPtr parts[3];
    int colons = 0;
    while (!is_op("]")) {
      if (is_op(":")) {
        next();
        if (++colons > 2) fail(cur(), "too many ':' in slice");
        continue;
      }
      if (parts[colons]) fail(cur(), "expected ']' or ':', got " + describe(cur()));
      parts[colons] = parse_expr();
    }
    next();
    if (colons == 0) {
      if (!parts[0]) fail(at, "empty subscript");
      auto g = make<GetItem>(at);
      g->obj = std::move(node);
      g->key = std::move(parts[0]);
      return g;
    }
    auto s = make<SliceExpr>(at);
    s->obj = std::move(node);
    s->start = std::move(parts[0]);
    s->stop = std::move(parts[1]);
    s->step = std::move(parts[2]);
    return s;
  }

  void parse_call_args(CallArgs& args) {
    expect_op("(");
    while (!is_op(")")) {
      if (cur().type == Tok::kName && peek().type == Tok::kOp && peek().text == "=") {
        const std::string k = next().text;
        next();
        args.kw.emplace_back(k, parse_expr());
      } else {
        if (!args.kw.empty()) fail(cur(), "positional argument after keyword argument");
        args.pos.push_back(parse_expr());
      }
      if (!is_op(")")) expect_op(",");
    }
    next();
  }

  ExprPtr parse_call(ExprPtr node) {
    auto c = make<Call>(cur());
    if (auto* n = dynamic_cast<Name*>(node.get())) c->what = n->name;
    if (auto* g = dynamic_cast<GetAttr*>(node.get())) c->what = g->name;
    c->callee = std::move(node);
    parse_call_args(c->args);
    return c;
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (is_op("|")) {
        next();
        const Token name_tok = cur();
        std::string name = expect_name();
        while (is_op(".")) {
          next();
          name += "." + expect_name();
        }
        auto f = make<FilterExpr>(name_tok);
        f->fn = find_filter(name);
        if (!f->fn) fail(name_tok, "unknown filter '" + name + "'");
        f->name = name;
        f->obj = std::move(node);
        if (is_op("(")) parse_call_args(f->args);
        node = std::move(f);
      } else if (is_name("is")) {
        next();
        auto t = make<TestExpr>(cur());
        if (is_name("not")) {
          next();
          t->negated = true;
        }
        const Token name_tok = cur();
        std::string name;
        if (cur().type == Tok::kName) {
          name = next().text;
        } else if (cur().type == Tok::kOp &&
                   (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                    cur().text == ">" || cur().text == "<=" || cur().text == ">=")) {
          name = next().text;
        } else {
          fail(cur(), "expected a test name, got " + describe(cur()));
        }
        // `is none` / `is true` etc. arrive as literals' names.
        t->fn = find_test(name);
        if (!t->fn) fail(name_tok, "unknown test '" + name + "'");
        t->obj = std::move(node);
        if (is_op("(")) {
          parse_call_args(t->args);
        } else if ((cur().type == Tok::kName || cur().type == Tok::kString ||
                    cur().type == Tok::kInt || cur().type == Tok::kFloat || is_op("(") ||
                    is_op("[") || is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and") && !is_name("is") &&
                   !is_name("if") && !is_name("in") && !is_name("not")) {
          t->args.pos.push_back(parse_postfix(parse_primary()));
        }
        node = std::move(t);
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  // Bounds recursion so hostile templates cannot overflow the stack.
  struct DepthGuard {
    Parser* p;
    explicit DepthGuard(Parser* parser) : p(parser) {
      if (++p->depth_ > kMaxDepth) p->fail(p->cur(), "template nested too deeply");
    }
    ~DepthGuard() { --p->depth_; }
  };
  static constexpr int kMaxDepth = 300;

  std::vector<Token> t_;
  size_t p_ = 0;
  int depth_ = 0;
};

}  // namespace

void render_body(const NodeList& body, Context& ctx, std::string& out) {
  for (const auto& n : body) {
    n->render(ctx, out);
    if (ctx.flow != Flow::kNormal) return;
  }
}

std::unique_ptr<TemplateNode> parse_template(const std::string& source) {
  return Parser(lex_template(source)).parse();
}

}  // namespace fkv::jinja
