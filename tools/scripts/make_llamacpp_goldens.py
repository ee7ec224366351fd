#!/usr/bin/env python3
"""Writes tests/data/goldens/llamacpp_<model>.json: what llama.cpp (through llama-cpp-python)
computes for the real GGUF models, checked by tests/e2e/test_llamacpp_goldens.cc.

Per model:
  tokenizer  token ids of a varied corpus from llama.cpp's own tokenizer, three ways:
             `ids_special`      llm.tokenize(text, add_bos=False, special=True)
             `ids_special_bos`  llm.tokenize(text, add_bos=True,  special=True)
             `ids_plain`        llm.tokenize(text, add_bos=False, special=False)
             (add_bos=True means "add the vocabulary's default specials": BOS only where the GGUF
             asks for it, so it is a no-op for SmolLM2 whose add_bos_token is false.)
  prompts    texts of several lengths (Paul Graham essays for SmolLM2, raw and one ChatML prompt
             rendered with Jinja2 from the GGUF's own tokenizer.chat_template; simple made-up
             TinyStories-like text for stories260K), each with
             `ids`           llama.cpp's tokenization of `text` (add_bos=True, special=True)
             `top1`/`margin` argmax of llama.cpp's logits at EVERY position and the gap between
                             the best and second-best logit there
             `last_logits`   full-vocabulary logits of the last position (some prompts only;
                             6 significant digits)
             `greedy`        128 tokens of pure argmax decoding from llama.cpp's own logits (its KV
                             cache; no sampler, no repeat penalty, no stop token) and the top-2
                             margin of each step (`greedy_margin`)

llama.cpp runs on the CPU with n_threads=2, the KV cache in f32 (type_k = type_v = F32, so the
cache does not add f16 rounding that fastkv does not have) and flash attention off.
The logits of every position come from one eval() of the whole prompt with logits_all=True
(batches of n_batch = 512, like llama.cpp's default).

Usage: python3 tools/scripts/make_llamacpp_goldens.py [--shared /work/shared]
           [--only smollm2-135m-instruct|stories260K|qwen2.5-coder-1.5b-instruct]
           [--llama-cpp-commit SHA] [--self-check]
qwen2.5-coder-1.5b-instruct (Q4_K_M, not fetched in CI): 8 prompts (chat and raw, code and prose,
one of ~3K tokens), 32 greedy tokens each and the top-5 ids of every position.
--self-check writes nothing: it re-runs llama.cpp on the golden prompts that have last_logits with
two other settings (one token per batch, i.e. its decode kernels, prompts <= 1000 tokens; f16
KV cache) and prints how far
llama.cpp moves from its own golden. That spread calibrates the C++ test's tolerances.
Needs: pip install llama-cpp-python jinja2 numpy (the version used is recorded in the golden).
"""
import argparse
import hashlib
import json
import os
import random
import sys
import time

import jinja2
import numpy as np

import llama_cpp
from llama_cpp import Llama

GGML_TYPE_F32 = 0
N_GREEDY = 128

CORPUS = [
    "",
    " ",
    "\n",
    "Hello world",
    "Hello, world! How are you today?",
    " leading space and trailing space ",
    "    four leading spaces",
    "runs   of    spaces\t\ttabs\t and\n\n\nnewlines\r\n\r\nCRLF  \n \n",
    "Once upon a time, there was a little girl named Lily. She loved to play outside.",
    "The 3 cats ate 12 fish in 2024; 1234567 + 89 = 1234656. Pi is 3.14159.",
    "1 22 333 4444 55555 666666",
    "Café, naïve, façade, résumé, Ångström, jalapeño, über, São Paulo.",
    "中文文本和日本語のテキスト，还有한국어 텍스트。",
    "Emoji: 😀 🎉 👍🏽 👨‍👩‍👧‍👦 🇯🇵 ❤️ ✨",
    "Ελληνικά, русский текст, עברית, العربية.",
    "def square(x):\n    return x * x  # the square\n\nprint(square(7))\n",
    "if (a[i] != b[i]) { return -1; } else { i++; }",
    "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n",
    "text <|im_end|> in the middle <|endoftext|> and at the end<|im_end|>",
    "<s> looks like BOS </s> and <unk> too",
    "<|im_start|><|im_start|>  <|im_end|>",
    "I'm sure they'll say it's what we've done, isn't it? YOU'RE RIGHT, I'D SAY.",
    "“Curly quotes” — em dash – en dash … ellipsis ‘single’",
    "https://example.com/a/b?x=1&y=two#frag",
    "mixedCASE snake_case kebab-case CONSTANT_CASE x1y2z3",
    "a\u00a0non-breaking space and an\u3000ideographic one",
    "e\u0301 (decomposed) vs \u00e9 (composed)",
    "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
]

