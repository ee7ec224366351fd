#include "chat/jinja.h"

#include "chat/jinja_ast.h"

namespace fkv {

Expected<JinjaTemplate> JinjaTemplate::parse(const std::string& source) {
  try {
    JinjaTemplate t;
    t.root_ = jinja::parse_template(source);
    return t;
  } catch (const jinja::JinjaError& e) {
    return Status::error(strfmt("chat template syntax error: %s", e.what()));
  }
}

Expected<std::string> JinjaTemplate::render(const nlohmann::ordered_json& context) const {
  jinja::Context ctx;
  ctx.frames.emplace_back();
  std::string out;
  try {
    jinja::install_globals(ctx);
    if (!context.is_object() && !context.is_null()) {
      return Status::error("chat template context must be a JSON object");
    }
    if (context.is_object()) {
      for (auto it = context.begin(); it != context.end(); ++it) {
        ctx.frames.front()[it.key()] = jinja::from_json(*it);
      }
    }
    ctx.frames.emplace_back();  // template-level variables shadow globals
    jinja::render_body(root_->body, ctx, out);
  } catch (const jinja::RaiseException& e) {
    return Status::error(
        strfmt("chat template raised an exception (line %d): %s", ctx.line, e.what()));
  } catch (const jinja::JinjaError& e) {
    return Status::error(strfmt("chat template error (line %d): %s", ctx.line, e.what()));
  } catch (const std::exception& e) {
    return Status::error(strfmt("chat template error (line %d): %s", ctx.line, e.what()));
  }
  return out;
}

Expected<std::string> render_jinja(const std::string& source,
                                   const nlohmann::ordered_json& context) {
  Expected<JinjaTemplate> t = JinjaTemplate::parse(source);
  if (!t) return t.status();
  return t->render(context);
}

}  // namespace fkv
