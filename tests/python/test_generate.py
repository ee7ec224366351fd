"""Generation from Python equals `fastkv generate` (same options, CLI run as a subprocess);
streaming, kept positions against --dump-selection, and the session API."""

import json
import time

import numpy as np
import pytest

from conftest import STORIES, STORY_PROMPT, cli_stats, run_cli

# Every registered method with its defaults, and a few with options.
METHOD_SPECS = [
    "fullkv", "fastkv", "snapkv", "pyramidkv", "adakv", "streamingllm", "h2o", "gemfilter",
    "pyramidinfer", "keydiff", "fastkv:tsp_layer=2,tsp_rate=0.3,retain_rate=0.2",
    "snapkv:kv_budget=24,window=4",
]


def test_the_specs_cover_every_registered_method(fastkv):
    assert {s.split(":")[0] for s in METHOD_SPECS} == set(fastkv.methods.available())


def cli_generate(model, prompt, spec, max_new, *extra):
    out, err = run_cli("generate", "--model", model, "--prompt", prompt, "--max-new-tokens",
                       max_new, "--method", spec, *extra)
    assert out.endswith("\n")
    return out[:-1], cli_stats(err)


@pytest.mark.parametrize("spec", METHOD_SPECS)
def test_generate_equals_cli_for_every_method(stories, spec):
    text, stats = cli_generate(STORIES, STORY_PROMPT, spec, 24)
    out = stories.generate(STORY_PROMPT, max_new_tokens=24, method=spec)
    assert out.text == text
    assert len(out.token_ids) == int(stats["generated"])
    assert len(out.prompt_ids) == int(stats["prompt_tokens"])
    assert out.kv_bytes == int(stats["kv_bytes"])
    assert out.kv_bytes_after_prefill == int(stats["kv_bytes_after_prefill"])
    assert out.method.split(":")[0] == stats["method"]


def test_method_objects_and_keyword_options_equal_the_spec(stories, fastkv):
    by_spec = stories.generate(STORY_PROMPT, max_new_tokens=16,
                               method="fastkv:tsp_layer=2,tsp_rate=0.3,retain_rate=0.2")
    by_object = stories.generate(STORY_PROMPT, max_new_tokens=16,
                                 method=fastkv.methods.FastKV(tsp_layer=2, tsp_rate=0.3, retain_rate=0.2))
    by_keywords = stories.generate(STORY_PROMPT, max_new_tokens=16, method="fastkv", tsp_layer=2,
                                   tsp_rate=0.3, retain_rate=0.2)
    assert by_spec.token_ids == by_object.token_ids == by_keywords.token_ids
    assert by_spec.method == by_object.method == by_keywords.method == \
        "fastkv:tsp_layer=2,tsp_rate=0.3,retain_rate=0.2"


def test_sampling_equals_cli(stories):
    text, stats = cli_generate(STORIES, STORY_PROMPT, "snapkv:retain_rate=0.3", 32, "--temperature",
                               "0.8", "--top-k", "40", "--top-p", "0.9", "--seed", "12345")
    out = stories.generate(STORY_PROMPT, max_new_tokens=32, method="snapkv", retain_rate=0.3,
                           temperature=0.8, top_k=40, top_p=0.9, seed=12345)
    assert out.text == text
    greedy = stories.generate(STORY_PROMPT, max_new_tokens=32, method="snapkv", retain_rate=0.3)
    assert out.token_ids != greedy.token_ids  # the sampler did sample


def test_chat_generation_on_smollm2_equals_cli(smollm2):
    prompt = "Name three colours of the rainbow."
    text, stats = cli_generate("smollm2-135m-instruct", prompt, "fastkv:retain_rate=0.5", 12,
                               "--chat", "--system", "You are terse.")
    out = smollm2.generate(prompt, max_new_tokens=12, chat=True, system="You are terse.",
                           method="fastkv", retain_rate=0.5)
    assert out.text == text
    assert len(out.token_ids) == int(stats["generated"])


def test_stream_pieces_concatenate_to_the_text(stories):
    full = stories.generate(STORY_PROMPT, max_new_tokens=40, method="h2o")
    stream = stories.generate(STORY_PROMPT, max_new_tokens=40, method="h2o", stream=True)
    # The engine thread finishes these 40 tokens within milliseconds: result stays None until the
    # iterator itself has reached the end (it used to appear as soon as the thread was done).
    time.sleep(0.3)
    assert stream.result is None
    pieces = list(stream)
    assert len(pieces) > 5 and all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == full.text
    assert stream.result.text == full.text
    assert stream.result.token_ids == full.token_ids