# Made-up TinyStories-like sentences for stories260K (its training data was simple stories).
_NAMES = ["Lily", "Tom", "Ben", "Sue", "Max", "Mia", "Sam", "Anna"]
_THINGS = ["ball", "cat", "dog", "cake", "tree", "boat", "toy", "flower", "kite", "box"]
_ADJ = ["big", "red", "little", "happy", "shiny", "soft", "funny", "blue"]
_PLACES = ["park", "garden", "house", "school", "forest", "beach"]


def story_text(n_sentences, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n_sentences):
        n, t, a, p = rng.choice(_NAMES), rng.choice(_THINGS), rng.choice(_ADJ), rng.choice(_PLACES)
        k = rng.randrange(8)
        if k == 0:
            s = f"Once upon a time, there was a {a} {t} in the {p}."
        elif k == 1:
            s = f"{n} saw a {a} {t} and smiled."
        elif k == 2:
            s = f'"Can I play with the {t}?" asked {n}.'
        elif k == 3:
            s = f"{n} went to the {p} with mom."
        elif k == 4:
            s = f"The {t} was very {a}, and {n} was happy."
        elif k == 5:
            s = f"One day, {n} found a {t} under a tree."
        elif k == 6:
            s = f'"Thank you!" said {n}. They were friends.'
        else:
            s = f"{n} and the {t} played all day."
        out.append(s)
        if i % 6 == 5:
            out.append("\n")
    return " ".join(out).replace(" \n ", "\n")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sig6(x):
    return float(f"{float(x):.6g}")


def sig4(x):
    return float(f"{float(x):.4g}")


def top2(row):
    i = int(np.argmax(row))
    second = np.partition(row, -2)[-2]
    return i, float(row[i] - second)


def essays(shared):
    d = os.path.join(shared, "data", "needle", "PaulGrahamEssays")
    parts = []
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), encoding="utf-8") as f:
            parts.append(f.read())
    return "\n\n".join(parts)


def cut_to_tokens(llm, text, n_tokens):
    """Longest prefix of text, cut at a space or newline, whose tokenization has <= n_tokens."""
    lo, hi = 0, len(text)
    # Token counts grow with the prefix; bisect on characters.
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(llm.tokenize(text[:mid].encode(), add_bos=True, special=True)) <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    cut = text[:lo]
    for sep in (" ", "\n"):
        j = cut.rfind(sep)
        if j > len(cut) - 40:
            cut = cut[:j]
            break
    return cut


def run_prompt(llm, name, text, with_logits, n_greedy=N_GREEDY, top5=False):
    ids = llm.tokenize(text.encode(), add_bos=True, special=True)
    t0 = time.time()
    llm.reset()
    llm.eval(ids)
    scores = np.array(llm.scores[: len(ids), :], dtype=np.float32)  # [n, n_vocab]
    top1, margin, top5_ids = [], [], []
    for r in range(scores.shape[0]):
        i, m = top2(scores[r])
        top1.append(i)
        margin.append(sig4(m))
        if top5:
            order = np.argpartition(scores[r], -5)[-5:]
            top5_ids.append([int(t) for t in order[np.argsort(-scores[r][order], kind="stable")]])
    t_prefill = time.time() - t0
    case = {"name": name, "text": text, "ids": ids, "n_tokens": len(ids), "top1": top1,
            "margin": margin}
    if with_logits:
        case["last_logits"] = [sig6(v) for v in scores[-1]]
    if top5:
        case["top5"] = top5_ids
    # Greedy: argmax of llama.cpp's next-token logits, fed back through its KV cache.
    greedy, gmargin = [], []
    last = scores[-1].copy()
    del scores
    for _ in range(n_greedy):
        tok, m = top2(last)
        greedy.append(tok)
        gmargin.append(sig4(m))
        llm.eval([tok])
        last = np.array(llm.scores[llm.n_tokens - 1, :], dtype=np.float32)
    case["greedy"] = greedy
    case["greedy_margin"] = gmargin
    print(f"  {name}: {len(ids)} tokens, prefill {t_prefill:.1f}s, total {time.time() - t0:.1f}s, "
          f"min margin {min(margin):.4g}, min greedy margin {min(gmargin):.4g}", flush=True)
    return case


