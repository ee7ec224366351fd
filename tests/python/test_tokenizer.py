"""The tokenizer from Python against the HF tokenizers / sentencepiece goldens
(tools/scripts/make_tokenizer_goldens.py) and the chat-template goldens (make_chat_goldens.py)."""

import pytest

from conftest import GOLDENS, SHARED, load_golden

TOKENIZER_GOLDENS = sorted(p.name for p in GOLDENS.glob("tokenizer_*.json"))


def tokenizer_for(fastkv, g):
    kind = g["kind"]
    if kind == "hf_json":
        return fastkv.Tokenizer.from_file(SHARED / g["tokenizer"], SHARED / g["config"])
    if kind == "hf_json_inline":
        return fastkv.Tokenizer.from_str(g["tokenizer_json"])
    assert kind in ("sentencepiece", "gguf"), kind
    return fastkv.Tokenizer.from_file(SHARED / g["tokenizer"])


@pytest.mark.parametrize("name", TOKENIZER_GOLDENS)
def test_tokenizer_equals_golden(fastkv, name):
    g = load_golden(name)
    tok = tokenizer_for(fastkv, g)
    assert len(g["cases"]) > 20
    for i, case in enumerate(g["cases"]):
        label = f"{name} case {i}: {case['text'][:40]!r}"
        assert tok.encode(case["text"], add_special_tokens=False) == case["ids"], label
        assert tok.encode(case["text"]) == case["ids_special"], label
        assert tok(case["text"])["input_ids"] == case["ids_special"], label
        if "decoded" in case:
            assert tok.decode(case["ids_special"]) == case["decoded"], label
        if "decoded_skip" in case:
            assert tok.decode(case["ids_special"], skip_special_tokens=True) == case["decoded_skip"], label


def test_model_tokenizer_is_the_gguf_tokenizer(stories):
    g = load_golden("tokenizer_stories260K_gguf.json")
    for case in g["cases"]:
        assert stories.tokenizer.encode(case["text"]) == case["ids_special"]


def chat_cases():
    g = load_golden("chat_templates.json")
    return [c for c in g["cases"]
            if c.get("source", "").startswith("shared:tokenizers/") and "messages" in c
            and "extra_context" not in c]


def test_apply_chat_template_equals_transformers(fastkv):
    cases = chat_cases()
    assert len(cases) >= 30
    tokenizers = {}
    for case in cases:
        folder = SHARED / case["source"][len("shared:"):].rsplit("/", 1)[0]
        if folder not in tokenizers:
            tokenizers[folder] = fastkv.Tokenizer.from_file(folder)
        tok = tokenizers[folder]
        # (The goldens' bos/eos come from the config; the templates here only use bos_token.)
        assert tok.bos_token == case["bos_token"], case["name"]
        text = tok.apply_chat_template(case["messages"], add_generation_prompt=case["add_generation_prompt"],
                                       tokenize=False)
        assert text == case["expected"], case["name"]
        ids = tok.apply_chat_template(case["messages"], add_generation_prompt=case["add_generation_prompt"])
        assert ids == tok.encode(case["expected"], add_special_tokens=False), case["name"]


def test_chat_prompt_ids_equal_the_cli(smollm2):
    from conftest import run_cli

    tok = smollm2.tokenizer
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}])
    out = smollm2.generate("What is 2+2?", chat=True, max_new_tokens=1)
    assert out.prompt_ids == ids
    _, err = run_cli("generate", "--model", "smollm2-135m-instruct", "--prompt", "What is 2+2?",
                     "--chat", "--max-new-tokens", "1")
    assert "prompt_tokens=%d " % len(ids) in err


def test_convert_ids_and_tokens(stories):
    tok = stories.tokenizer
    ids = tok.encode("Hello world", add_special_tokens=False)
    pieces = tok.convert_ids_to_tokens(ids)
    assert tok.convert_tokens_to_ids(pieces) == ids
    assert tok.convert_tokens_to_ids("definitely-not-a-token") is None
