#!/usr/bin/env python3
"""Oracle for src/chat: renders chat templates with Python jinja2 exactly as transformers'
apply_chat_template does, and writes tests/data/goldens/chat_templates.json.

Uses transformers.utils.chat_template_utils.render_jinja_template when transformers is
installed (pip install jinja2 transformers); otherwise an equivalent jinja2 environment
(ImmutableSandboxedEnvironment(trim_blocks, lstrip_blocks, loopcontrols) + transformers' tojson,
raise_exception, strftime_now).

Template sources: "shared:<path>" = chat_template of a tokenizer_config.json under FKV_SHARED_DIR
(read by the C++ test at run time), "fixture:<file>" = tests/data/chat_templates/<file>,
"inline" = the template text in the case.

Usage: python3 tools/scripts/make_chat_goldens.py [--shared /work/shared]
"""
import argparse
import json
import os
import random
from datetime import datetime

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

try:
    from transformers.utils.chat_template_utils import render_jinja_template as _tf_render
except Exception:  # transformers not installed
    _tf_render = None


def _local_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


ENV = _local_env()


def render(template, messages, add_generation_prompt, extra):
    """Returns (text, None) or (None, error message)."""
    try:
        if _tf_render is not None:
            out, _ = _tf_render(conversations=[messages], chat_template=template,
                                add_generation_prompt=add_generation_prompt, **extra)
            return out[0], None
        return ENV.from_string(template).render(messages=messages, tools=None, documents=None,
                                                add_generation_prompt=add_generation_prompt,
                                                **extra), None
    except jinja2.exceptions.TemplateSyntaxError as e:
        return None, f"line {e.lineno}: {e.message}"
    except Exception as e:  # raise_exception, undefined, type errors
        return None, str(e)


def render_context(template, context):
    """Generic render with an explicit context (tools, tool calls...)."""
    ctx = dict(context)
    messages = ctx.pop("messages", [])
    agp = ctx.pop("add_generation_prompt", False)
    tools = ctx.pop("tools", None)
    try:
        if _tf_render is not None:
            out, _ = _tf_render(conversations=[messages], tools=tools, chat_template=template,
                                add_generation_prompt=agp, **ctx)
            return out[0], None
        return ENV.from_string(template).render(messages=messages, tools=tools, documents=None,
                                                add_generation_prompt=agp, **ctx), None
    except Exception as e:
        return None, str(e)


def load_template(source, shared):
    kind, path = source.split(":", 1)
    if kind == "shared":
        with open(os.path.join(shared, path), encoding="utf-8") as f:
            return json.load(f)["chat_template"]
    with open(os.path.join(ROOT, "tests", "data", "chat_templates", path), encoding="utf-8") as f:
        return f.read()


U = lambda c: {"role": "user", "content": c}
A = lambda c: {"role": "assistant", "content": c}
S = lambda c: {"role": "system", "content": c}

CONVERSATIONS = {
    "single_user": [U("Hello!")],
    "system_user": [S("You are a terse assistant."), U("What is 2+2?")],
    "multi_turn": [S("Be brief."), U("Hi"), A("Hello! How can I help?"), U("Tell me a joke."),
                   A("  Why did the chicken cross the road?  "), U("Why?")],
    "multi_turn_no_system": [U("Hi"), A("Hello!"), U("Bye")],
    "special_chars": [U("Line one\nLine two\n\n\ttabbed \"quotes\" 'single' {{ not jinja }} {% raw %}"
                        " <|im_start|> \\backslash\\ ü ñ 日本語 🙂 \u00a0nbsp  ")],
    "thinking_history": [U("What is 1+1?"),
                         A("<think>\nAdd one and one.\n</think>\n\nIt is 2."),
                         U("And 2+2?")],
}

BOS_EOS = {
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "qwen3": ("", "<|im_end|>"),
    "qwen2_5": ("", "<|im_end|>"),
    "chatml": ("", "<|im_end|>"),
    "mistral_v1": ("<s>", "</s>"),
    "mistral_v3": ("<s>", "</s>"),
    "gemma": ("<bos>", "<eos>"),
    "llama3_2": ("<|begin_of_text|>", "<|eot_id|>"),
}

