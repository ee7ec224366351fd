#!/usr/bin/env python3
"""Writes tests/data/goldens/kv_<method>.json from the NumPy reference (kv_reference.py).

Each file: {"model": <repo-relative fixture dir>, "cases": [{"name", "options", "prompt",
"selection": <--dump-selection record>, "logits": [last-position logits], "min_margin"}]}.
"options" holds only the fields set (PolicyOptions names); everything else is the method default.
Cases cover short prompts (1, 5 < window), odd lengths, budgets at and above the prompt length and
tie-prone prompts (repeated tokens; max pooling makes plateaus of exactly equal scores).
A case whose smallest non-tie score gap at a top-k boundary is below FRAGILE is reported: such a
golden could flip under fp32 rounding in the engine.

Run: python3 tools/scripts/make_kv_goldens.py [METHOD ...]   (numpy only; about a minute for all;
naming methods rewrites only their files)
"""

import hashlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kv_reference as ref  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = "tests/data/models/tiny-llama-fastkv"
OUT = os.path.join(ROOT, "tests", "data", "goldens")
FRAGILE = 1e-4


def prompts():
    rng = np.random.default_rng(20250201)
    p = {f"rand{n}": [int(t) for t in rng.integers(3, 512, size=n)]
         for n in (1, 5, 9, 37, 64, 100, 131, 200)}
    p["repeat100"] = [17] * 100  # one token repeated: scores vary only through RoPE
    p["periodic100"] = [5, 6, 7, 8] * 25
    return p


CONFIGS = {
    "fullkv": [
        ({}, ["rand1", "rand5", "rand37", "rand131"]),
    ],
    "fastkv": [
        ({}, ["rand1", "rand5", "rand9", "rand37", "rand100", "rand131", "rand200", "repeat100"]),
        ({"retain_rate": 0.3, "tsp_rate": 0.5, "pooling": "avg"},
         ["rand37", "rand100", "rand131", "periodic100"]),
        ({"mode": "constant", "kv_budget": 24, "tsp_len": 40}, ["rand5", "rand37", "rand100",
                                                                  "rand200"]),
        ({"kv_budget": 16, "tsp_rate": 0.4, "tsp_layer": 0, "kernel": 5}, ["rand64", "rand131"]),
        ({"retain_rate": 0.2, "tsp_len": 50}, ["rand100", "rand131"]),
        ({"tsp_rate": 1.0}, ["rand100"]),
        ({"retain_rate": 0.2}, ["rand100"]),
        ({"retain_rate": 1.0, "tsp_rate": 1.0}, ["rand100"]),
        ({"tsp_layer": 5}, ["rand100"]),
        ({"kv_budget": 100, "tsp_rate": 1.0}, ["rand100"]),
        ({"kv_budget": 150, "tsp_len": 150}, ["rand100"]),
    ],
    "snapkv": [
        ({"retain_rate": 0.2}, ["rand5", "rand37", "rand100", "rand131", "repeat100"]),
        ({"kv_budget": 30, "pooling": "avg"}, ["rand37", "rand100", "rand200"]),
        ({"retain_rate": 0.2, "per_query_head": True}, ["rand100", "rand131"]),
        ({"kv_budget": 100}, ["rand100"]),
        ({"kv_budget": 150}, ["rand100"]),
    ],
    "pyramidkv": [
        ({"retain_rate": 0.3}, ["rand37", "rand100", "rand131"]),
        ({"kv_budget": 40, "window": 4}, ["rand100", "rand200", "periodic100"]),
    ],
    "adakv": [
        ({"retain_rate": 0.2}, ["rand37", "rand100", "rand131", "repeat100"]),
        ({"kv_budget": 30, "kernel": 5}, ["rand100", "rand200"]),
    ],
    "streamingllm": [
        ({"retain_rate": 0.2}, ["rand5", "rand37", "rand100"]),
        ({"kv_budget": 20}, ["rand100", "rand131"]),
    ],
    "h2o": [
        ({"retain_rate": 0.2}, ["rand5", "rand37", "rand100"]),
        ({"kv_budget": 25, "window": 4}, ["rand100", "rand131", "repeat100"]),
    ],
    "gemfilter": [
        ({"retain_rate": 0.2}, ["rand5", "rand37", "rand100", "rand131"]),
        ({"kv_budget": 30, "filter_layer": 4}, ["rand100", "rand200", "repeat100"]),
        ({"kv_budget": 200}, ["rand100"]),
    ],
    "pyramidinfer": [
        ({}, ["rand37", "rand100", "rand131", "rand200"]),
        ({"retain_rate": 0.5, "window": 4}, ["rand131", "rand200"]),
    ],
    "keydiff": [
        ({}, ["rand1", "rand9", "rand37", "rand100", "rand200"]),
        ({"retain_rate": 0.2}, ["rand5", "rand37", "rand131", "repeat100", "periodic100"]),
        ({"kv_budget": 30}, ["rand64", "rand100", "rand200"]),
        ({"kv_budget": 100}, ["rand100"]),
    ],
}


def main():
    model = ref.LlamaRef(os.path.join(ROOT, MODEL))
    ps = prompts()
    with open(os.path.join(ROOT, MODEL, "model.safetensors"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()  # goldens are stale if the fixture changes
    os.makedirs(OUT, exist_ok=True)
    fragile = []
    total = 0
    only = sys.argv[1:]  # method names to rewrite (default: every method)
    unknown = [m for m in only if m not in CONFIGS]
    if unknown:
        sys.exit(f"make_kv_goldens.py: unknown method(s) {unknown}; known: {list(CONFIGS)}")
    for method, configs in CONFIGS.items():
        if only and method not in only:
            continue
        cases = []
        for opts, names in configs:
            for pname in names:
                rec = ref.prefill(model, method, opts, ps[pname])
                logits = rec.pop("logits")
                margin = rec.pop("min_margin")
                tag = ",".join(f"{k}={v}" for k, v in opts.items()) or "defaults"
                name = f"{method}[{tag}]/{pname}"
                if margin < FRAGILE:
                    fragile.append((name, margin))
                cases.append({"name": name, "options": opts, "prompt": ps[pname],
                              "selection": rec,
                              "logits": [round(float(x), 6) for x in logits],
                              "min_margin": None if margin == float("inf") else margin})
                total += 1
        path = os.path.join(OUT, f"kv_{method}.json")
        with open(path, "w") as f:
            json.dump({"model": MODEL, "fixture_sha256": digest, "cases": cases}, f,
                      separators=(",", ":"))
            f.write("\n")
        print(f"{path}: {len(cases)} cases, {os.path.getsize(path)} bytes")
    print(f"{total} cases")
    for name, m in fragile:
        print(f"FRAGILE (min relative gap {m:.2e}): {name}")


if __name__ == "__main__":
    main()
