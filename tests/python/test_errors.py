"""Bad arguments raise Python exceptions carrying the engine's message; none crashes the process
(a crash would end the pytest run)."""

import copy
import pickle

import numpy as np
import pytest

from conftest import ROOT, STORIES, STORY_PROMPT, TINY_MODELS

BIG = 2**40


def test_model_errors(fastkv):
    with pytest.raises(FileNotFoundError, match="neither an existing path nor a known model name"):
        fastkv.Model("no/such/model")
    with pytest.raises(OSError, match="config.json"):
        fastkv.Model(ROOT / "tests" / "data")
    with pytest.raises(TypeError, match="path_or_name must be a str"):
        fastkv.Model(123)
    with pytest.raises(ValueError, match=r"threads must be in \[1, 1024\], got 0"):
        fastkv.Model(STORIES, threads=0)
    with pytest.raises(TypeError, match="threads must be an int"):
        fastkv.Model(STORIES, threads="2")


def test_tokenizer_file_errors(fastkv, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such tokenizer"):
        fastkv.Tokenizer.from_file(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json or tokenizer.model"):
        fastkv.Tokenizer.from_file(tmp_path)
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(OSError, match="tokenizer.json"):
        fastkv.Tokenizer.from_file(bad)
    with pytest.raises(ValueError):
        fastkv.Tokenizer.from_str("[]")


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        ({"max_new_tokens": -1}, ValueError, r"max_new_tokens must be in \[0, "),
        ({"max_new_tokens": "5"}, TypeError, "max_new_tokens must be an int"),
        ({"max_new_tokens": 3.0}, TypeError, "max_new_tokens must be an int"),
        ({"temperature": -1}, ValueError, "temperature must be a finite value >= 0"),
        ({"temperature": float("nan")}, ValueError, "temperature must be a finite value"),
        ({"temperature": "hot"}, TypeError, "temperature must be a number"),
        ({"top_p": 0}, ValueError, r"top_p must be in \(0, 1\], got 0"),
        ({"top_p": 1.5}, ValueError, r"top_p must be in \(0, 1\]"),
        ({"top_k": -1}, ValueError, r"top_k must be in \[0, "),
        ({"seed": -1}, ValueError, r"seed must be in \[0, "),
        ({"seed": 2**64}, ValueError, r"seed must be in \[0, "),
        ({"method": "nope"}, ValueError, "unknown KV method 'nope'; valid methods: fullkv"),
        ({"method": 3}, TypeError, "method must be a spec string"),
        ({"method": "fastkv:tsp_rate=abc"}, ValueError, "tsp_rate"),
        ({"method": "fastkv", "tsp_rate": 2.0}, ValueError, "tsp_rate"),
        ({"method": "fastkv", "tsp_layer": 99}, ValueError, "tsp_layer"),
        ({"method": "snapkv", "tsp_rate": 0.2}, ValueError, "tsp_rate"),
        ({"method": "fastkv", "tsp_rate": "0.2"}, TypeError, "tsp_rate must be a number"),
        ({"method": "fastkv", "kernel": 1.5}, TypeError, "kernel must be an int"),
        ({"method": "fastkv", "pooling": "median"}, ValueError, "median"),
        ({"method": "gemfilter", "filter_layer": 99}, ValueError, "99"),
        ({"method": "snapkv", "per_query_head": 1}, TypeError, "per_query_head must be a bool"),
        ({"bogus": 1}, TypeError, "unexpected keyword argument 'bogus'"),
        ({"stop": [""]}, ValueError, "stop strings must not be empty"),
        ({"stop": [1.5]}, TypeError, "stop items must be str or int"),
        ({"stop": [99999]}, ValueError, "stop token id 99999 is outside the vocabulary"),
        ({"stop": 2.5}, TypeError, "stop must be"),
        ({"system": "x"}, ValueError, "apply to a text prompt"),
    ],
)
def test_generate_argument_errors(stories, kwargs, exc, message):
    with pytest.raises(exc, match=message):
        stories.generate([1, 2, 3], max_new_tokens=kwargs.pop("max_new_tokens", 4), **kwargs)