def make(model_key, path, shared, commit, out_dir):
    probe = Llama(model_path=path, n_ctx=64, n_threads=2, verbose=False)
    n_ctx_train = probe._model.n_ctx_train()
    meta = dict(probe.metadata)
    del probe
    n_ctx = min(8192, n_ctx_train)
    llm = Llama(model_path=path, n_ctx=n_ctx, n_batch=512, logits_all=True, n_threads=2,
                n_threads_batch=2, seed=1234, verbose=False, flash_attn=False,
                type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)
    print(f"{model_key}: n_ctx_train {n_ctx_train}, n_vocab {llm.n_vocab()}", flush=True)

    tok_cases = []
    for text in CORPUS:
        b = text.encode()
        tok_cases.append({
            "text": text,
            "ids_special": llm.tokenize(b, add_bos=False, special=True),
            "ids_special_bos": llm.tokenize(b, add_bos=True, special=True),
            "ids_plain": llm.tokenize(b, add_bos=False, special=False),
        })

    prompts = []
    if model_key == "smollm2-135m-instruct":
        corpus = essays(shared)
        for n, with_logits in ((8, False), (200, True), (1000, False), (4000, True)):
            prompts.append(run_prompt(llm, f"essay_{n}", cut_to_tokens(llm, corpus, n),
                                      with_logits))
        # ChatML prompt rendered from the GGUF's own template (no system message: the template
        # inserts its default one).
        tmpl = jinja2.Environment().from_string(meta["tokenizer.chat_template"])
        question = cut_to_tokens(llm, corpus[20000:], 600) + "\n\nSummarize the text above."
        chat = tmpl.render(messages=[{"role": "user", "content": question}],
                           add_generation_prompt=True)
        prompts.append(run_prompt(llm, "chat_600", chat, True))
    elif model_key == "qwen2.5-coder-1.5b-instruct":
        # 8 prompts: chat and raw, code and prose, one of ~3K tokens; 32 greedy tokens and the
        # top-5 ids of every position (the criteria: greedy text, top-1 / top-5).
        corpus = essays(shared)
        tmpl = jinja2.Environment().from_string(meta["tokenizer.chat_template"])

        def chat(messages):
            return tmpl.render(messages=messages, add_generation_prompt=True)

        cases = [
            ("chat_code", chat([{"role": "user", "content":
                                 "Write a Python function that checks whether a string is a "
                                 "palindrome, ignoring case and punctuation."}])),
            ("chat_prose", chat([{"role": "user", "content":
                                  "Explain in three sentences why the sky is blue."}])),
            ("chat_system_cpp", chat([{"role": "system", "content":
                                       "You are a senior C++ engineer. Answer briefly."},
                                      {"role": "user", "content":
                                       "What is RAII and why does it matter?"}])),
            ("raw_python", "import json\n\n\ndef load_config(path):\n    \"\"\"Reads a JSON "
                           "config file and returns it as a dict.\"\"\"\n"),
            ("raw_cpp", "#include <vector>\n\n// Returns the indices of the k largest values.\n"
                        "std::vector<int> top_k(const std::vector<float>& v, int k) {\n"),
            ("raw_essay_200", cut_to_tokens(llm, corpus, 200)),
            ("raw_essay_600", cut_to_tokens(llm, corpus[40000:], 600)),
            ("chat_essay_3000", chat([{"role": "user", "content":
                                       cut_to_tokens(llm, corpus[80000:], 3000) +
                                       "\n\nSummarize the text above in two sentences."}])),
        ]
        for name, text in cases:
            prompts.append(run_prompt(llm, name, text, False, n_greedy=32, top5=True))
    else:
        stories = story_text(400, 260)
        for n, with_logits in ((1, False), (40, False), (250, True), (500, True), (1000, False)):
            text = "" if n == 1 else cut_to_tokens(llm, stories, n)
            prompts.append(run_prompt(llm, f"story_{n}", text, with_logits))

    golden = {
        "model": model_key,
        "model_file": os.path.basename(path),
        "model_sha256": sha256(path),
        "n_ctx_train": n_ctx_train,
        "n_vocab": llm.n_vocab(),
        "oracle": {
            "llama_cpp_python": llama_cpp.__version__,
            "llama_cpp_commit": commit,
            "system_info": llama_cpp.llama_print_system_info().decode(),
            "n_threads": 2, "n_ctx": n_ctx, "n_batch": 512, "kv_cache": "f32",
            "flash_attn": False, "seed": 1234,
            "rounding": "last_logits 6 significant digits, margins 4",
        },
        "tokenizer": tok_cases,
        "prompts": prompts,
    }
    out = os.path.join(out_dir, f"llamacpp_{model_key}.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.2f} MB)", flush=True)