TEMPLATES = {
    "llama3": "shared:tokenizers/llama3/tokenizer_config.json",
    "qwen3": "shared:tokenizers/qwen3/tokenizer_config.json",
    "qwen2_5": "fixture:qwen2_5.jinja",
    "chatml": "fixture:chatml_smollm2.jinja",
    "mistral_v1": "fixture:mistral_v1.jinja",
    "mistral_v3": "fixture:mistral_v3.jinja",
    "gemma": "fixture:gemma.jinja",
    "llama3_2": "fixture:llama3_2.jinja",
}

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"},
                                                    "days": {"type": "integer"}},
                   "required": ["city"]}}}
TOOL_CONTEXT = {
    "messages": [
        {"role": "system", "content": "You can call tools."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call12345", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]},
        {"role": "tool", "tool_call_id": "call12345", "content": "{\"temp\": 21.5, \"sky\": \"clear\"}"},
        {"role": "tool", "tool_call_id": "call12345", "content": "second result"},
        {"role": "assistant", "content": "It is 21.5 °C and clear."},
        {"role": "user", "content": "Thanks"},
    ],
    "tools": [WEATHER_TOOL],
    "add_generation_prompt": True,
    "bos_token": "<s>", "eos_token": "</s>",
}

# Small feature probes of the interpreter itself (inline template + context).
FEATURES = [
    ("arith", "{{ 1/2 }} {{ 7//2 }} {{ -7//2 }} {{ -7 % 3 }} {{ 2**10 }} {{ 1.0 }} {{ 1e20 }} {{ 0.1+0.2 }} {{ 3 * 'ab' }} {{ 1 + 2 * 3 - 4 }}", {}),
    ("literals", "{{ none }} {{ true }} {{ [1, 'a', none, 1.5, (1, 2)] }} {{ {'a': 1, 'b': \"it's\"} }} {{ 'x' ~ 1 ~ none }}", {}),
    ("compare", "{{ 3 > 2 > 1 }} {{ 1 == 1.0 }} {{ 'a' in 'cat' }} {{ 2 not in [1, 3] }} {{ 'b' < 'c' }} {{ not 0 and 1 or 5 }}", {}),
    ("slices", "{{ xs[1:] }} {{ xs[::-1] }} {{ xs[-2] }} {{ s[1:4] }} {{ s[::-1] }} {{ xs[:-1] }} {{ s[5] }}",
     {"xs": [1, 2, 3, 4], "s": "héllo wörld"}),
    ("loop_vars", "{% for x in xs %}{{ loop.index0 }}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }} {% endfor %}",
     {"xs": ["a", "b", "c"]}),
    ("loop_filter_else", "{% for x in xs if x % 2 == 0 %}{{ x }}/{{ loop.length }} {% else %}none{% endfor %}|{% for x in [] %}x{% else %}empty{% endfor %}",
     {"xs": [1, 2, 3, 4, 6]}),
    ("loop_controls", "{% for x in xs %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}",
     {"xs": [1, 2, 3, 4, 5]}),
    ("scoping", "{% set y = 1 %}{% for x in [1, 2] %}{{ y }}{% set y = x * 10 %}{{ y }}{% endfor %}{{ y }}{% set ns = namespace(t=0) %}{% for x in [1, 2, 3] %}{% set ns.t = ns.t + x %}{% endfor %}{{ ns.t }}", {}),
    ("nested_loops", "{% for a in [1, 2] %}{% for b in 'xy' %}{{ loop.index }}{{ a }}{{ b }},{% endfor %}{{ loop.index }};{% endfor %}", {}),
    ("ternary_tests", "{{ 'y' if x is defined else 'n' }}{{ 'y' if z is defined else 'n' }}{{ x is string }}{{ x is none }}{{ n is number }}{{ n is integer }}{{ n is odd }}{{ n is divisibleby 3 }}{{ x is not none }}{{ 'yes' if n }}",
     {"x": "str", "n": 9}),
    ("filters", "{{ '  hi  '|trim }}|{{ 'MiXed'|upper }}{{ 'MiXed'|lower }}|{{ xs|length }}{{ 'héllo'|length }}|{{ xs|first }}{{ xs|last }}|{{ xs|join('-') }}|{{ 'a.b.c'|replace('.', '::') }}|{{ 42|string }}{{ '17'|int + 1 }}{{ 'x'|int }}|{{ u|default('dflt') }}{{ ''|default('e', true) }}|{{ d|items|list }}|{{ 'hello world'|title }}{{ 'hello'|capitalize }}|{{ xs|reverse|list }}",
     {"xs": [3, 1, 2], "d": {"k": "v", "a": 1}}),
    ("select_map", "{{ ms|selectattr('role', 'equalto', 'user')|map(attribute='content')|join(',') }}|{{ ms|rejectattr('role', 'equalto', 'user')|list|length }}|{{ ms|selectattr('extra', 'undefined')|list|length }}|{{ ms|selectattr('extra')|map(attribute='role')|list }}|{{ [1, 2, 3, 4]|select('odd')|list }}|{{ ['a', 'b']|map('upper')|list }}",
     {"ms": [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1", "extra": 1}, {"role": "user", "content": "u2"}]}),
    ("tojson", "{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ 'é\"\\n'|tojson }}|{{ [1.5, none, true, {}]|tojson }}|{{ d|tojson(sort_keys=true) }}",
     {"d": {"z": [1, 2], "a": {"n": None, "s": "ü<>&"}, "f": 2.5}}),
    ("string_methods", "{{ ' x y '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ '\\n\\nhi'.lstrip('\\n') }}|{{ 'hi  '.rstrip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a-b-c'.split('-', 1) }}|{{ 'hello'.startswith('he') }}{{ 'hello'.endswith(('x', 'lo')) }}|{{ 'aXa'.replace('a', 'b') }}|{{ 'ab'.upper() }}{{ 'AB'.lower() }}|{{ 'hello wORLD'.title() }}|{{ s.split('</think>')[-1].lstrip('\\n') }}",
     {"s": "<think>r</think>\n\nanswer"}),
    ("dict_methods", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{{ d.get('a') }}{{ d.get('zz', 'none!') }}{{ d.get('zz') }}{{ d['b'] }}{{ d.b }}{{ 'a' in d }}",
     {"d": {"b": 2, "a": 1}}),
    ("macro", "{% macro greet(name, punct='!') %}Hello {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', punct='?') }} {{ greet(name='C') }}", {}),
    ("whitespace", "a  \n  {% if true %}\n    b\n  {% endif %}\n  c {{- ' d ' -}}  e\n{# comment #}\nf {%- if true -%}  g  {%- endif %}\n\n{%+ if true %}h{% endif %}", {}),
    ("set_block", "{% set x %}inner {{ 1 + 1 }}{% endset %}[{{ x }}]{% set a, b = 1, 2 %}{{ a }}{{ b }}", {}),
    ("range_dict", "{{ range(3)|list }}{{ range(1, 7, 2)|list }}{% set d = dict(a=1, b='x') %}{{ d.a }}{{ d['b'] }}", {}),
    ("floats", "{{ 1e-5 }} {{ 123456789.123 }} {{ 1e16 }} {{ 1.5e-7 }} {{ 100.0 }} {{ 2.5e15 }} {{ -0.0 }} {{ 1/3 }} {{ 2/3*3 }} {{ 0.0001 }} {{ 12345678901234567.0 }} {{ 5e-324 }} {{ f }}",
     {"f": 0.1}),
    ("ws_trim_spaces_before_newline", "{% if true %}  \nx\n{% endif %}  \n  {{ 'y' }}  {% if true %}z{% endif %}\n\t{% if true %}\n\tw\n\t{% endif %}", {}),
    ("ws_crlf", "a\r\n  {% if true %}\r\nb\r\n  {% endif %}\r\nc\r\n", {}),
    ("ws_comments", "  {# c1 #}\nx  {#- c2 -#}  y\n{# c3 #}z", {}),
    ("ws_var_dash", "a\n  {{- 'b' }}\n  {{ 'c' -}}  \n d {{ 'e' }}\n", {}),
    ("cycle_and_prev", "{% for x in xs %}{{ loop.cycle('odd', 'even') }}:{{ loop.previtem|default('-') }}{{ loop.nextitem|default('-') }} {% endfor %}",
     {"xs": [1, 2, 3]}),
    ("elif_chain", "{% for n in [1, 2, 3, 4] %}{% if n == 1 %}one{% elif n == 2 %}two{% elif n == 3 %}three{% else %}many{% endif %},{% endfor %}", {}),
    ("namespace_list", "{% set ns = namespace(items=[], n=0) %}{% for m in ms %}{% set ns.items = ns.items + [m.role] %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.items|join('+') }} {{ ns.n }}",
     {"ms": [{"role": "a"}, {"role": "b"}]}),
    ("tojson_options", "{{ d|tojson(ensure_ascii=true) }}|{{ d|tojson(separators=(',', ':')) }}|{{ d|tojson(indent=0) }}|{{ d|tojson(true, 1, (';', '=')) }}|{{ [[], {}, [1]]|tojson(indent=2) }}",
     {"d": {"k": "é日🙂", "n": [1, {"x": None}]}}),
    ("raw", "a\n  {% raw %}{{ not rendered }} {% if %}{% endraw %}\nb {%- raw -%}  x  {%- endraw -%}  c\n{% raw %}\n  keep\n  {% endraw %}\nd", {}),
    ("strftime_fixed", "{{ strftime_now('%%') }}", {}),
    ("undefined_ops", "{{ missing }}{{ missing|length }}{% for x in missing %}x{% endfor %}{{ missing is defined }}{{ missing|default('d') }}", {}),
]

ERRORS = [
    # (name, template source or None, inline text, messages) -> the C++ error must contain `contains`
    ("syntax_unclosed_if", "{% if messages %}hello", ["endif"]),
    ("syntax_bad_expr", "line one\n{{ messages[0].content + }}", ["line 2", "col 26"]),
    ("syntax_unknown_tag", "{% frobnicate %}", ["frobnicate"]),
    ("unknown_filter", "{{ messages[0].content | shout }}", ["shout"]),
    ("unknown_test", "{% if messages is shiny %}x{% endif %}", ["shiny"]),
    ("undefined_attr_of_undefined", "{{ nothing.here }}", ["nothing"]),
    ("type_error_str_plus_int", "{{ 'a' + 1 }}", ["concatenate"]),
    ("raise_inline", "{{ raise_exception('custom failure: ' ~ messages|length) }}", ["custom failure: 1"]),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    args = ap.parse_args()
    cases = []

    def add(name, source, messages, agp, extra, template_text=None, context=None):
        tmpl = template_text if template_text is not None else load_template(source, args.shared)
        if context is not None:
            text, err = render_context(tmpl, context)
        else:
            text, err = render(tmpl, messages, agp, extra)
        case = {"name": name}
        if template_text is not None:
            case["inline"] = template_text
        else:
            case["source"] = source
        if context is not None:
            case["context"] = context
        else:
            case["messages"] = messages
            case["add_generation_prompt"] = agp
            case["bos_token"] = extra.get("bos_token", "")
            case["eos_token"] = extra.get("eos_token", "")
            rest = {k: v for k, v in extra.items() if k not in ("bos_token", "eos_token")}
            if rest:
                case["extra_context"] = rest
        if err is not None:
            case["python_error"] = err
        else:
            case["expected"] = text
        cases.append(case)
        return case

    for tname, source in TEMPLATES.items():
        bos, eos = BOS_EOS[tname]
        for cname, msgs in CONVERSATIONS.items():
            if cname == "thinking_history" and tname not in ("qwen3",):
                continue
            for agp in (True, False):
                extras = [{}]
                if tname == "qwen3":
                    extras = [{}, {"enable_thinking": False}, {"enable_thinking": True}]
                if tname == "llama3_2":  # strftime_now would make the golden date-dependent
                    extras = [{"date_string": "29 Nov 2026"}]
                for ex in extras:
                    extra = {"bos_token": bos, "eos_token": eos, **ex}
                    suffix = "".join(f"_{k}={v}" for k, v in ex.items())
                    c = add(f"{tname}/{cname}/agp={agp}{suffix}", source, msgs, agp, extra)
                    if "python_error" in c and tname not in ("mistral_v1", "mistral_v3", "gemma"):
                        raise SystemExit(f"unexpected error in {c['name']}: {c['python_error']}")

    # Randomized conversations (fixed seed): odd whitespace, empty contents, think tags, roles.
    rng = random.Random(1234)
    pieces = ["", " ", "\n", "  lead", "trail  ", "\n\nboth\n\n", "<think>\nr\n</think>\n\nans",
              "</think>only", "ü日🙂", "{{ x }}", "\t\u00a0\u3000", "a\r\nb", "'\"\\", "tool_response"]
    for tname, source in TEMPLATES.items():
        bos, eos = BOS_EOS[tname]
        for k in range(8):
            n = rng.randint(1, 6)
            roles = ["system"] if rng.random() < 0.4 else []
            roles += ["user" if (i % 2 == 0 or rng.random() < 0.1) else "assistant" for i in range(n)]
            msgs = [{"role": r, "content": "".join(rng.choice(pieces) for _ in range(rng.randint(0, 3)))}
                    for r in roles]
            extra = {"bos_token": bos, "eos_token": eos}
            if tname == "qwen3" and k % 2:
                extra["enable_thinking"] = bool(k % 4 == 1)
            if tname == "llama3_2":
                extra["date_string"] = "02 Feb 2026"
            add(f"{tname}/random_{k}", source, msgs, bool(k % 3), extra)

    # Mistral: roles must alternate -> the template's own raise_exception message.
    for tname in ("mistral_v1", "mistral_v3"):
        bos, eos = BOS_EOS[tname]
        c = add(f"{tname}/error_not_alternating", TEMPLATES[tname], [U("a"), U("b")], True,
                {"bos_token": bos, "eos_token": eos})
        c["error_contains"] = ["conversation roles must alternate" if tname == "mistral_v3"
                               else "Conversation roles must alternate"]
        assert "python_error" in c, c
    c = add("mistral_v3/error_bad_role", TEMPLATES["mistral_v3"], [U("x"), {"role": "narrator", "content": "x"}],
            True, {"bos_token": "<s>", "eos_token": "</s>"})
    c["error_contains"] = ["Only user and assistant roles are supported"]

    # Tool use (generic context with tool calls) through the real templates.
    for tname in ("qwen3", "qwen2_5", "mistral_v3"):
        add(f"{tname}/tools", TEMPLATES[tname], None, None, None, context=TOOL_CONTEXT)
    l32 = {"messages": [S("sys"), U("Weather in Paris?"),
                        {"role": "assistant", "tool_calls": [TOOL_CONTEXT["messages"][2]["tool_calls"][0]]},
                        {"role": "tool", "content": "21.5 C"}, A("Warm.")],
           "tools": [WEATHER_TOOL], "add_generation_prompt": True, "bos_token": "<|begin_of_text|>",
           "date_string": "01 Jan 2025"}
    add("llama3_2/tools_in_user_message", TEMPLATES["llama3_2"], None, None, None, context=l32)
    add("llama3_2/tools_in_system", TEMPLATES["llama3_2"], None, None, None,
        context={**l32, "tools_in_user_message": False})
    c = add("gemma/error_system_role", TEMPLATES["gemma"], [S("s"), U("u")], True,
            {"bos_token": "<bos>", "eos_token": "<eos>"})
    c["error_contains"] = ["System role not supported"]

    for name, text, ctx in FEATURES:
        c = add(f"feature/{name}", None, None, None, None, template_text=text, context=ctx)
        if "python_error" in c:
            raise SystemExit(f"feature {name} failed in Python: {c['python_error']}")
    for name, text, contains in ERRORS:
        c = add(f"error/{name}", None, [U("x")], True, {}, template_text=text)
        assert "python_error" in c, name
        c["error_contains"] = contains

    out = os.path.join(ROOT, "tests", "data", "goldens", "chat_templates.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"oracle": "transformers render_jinja_template" if _tf_render else "jinja2 " + jinja2.__version__,
                   "jinja2_version": jinja2.__version__, "cases": cases}, f, ensure_ascii=False, indent=1)
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