@pytest.mark.parametrize(
    "ids, exc, message",
    [
        ([1, -5], ValueError, r"token id -5 at prompt position 1 is outside the vocabulary \[0, 512\)"),
        ([1, 99999], ValueError, "token id 99999 at prompt position 1"),
        ([1, BIG], ValueError, f"token id {BIG} at prompt position 1"),
        ([2**70], ValueError, f"token id {2**70} at prompt position 0"),
        ([1, 1.5], TypeError, r"prompt\[1\] must be an int token id, not float"),
        ([1, None], TypeError, r"prompt\[1\] must be an int token id, not NoneType"),
        ([], ValueError, "prompt is empty"),
        (np.array([[1, 2]]), ValueError, "must be a 1-D array"),
        (np.array([1.0, 2.0]), TypeError, "must hold integer token ids, got dtype float64"),
        (np.array([1, 2**40], dtype=np.int64), ValueError, f"token id {BIG}"),
        (np.array([1, 2**63], dtype=np.uint64), ValueError, f"token id {2**63}"),
        (b"abc", TypeError, "must be a sequence of token ids"),
        (42, TypeError, "must be a sequence of token ids"),
        ([5] * 3000, ValueError, "exceeds the model's context length 2048"),
    ],
)
def test_bad_token_ids(stories, ids, exc, message):
    with pytest.raises(exc, match=message):
        stories.generate(ids, max_new_tokens=4)


def test_session_errors(stories, fastkv):
    s = stories.session(method="snapkv")
    with pytest.raises(ValueError, match="decode before prefill"):
        s.decode(5)
    with pytest.raises(ValueError, match="extend before prefill"):
        s.extend([5])
    with pytest.raises(ValueError, match="kept_positions before prefill"):
        s.kept_positions()
    with pytest.raises(TypeError, match="must be a sequence of token ids"):
        s.prefill("Once upon a time")
    with pytest.raises(ValueError, match="token id 600 at prompt position 0"):
        s.prefill([600])
    s.prefill([1, 2, 3])  # the failed prefill left the session usable
    with pytest.raises(ValueError, match="session already holds a prompt"):
        s.prefill([1, 2, 3])
    with pytest.raises(ValueError, match=r"token id -1 is outside the vocabulary \[0, 512\)"):
        s.decode(-1)
    with pytest.raises(ValueError, match=f"token id {10**30} is outside"):
        s.decode(10**30)
    with pytest.raises(TypeError, match="token must be an int"):
        s.decode("a")
    with pytest.raises(TypeError, match="token must be an int"):
        s.decode(1.0)
    with pytest.raises(ValueError, match="extend: no tokens given"):
        s.extend([])
    with pytest.raises(ValueError, match="token id 512 at extend position 1"):
        s.extend([3, 512])
    assert s.decode(np.int64(7)).shape == (512,)  # NumPy integers are ints
    with pytest.raises(ValueError, match=r"max_new_tokens must be in \[0, "):
        stories.session(max_new_tokens=-2)
    with pytest.raises(ValueError, match="filter"):
        stories.session(method="gemfilter", filter_layer=9)
    with pytest.raises(TypeError, match="unexpected keyword argument 'retain'"):
        stories.session(method="snapkv", retain=0.1)
    with pytest.raises(ValueError, match="token id 512 at prompt position 0"):
        stories.logits([512])


def test_tokenizer_argument_errors(stories):
    tok = stories.tokenizer
    with pytest.raises(TypeError, match="text must be a str"):
        tok.encode(5)
    with pytest.raises(ValueError, match=r"token id 512 at ids position 1 is outside the vocabulary \[0, 512\)"):
        tok.decode([1, 512])
    with pytest.raises(ValueError, match="token id -1"):
        tok.decode([-1])
    with pytest.raises(ValueError, match="the model has no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])
    with pytest.raises(TypeError, match="conversation must be a list"):
        tok.apply_chat_template("hi", chat_template="{{ 1 }}")
    with pytest.raises(ValueError, match=r"conversation\[0\] has no 'content'"):
        tok.apply_chat_template([{"role": "user"}], chat_template="{{ 1 }}")
    with pytest.raises(TypeError, match=r"conversation\[0\]\['content'\] must be a str"):
        tok.apply_chat_template([{"role": "user", "content": 3}], chat_template="{{ 1 }}")
    with pytest.raises(ValueError, match="chat template"):
        tok.apply_chat_template([{"role": "user", "content": "x"}], chat_template="{% if %}")
    with pytest.raises(ValueError, match="token id 9999"):
        tok.convert_ids_to_tokens(9999)
    # The template path works when a template is given.
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   chat_template="{{ messages[0]['content'] }}!") == "hi!"