def self_check(model_key, path, out_dir):
    with open(os.path.join(out_dir, f"llamacpp_{model_key}.json"), encoding="utf-8") as f:
        golden = json.load(f)
    n_ctx = golden["oracle"]["n_ctx"]
    variants = {"n_batch=1": dict(n_batch=1, n_ubatch=1, type_k=GGML_TYPE_F32,
                                  type_v=GGML_TYPE_F32),
                "f16 KV": dict(n_batch=512, type_k=None, type_v=None)}
    for vname, kw in variants.items():
        llm = Llama(model_path=path, n_ctx=n_ctx, logits_all=True, n_threads=2, n_threads_batch=2,
                    seed=1234, verbose=False, flash_attn=False, **kw)
        for p in golden["prompts"]:
            if "last_logits" not in p:
                continue
            if kw["n_batch"] == 1 and len(p["ids"]) > 1000:
                continue  # one token per eval: ~0.1 s each on 2 cores
            llm.reset()
            llm.eval(p["ids"])
            s = np.array(llm.scores[: len(p["ids"]), :], dtype=np.float32)
            agree = float(np.mean(s.argmax(axis=1) == np.array(p["top1"])))
            diff = float(np.abs(s[-1] - np.array(p["last_logits"])).max())
            print(f"{model_key} {p['name']} {vname}: last-logit max |diff| {diff:.4g}, "
                  f"top-1 agreement {agree:.4f}", flush=True)
        del llm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__),
                                                     "../../../shared"))
    ap.add_argument("--only", default=None)
    ap.add_argument("--self-check", action="store_true")
    ap.add_argument("--llama-cpp-commit", default="0c1e57098bba43ac29e6e3b677cdceebdd22334f",
                    help="vendored llama.cpp commit of the installed llama-cpp-python (the "
                         "package does not expose it; read it from the sdist's vendor/llama.cpp)")
    args = ap.parse_args()
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
    out_dir = os.path.join(root, "tests", "data", "goldens")
    cache = os.environ.get("FASTKV_MODEL_DIR",
                           os.path.join(os.path.expanduser("~"), ".cache", "fastkv", "models"))
    models = {
        "smollm2-135m-instruct": os.path.join(cache, "SmolLM2-135M-Instruct.Q4_1.gguf"),
        "qwen2.5-coder-1.5b-instruct": os.path.join(cache,
                                                    "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
        "stories260K": os.path.join(args.shared, "models", "stories260K", "stories260K.gguf"),
    }
    for key, path in models.items():
        if args.only and args.only != key:
            continue
        if not os.path.exists(path):
            sys.exit(f"{path} missing (python3 tools/scripts/fetch_models.py {key})")
        if args.self_check:
            self_check(key, path, out_dir)
        else:
            make(key, path, os.path.abspath(args.shared), args.llama_cpp_commit, out_dir)


if __name__ == "__main__":
    main()
