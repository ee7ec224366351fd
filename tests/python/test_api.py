"""The API surface: method classes generated from the C++ registry, docstrings that explain every
argument, and type stubs that match the runtime."""

import ast
import inspect
import pathlib
import pydoc

import pytest


def test_one_method_class_per_registry_entry(fastkv):
    from fastkv import _core

    names = _core.policy_names()
    assert fastkv.methods.available() == names
    for name in names:
        cls = getattr(fastkv.methods, fastkv.methods.class_name(name))
        assert cls.name == name
        assert cls.option_keys == tuple(o["key"] for o in _core.method_options(name))
        params = list(inspect.signature(cls).parameters)
        assert params == list(cls.option_keys)
        for key in cls.option_keys:
            assert key in cls.__doc__
        assert cls().spec == name
    assert fastkv.methods.FastKV is fastkv.methods.fastkv is fastkv.methods.FASTKV
    assert fastkv.methods.GemFilter.name == "gemfilter"
    assert fastkv.methods.StreamingLLM.name == "streamingllm"
    assert fastkv.methods.H2O.name == "h2o"


def test_method_objects_round_trip_through_specs(fastkv):
    m = fastkv.methods.FastKV(tsp_rate=0.2, retain_rate=0.1)
    assert m.spec == "fastkv:tsp_rate=0.2,retain_rate=0.1"
    assert repr(m) == "FastKV(tsp_rate=0.2, retain_rate=0.1)"
    assert fastkv.methods.from_spec(m.spec) == m
    s = fastkv.methods.SnapKV(retain_rate=0.1, per_query_head=True, pooling="avg", kernel=5)
    back = fastkv.methods.from_spec(s.spec)
    assert back == s and back.options == {"retain_rate": 0.1, "per_query_head": True,
                                          "pooling": "avg", "kernel": 5}
    assert fastkv.methods.from_spec("snapkv:retain-rate=0.1").spec == "snapkv:retain_rate=0.1"


def test_help_of_generate_explains_every_argument(fastkv):
    text = pydoc.render_doc(fastkv.Model.generate, renderer=pydoc.plaintext)
    args_section = inspect.getdoc(fastkv.Model.generate).split("Args:")[1].split("Returns:")[0]
    for name, param in inspect.signature(fastkv.Model.generate).parameters.items():
        if name == "self":
            continue
        label = "**" + name if param.kind is param.VAR_KEYWORD else name
        assert f"\n    {label}:" in "\n" + args_section, f"generate() docstring misses {name}"
        assert name in text
    for key in fastkv.methods.option_help():
        assert key in args_section, f"generate() docstring misses method option {key}"


@pytest.mark.parametrize("obj", ["Model", "Model.session", "Model.logits", "Tokenizer.encode",
                                 "Tokenizer.decode", "Tokenizer.apply_chat_template",
                                 "Session.prefill", "Session.extend", "Session.decode",
                                 "Session.kept_positions", "GenerationOutput", "GenerationStream"])
def test_public_api_has_docstrings(fastkv, obj):
    target = fastkv
    for part in obj.split("."):
        target = getattr(target, part)
    assert inspect.getdoc(target) and len(inspect.getdoc(target)) > 40


def stub_classes(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            out[node.name] = {n.name: n for n in node.body if isinstance(n, ast.FunctionDef)}
    return out


def test_type_stubs_match_the_runtime(fastkv):
    pkg = pathlib.Path(fastkv.__file__).parent
    assert (pkg / "py.typed").is_file()
    stubs = stub_classes(pkg / "__init__.pyi")
    for name in fastkv.__all__:
        if name in ("methods", "known_models", "Method"):
            continue
        assert name in stubs, f"__init__.pyi misses class {name}"
    for cls_name, funcs in stubs.items():
        cls = getattr(fastkv, cls_name)
        for fname, node in funcs.items():
            attr = inspect.getattr_static(cls, fname, None)
            assert attr is not None, f"stub {cls_name}.{fname} does not exist"
            if isinstance(attr, property) or fname.startswith("__"):
                continue
            runtime = [p for p in inspect.signature(getattr(cls, fname)).parameters if p not in ("self", "cls")]
            a = node.args
            stub = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
            if a.kwarg:
                stub.append(a.kwarg.arg)
            assert stub == runtime, f"{cls_name}.{fname}: stub {stub} != runtime {runtime}"
    methods_stub = ast.parse((pkg / "methods.pyi").read_text(encoding="utf-8"))
    for node in methods_stub.body:
        if isinstance(node, ast.FunctionDef):
            assert hasattr(fastkv.methods, node.name), node.name


def test_config_is_dict_like_and_read_only(stories):
    cfg = stories.config
    assert cfg["num_hidden_layers"] == cfg.num_hidden_layers == 5
    assert "vocab_size" in cfg and len(dict(cfg)) == len(cfg)
    with pytest.raises(TypeError):
        cfg["vocab_size"] = 3
    with pytest.raises(AttributeError, match="no field 'nope'"):
        cfg.nope