def test_text_prompt_without_a_tokenizer(fastkv):
    m = fastkv.Model(TINY_MODELS[0])
    with pytest.raises(OSError, match="no tokenizer"):
        m.generate("hello")
    with pytest.raises(OSError, match="stop strings need the model's tokenizer"):
        m.generate([1, 2], stop="x")


def test_method_object_errors(fastkv):
    with pytest.raises(TypeError, match=r"FastKV\(\) got an unexpected keyword argument 'bogus'"):
        fastkv.methods.FastKV(bogus=1)
    with pytest.raises(TypeError, match="tsp_rate must be a number"):
        fastkv.methods.FastKV(tsp_rate="a")
    with pytest.raises(ValueError, match="tsp_rate must be a finite number"):
        fastkv.methods.FastKV(tsp_rate=float("nan"))
    with pytest.raises(TypeError, match="Method is abstract"):
        fastkv.methods.Method()
    with pytest.raises(AttributeError, match="has no method 'NoSuch'"):
        fastkv.methods.NoSuch
    with pytest.raises(ValueError, match="unknown KV method"):
        fastkv.methods.from_spec("nope:x=1")


def test_config_dunder_names_are_plain_attribute_errors(stories):
    # Issue 21: a dunder or private name is a missing attribute, not a config field
    # (cfg.__setitem__ said "model config has no field '__setitem__'").
    cfg = stories.config
    with pytest.raises(AttributeError, match=r"^'ModelConfig' object has no attribute '__array__'$"):
        cfg.__array__
    with pytest.raises(AttributeError, match=r"^'ModelConfig' object has no attribute '__fspath__'$"):
        getattr(cfg, "__fspath__")
    assert not hasattr(cfg, "_private")
    with pytest.raises(AttributeError, match=r"^model config has no field 'no_such_field'$"):
        cfg.no_such_field
    assert cfg.vocab_size == cfg["vocab_size"] == 512
    assert copy.copy(cfg) == cfg and pickle.loads(pickle.dumps(cfg)) == cfg


def test_config_assignment_says_the_config_is_read_only(stories):
    cfg = stories.config
    with pytest.raises(AttributeError, match=r"^model config is read-only: cannot set 'vocab_size'$"):
        cfg.vocab_size = 3
    with pytest.raises(AttributeError, match=r"^model config is read-only: cannot set 'new_field'$"):
        cfg.new_field = 3
    with pytest.raises(AttributeError, match=r"^model config is read-only: cannot delete 'vocab_size'$"):
        del cfg.vocab_size
    with pytest.raises(TypeError, match=r"^model config is read-only: cannot set 'vocab_size'$"):
        cfg["vocab_size"] = 3
    with pytest.raises(TypeError, match=r"^model config is read-only: cannot set 'vocab_size'$"):
        cfg.__setitem__("vocab_size", 3)
    with pytest.raises(TypeError, match=r"^model config is read-only: cannot delete 'vocab_size'$"):
        del cfg["vocab_size"]
    assert cfg.vocab_size == 512


@pytest.mark.parametrize(
    "stop, message",
    [
        (5, r"^stop must be None, a str or a list of str \(stop strings\) and int \(stop token ids\), "
            r"not int \(a stop token id goes in a list: stop=\[5\]\)$"),
        (True, r"^stop must be None, .*, not bool$"),
        (2.5, r"^stop must be None, .*, not float$"),
        (b"ab", r"^stop must be None, .*, not bytes$"),
        ({"x": 1}, r"^stop must be None, .*, not dict$"),
        ({"x"}, r"^stop must be None, .*, not set$"),
        (iter(["x"]), r"^stop must be None, .*, not list_iterator$"),
    ],
)
def test_stop_must_be_none_a_str_or_a_list(stories, stop, message):
    # Issue 21: generate(stop=5) was accepted silently; bytes or a dict were taken apart.
    with pytest.raises(TypeError, match=message):
        stories.generate([1, 2, 3], max_new_tokens=2, stop=stop)
    with pytest.raises(TypeError, match=message):
        stories.generate([1, 2, 3], max_new_tokens=2, stop=stop, stream=True)


def test_stop_accepts_none_a_str_and_lists_of_str_and_ids(stories):
    for stop in (None, "xyz", ["xyz"], ("xyz", 7), [7], np.array([7, 8])):
        out = stories.generate([1, 2, 3], max_new_tokens=2, stop=stop)
        assert out.finish_reason in ("length", "stop", "stop_string"), stop

def test_engine_still_works_after_every_error(stories):
    out = stories.generate(STORY_PROMPT, max_new_tokens=4)
    assert len(out.token_ids) == 4
