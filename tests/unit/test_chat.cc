// Chat templates against goldens rendered by transformers/jinja2
// (tools/scripts/make_chat_goldens.py): exact string equality.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "chat/chat_template.h"
#include "chat/jinja.h"

namespace fkv {
namespace {

using ojson = nlohmann::ordered_json;

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << "cannot open " << path;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string load_template(const ojson& c) {
  if (c.contains("inline")) return c["inline"].get<std::string>();
  const std::string src = c["source"].get<std::string>();
  const size_t colon = src.find(':');
  const std::string kind = src.substr(0, colon), path = src.substr(colon + 1);
  if (kind == "shared") {
    const ojson cfg = ojson::parse(read_file(std::string(FKV_SHARED_DIR) + "/" + path));
    return cfg["chat_template"].get<std::string>();
  }
  return read_file(std::string(FKV_SOURCE_DIR) + "/tests/data/chat_templates/" + path);
}

Expected<std::string> render_case(const ojson& c) {
  const std::string tmpl = load_template(c);
  if (c.contains("context")) return render_jinja(tmpl, c["context"]);
  std::vector<ChatMessage> messages;
  for (const auto& m : c["messages"]) {
    messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  ChatRenderOptions opts;
  opts.add_generation_prompt = c["add_generation_prompt"].get<bool>();
  opts.bos_token = c.value("bos_token", "");
  opts.eos_token = c.value("eos_token", "");
  if (c.contains("extra_context"))
    opts.extra_context = nlohmann::json::parse(c["extra_context"].dump());
  return render_chat_template(tmpl, messages, opts);
}

ojson load_goldens() {
  return ojson::parse(
      read_file(std::string(FKV_SOURCE_DIR) + "/tests/data/goldens/chat_templates.json"));
}

TEST(ChatTemplate, MatchesJinja2Goldens) {
  const ojson g = load_goldens();
  int rendered = 0, errors = 0;
  for (const auto& c : g["cases"]) {
    const std::string name = c["name"].get<std::string>();
    Expected<std::string> got = render_case(c);
    if (c.contains("expected")) {
      ASSERT_TRUE(got.has_value()) << name << ": " << got.error();
      EXPECT_EQ(got.value(), c["expected"].get<std::string>()) << name;
      ++rendered;
      continue;
    }
    ASSERT_FALSE(got.has_value()) << name << " should fail like jinja2: "
                                  << c["python_error"].get<std::string>();
    ++errors;
    if (c.contains("error_contains")) {
      for (const auto& s : c["error_contains"]) {
        EXPECT_NE(got.error().find(s.get<std::string>()), std::string::npos)
            << name << ": '" << got.error() << "' lacks '" << s.get<std::string>() << "'";
      }
    } else {
      // Errors raised by the template itself carry its message verbatim.
      EXPECT_NE(got.error().find(c["python_error"].get<std::string>()), std::string::npos)
          << name << ": " << got.error();
    }
  }
  EXPECT_GT(rendered, 100);
  EXPECT_GT(errors, 10);
}

TEST(ChatTemplate, AllTemplateFamiliesCovered) {
  const ojson g = load_goldens();
  for (const char* family :
       {"llama3/", "qwen3/", "qwen2_5/", "chatml/", "mistral_v3/", "mistral_v1/"}) {
    int n = 0;
    for (const auto& c : g["cases"]) n += c["name"].get<std::string>().rfind(family, 0) == 0;
    EXPECT_GE(n, 6) << family;
  }
}

TEST(ChatTemplate, ErrorsNameTheProblem) {
  ChatRenderOptions opts;
  std::vector<ChatMessage> msgs = {{"user", "hi"}};
  auto e = render_chat_template("ok\n  {{ messages[0].content | nosuchfilter }}", msgs, opts);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().find("nosuchfilter"), std::string::npos) << e.error();
  EXPECT_NE(e.error().find("line 2, col 28"), std::string::npos) << e.error();

  e = render_chat_template("{% for m in messages %}{{ m.content }}", msgs, opts);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().find("endfor"), std::string::npos) << e.error();

  e = render_chat_template("{% call foo() %}{% endcall %}", msgs, opts);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().find("'call'"), std::string::npos) << e.error();

  e = render_chat_template("{{ raise_exception('Roles must alternate!') }}", msgs, opts);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().find("Roles must alternate!"), std::string::npos) << e.error();

  // Integer indices past int64 (found by fuzz_chat_template): an error, not an uncaught throw.
  e = render_chat_template("{{ messages.99999999999999999999 }}", msgs, opts);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().find("out of range"), std::string::npos) << e.error();
  e = render_chat_template("{{ messages | map(attribute='99999999999999999999') | list }}", msgs,
                           opts);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().find("out of range"), std::string::npos) << e.error();

  e = render_chat_template("{{ 'abc", msgs, opts);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().find("line 1, col 4"), std::string::npos) << e.error();
}

TEST(ChatTemplate, ExtraContextAndDefaults) {
  ChatRenderOptions opts;
  opts.add_generation_prompt = false;
  opts.bos_token = "<s>";
  opts.extra_context = {{"enable_thinking", false}, {"bos_token", "<B>"}};
  auto r = render_chat_template(
      "{{ bos_token }}|{{ add_generation_prompt }}|{{ enable_thinking is false }}|{{ tools is none "
      "}}",
      {}, opts);
  ASSERT_TRUE(r.has_value()) << r.error();
  EXPECT_EQ(r.value(), "<B>|False|True|True");
}

TEST(ChatTemplate, HostileTemplatesFailCleanly) {
  const ojson ctx = ojson::object();
  std::string deep = "{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}";
  auto r = render_jinja(deep, ctx);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().find("nested too deeply"), std::string::npos) << r.error();
  std::string nested;
  for (int i = 0; i < 2000; ++i) nested += "{% if true %}";
  r = render_jinja(nested, ctx);
  ASSERT_FALSE(r.has_value());
  r = render_jinja("{{ 2 ** 200 }}", ctx);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().find("overflow"), std::string::npos) << r.error();
  EXPECT_EQ(render_jinja("{{ 1 ** 100000000000 }}{{ (-1) ** 3 }}{{ 2 ** 62 }}", ctx).value(),
            "1-14611686018427387904");
  r = render_jinja("{{ 'ab' * 100000000000 }}", ctx);
  ASSERT_FALSE(r.has_value());
  r = render_jinja("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", ctx);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().find("recursion"), std::string::npos) << r.error();
  r = render_jinja("{{ 1 // 0 }}", ctx);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().find("zero"), std::string::npos) << r.error();
}

TEST(ChatTemplate, ParseOnceRenderMany) {
  auto t = JinjaTemplate::parse("{% for x in xs %}{{ x * 2 }},{% endfor %}");
  ASSERT_TRUE(t.has_value()) << t.error();
  EXPECT_EQ(t->render(ojson{{"xs", {1, 2}}}).value(), "2,4,");
  EXPECT_EQ(t->render(ojson{{"xs", ojson::array()}}).value(), "");
}

}  // namespace
}  // namespace fkv
