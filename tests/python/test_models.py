"""Loading every fixture model, and logits against the committed HF transformers goldens
(tools/scripts/make_model_goldens.py; same tolerance as tests/e2e/test_engine_goldens.cc)."""

import json

import numpy as np
import pytest

from conftest import GOLDENS, STORIES, TINY_MODELS, load_golden

# Relative agreement, as the C++ golden test: max |ours - ref| <= 1e-4 * max(1, max |ref|).
TOL = 1e-4


def assert_logits_close(ours, ref, what):
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, what
    assert ours.dtype == np.float32, what
    scale = max(1.0, float(np.abs(ref).max()))
    diff = float(np.abs(ours.astype(np.float64) - ref).max())
    assert diff <= TOL * scale, f"{what}: max abs diff {diff} (max |ref| {scale})"


@pytest.mark.parametrize("model_dir", TINY_MODELS, ids=lambda p: p.name)
def test_every_tiny_fixture_loads_with_its_config(fastkv, model_dir):
    m = fastkv.Model(model_dir)
    with open(model_dir / "config.json", encoding="utf-8") as f:
        hf = json.load(f)
    cfg = m.config
    for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
                "vocab_size", "max_position_embeddings"):
        assert cfg[key] == hf[key], key
    assert cfg.num_key_value_heads == hf.get("num_key_value_heads", hf["num_attention_heads"])
    assert cfg["format"] == "safetensors"
    assert dict(cfg)["vocab_size"] == hf["vocab_size"]
    # The tiny fixtures ship no tokenizer: the model works on ids, the tokenizer says why not.
    with pytest.raises(OSError, match="no tokenizer.json or tokenizer.model"):
        m.tokenizer
    out = m.generate([1, 2, 3], max_new_tokens=4)
    assert out.text is None and len(out.token_ids) <= 4


def test_stories260k_gguf_loads(stories):
    cfg = stories.config
    assert cfg["format"] == "gguf"
    assert (cfg.num_hidden_layers, cfg.vocab_size, cfg.num_key_value_heads) == (5, 512, 4)
    assert stories.tokenizer.vocab_size == 512
    assert stories.tokenizer.bos_token_id == 1


def test_smollm2_loads_by_short_name(smollm2):
    assert smollm2.config["model_type"] == "llama"
    assert smollm2.config["vocab_size"] == 49152
    assert smollm2.tokenizer.chat_template


GOLDEN_FILES = sorted(GOLDENS.glob("model_*.json"))


@pytest.mark.parametrize("golden_file", GOLDEN_FILES, ids=lambda p: p.stem)
def test_all_position_logits_equal_transformers(fastkv, golden_file):
    g = load_golden(golden_file.name)
    m = fastkv.Model(golden_file.parent.parent / "models" / g["model"])
    n_all = 0
    for case in g["cases"]:
        prompt = case["prompt"]
        logits = m.logits(prompt)  # [n, vocab]
        assert logits.shape == (len(prompt), m.config["vocab_size"])
        assert_logits_close(logits[-1], case["last_logits"], f"last of {len(prompt)}")
        if "all_logits" in case:
            n_all += 1
            for r, row in enumerate(case["all_logits"]):
                assert_logits_close(logits[r], row, f"position {r} of {len(prompt)}")
        # A full-KV session's prefill gives the same last logits.
        s = m.session(max_new_tokens=1)
        assert_logits_close(s.prefill(np.asarray(prompt, dtype=np.int64)), case["last_logits"],
                            f"session prefill of {len(prompt)}")
    if g["model"] == "tiny-llama":
        assert n_all == 1  # the golden's all-position case was checked
    # Greedy continuation token for token (up to an end-of-generation id, where generate stops).
    expected = g["greedy"]["tokens"]
    eos = set(m.config["eos_token_id"])
    cut = next((i for i, t in enumerate(expected) if t in eos), len(expected))
    out = m.generate(g["greedy"]["prompt"], max_new_tokens=len(expected))
    assert out.token_ids == expected[:cut]
    assert out.finish_reason == ("stop" if cut < len(expected) else "length")


def test_stories260k_greedy_equals_llama2c(stories):
    expected = (GOLDENS / "stories260k_greedy.txt").read_text(encoding="utf-8").rstrip("\n")
    out = stories.generate([stories.tokenizer.bos_token_id], max_new_tokens=256)
    assert len(out.token_ids) == 256
    assert out.text.lstrip(" ") == expected
    assert STORIES.is_file()
