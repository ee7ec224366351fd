// A small Jinja2-subset template engine, enough for Hugging Face chat templates.
// Behaves like jinja2's ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
// extensions=[loopcontrols]) with transformers' globals (raise_exception, strftime_now) and its
// tojson filter (json.dumps with ensure_ascii=False).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "core/status.h"

namespace fkv {

namespace jinja {
struct TemplateNode;
}

class JinjaTemplate {
 public:
  // Parses `source`; syntax errors (with line:col), unknown filters/tests and unsupported tags
  // come back as a Status.
  static Expected<JinjaTemplate> parse(const std::string& source);
  // Renders with `context` as the global variables (JSON objects become dicts in key order).
  // Runtime errors (undefined attribute of an undefined value, type errors, raise_exception)
  // come back as a Status.
  Expected<std::string> render(const nlohmann::ordered_json& context) const;

 private:
  std::shared_ptr<const jinja::TemplateNode> root_;
};

// Parse + render in one go.
Expected<std::string> render_jinja(const std::string& source,
                                   const nlohmann::ordered_json& context);

}  // namespace fkv