def test_closing_a_stream_early_stops_it(stories):
    # stories260K's context holds 2048 tokens; closing after the first piece stops the loop.
    with stories.generate([1], max_new_tokens=2000, stream=True) as stream:
        assert next(stream)
    result = stream.result
    assert result.finish_reason == "cancelled"
    assert len(result.token_ids) < 2000
    stream.close()  # idempotent


def test_stream_raises_the_engine_error(stories):
    stream = stories.generate([1, 2], max_new_tokens=5000, stream=True)
    with pytest.raises(ValueError, match="context length"):
        list(stream)


def test_stop_strings_and_stop_ids(stories):
    full = stories.generate(STORY_PROMPT, max_new_tokens=40)
    word = full.text.split()[3]
    cut = stories.generate(STORY_PROMPT, max_new_tokens=40, stop=word)
    assert cut.finish_reason == "stop_string"
    assert cut.text == full.text[: full.text.index(word)]
    streamed = list(stories.generate(STORY_PROMPT, max_new_tokens=40, stop=[word], stream=True))
    assert "".join(streamed) == cut.text
    stop_id = full.token_ids[5]
    by_id = stories.generate(STORY_PROMPT, max_new_tokens=40, stop=[stop_id])
    assert by_id.finish_reason == "stop"
    assert by_id.token_ids == full.token_ids[: full.token_ids.index(stop_id)]


@pytest.mark.parametrize("spec", METHOD_SPECS)
def test_kept_positions_equal_dump_selection(stories, spec, tmp_path):
    dump = tmp_path / "selection.json"
    cli_generate(STORIES, STORY_PROMPT, spec, 4, "--dump-selection", dump)
    with open(dump, encoding="utf-8") as f:
        sel = json.load(f)
    s = stories.session(method=spec, max_new_tokens=4)
    s.prefill(stories.tokenizer.encode(STORY_PROMPT))
    kept = s.kept_positions()
    assert len(kept["layers"]) == len(sel["layers"])
    for ours, ref in zip(kept["layers"], sel["layers"]):
        assert len(ours) == len(ref["kept"]) == stories.config["num_key_value_heads"]
        for head, ref_head in zip(ours, ref["kept"]):
            assert isinstance(head, np.ndarray) and head.dtype == np.int32
            assert head.tolist() == ref_head
    if sel["tsp"] is None:
        assert kept["tsp"] is None
    else:
        assert kept["tsp"].tolist() == sel["tsp"]["positions"]
    if spec.startswith("fastkv"):
        assert kept["tsp"] is not None and len(kept["tsp"]) < sel["n_prompt"]


def test_session_decode_follows_generate(stories):
    spec = "pyramidkv:retain_rate=0.25"
    out = stories.generate(STORY_PROMPT, max_new_tokens=20, method=spec)
    s = stories.session(method=spec, max_new_tokens=20)
    logits = s.prefill(out.prompt_ids)
    assert logits.shape == (512,) and logits.dtype == np.float32
    tokens = []
    for _ in range(20):
        tokens.append(int(np.argmax(logits)))
        if len(tokens) == 20:
            break
        logits = s.decode(tokens[-1])
    assert tokens == out.token_ids
    assert s.next_pos == len(out.prompt_ids) + 19
    assert s.kv_bytes == out.kv_bytes
    assert s.timing.n_prompt == len(out.prompt_ids)
    # cache_positions: the kept prompt positions plus the decoded ones, per head.
    kept = s.kept_positions()["layers"]
    cache = s.cache_positions()
    decoded = list(range(len(out.prompt_ids), len(out.prompt_ids) + 19))
    assert cache[0][0].tolist() == kept[0][0].tolist() + decoded


def test_extend_equals_decoding_token_by_token(stories):
    ids = stories.tokenizer.encode(STORY_PROMPT)
    question = stories.tokenizer.encode(" Where did Lily go?", add_special_tokens=False)
    a = stories.session(method="snapkv", max_new_tokens=len(question))
    b = stories.session(method="snapkv", max_new_tokens=len(question))
    a.prefill(ids)
    b.prefill(ids)
    extended = a.extend(np.asarray(question, dtype=np.int32))
    for t in question:
        stepped = b.decode(t)
    np.testing.assert_array_equal(extended, stepped)
    assert a.next_pos == b.next_pos == len(ids) + len(question)


def test_logits_rows_match_session_prefill(stories):
    ids = stories.tokenizer.encode(STORY_PROMPT)[:50]
    all_rows = stories.logits(ids)
    for n in (1, 17, 50):
        s = stories.session(max_new_tokens=0)
        np.testing.assert_allclose(s.prefill(ids[:n]), all_rows[n - 1], rtol=0, atol=1e-4)
