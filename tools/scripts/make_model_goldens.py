#!/usr/bin/env python3
"""Computes model goldens with Hugging Face `transformers` on the tiny fixtures.

For every model in tests/data/models/ (written by make_tiny_models.py) it loads
the exact files with torch_dtype=float32 (bf16/f16 weights are upcast exactly),
eager attention, CPU, and writes tests/data/goldens/model_<name>.json:

  {"model": name, "oracle": {...versions...},
   "cases": [{"prompt": [ids], "last_logits": [vocab floats]}, ...],   # lengths 1,7,64,300,1024
   "greedy": {"prompt": [16 ids], "tokens": [64 ids], "min_top2_margin": float}}

tiny-llama's 7-token case additionally carries "all_logits": [7][vocab].
Floats are rounded to 7 significant digits. Greedy decoding is pure argmax for
exactly 64 new tokens (eos stopping disabled) and is cross-checked against an
independent no-KV-cache argmax loop over full forwards.

Run with the oracle venv (see tools/scripts/README.md):
  /work/venv-oracle/bin/python tools/scripts/make_model_goldens.py
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS_DIR = os.path.join(REPO_ROOT, "tests", "data", "models")
GOLDENS_DIR = os.path.join(REPO_ROOT, "tests", "data", "goldens")

MODEL_NAMES = ["tiny-llama", "tiny-llama3", "tiny-mistral", "tiny-qwen2", "tiny-qwen3",
               "tiny-llama-fastkv"]
PROMPT_LENGTHS = [1, 7, 64, 300, 1024]
GREEDY_PROMPT_LEN = 16
GREEDY_NEW_TOKENS = 64
PROMPT_SEED = 1234
# Prompt ids avoid the reserved 0 (pad/unk), 1 (bos), 2 (eos).
ID_LO, ID_HI = 3, 512


def make_prompts():
    """Same prompts for every model, drawn from one fixed-seed generator."""
    rng = np.random.default_rng(PROMPT_SEED)
    cases = [rng.integers(ID_LO, ID_HI, size=n).tolist() for n in PROMPT_LENGTHS]
    greedy = rng.integers(ID_LO, ID_HI, size=GREEDY_PROMPT_LEN).tolist()
    return cases, greedy


def r7(x):
    """Round to 7 significant digits (float32 carries ~7.2)."""
    return float(f"{x:.7g}")


def load(name):
    path = os.path.join(MODELS_DIR, name)
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    return model


@torch.no_grad()
def full_logits(model, ids):
    out = model(torch.tensor([ids], dtype=torch.long), use_cache=False)
    return out.logits[0].to(torch.float32)  # [len, vocab]


@torch.no_grad()
def greedy(model, prompt):
    inp = torch.tensor([prompt], dtype=torch.long)
    gen = model.generate(inp, do_sample=False, max_new_tokens=GREEDY_NEW_TOKENS,
                         min_new_tokens=0, eos_token_id=None, pad_token_id=0,
                         num_beams=1, temperature=None, top_p=None, top_k=None)
    tokens = gen[0, len(prompt):].tolist()
    if len(tokens) != GREEDY_NEW_TOKENS:
        sys.exit(f"generate returned {len(tokens)} tokens")
    # Independent check: argmax over full (uncached) forwards, also giving margins.
    seq = list(prompt)
    margins = []
    for _ in range(GREEDY_NEW_TOKENS):
        last = full_logits(model, seq)[-1]
        top2 = torch.topk(last, 2)
        margins.append(float(top2.values[0] - top2.values[1]))
        seq.append(int(top2.indices[0]))
    ref = seq[len(prompt):]
    if ref != tokens:
        sys.exit(f"generate() {tokens} != uncached argmax loop {ref}")
    return tokens, min(margins)


@torch.no_grad()
def attention_peakiness(model, ids):
    """Mean max attention weight over heads/queries of the last layer (1/len == uniform)."""
    out = model(torch.tensor([ids], dtype=torch.long), use_cache=False, output_attentions=True)
    att = out.attentions[-1][0]  # [heads, q, k]
    return float(att.max(dim=-1).values[:, len(ids) // 2:].mean())


def read_safetensors_np(model_dir):
    """All tensors of a checkpoint as float64 NumPy arrays, parsed by hand (no HF code)."""
    out = {}
    for fn in sorted(os.listdir(model_dir)):
        if not fn.endswith(".safetensors"):
            continue
        raw = open(os.path.join(model_dir, fn), "rb").read()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + n])
        base = 8 + n
        for key, meta in header.items():
            if key == "__metadata__":
                continue
            a, b = meta["data_offsets"]
            buf = raw[base + a:base + b]
            dt = meta["dtype"]
            if dt == "F32":
                arr = np.frombuffer(buf, dtype="<f4")
            elif dt == "F16":
                arr = np.frombuffer(buf, dtype="<f2")
            elif dt == "BF16":  # bf16 is the top half of an f32
                arr = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view("<f4")
            else:
                raise ValueError(f"{fn}: {key}: dtype {dt}")
            out[key] = arr.astype(np.float64).reshape(meta["shape"])
    return out


def numpy_forward(model_dir, ids):
    """Independent float64 re-implementation of the decoder, from config.json only.
    Covers GQA, explicit head_dim, q/k/v bias (qwen2), per-head q/k RMSNorm (qwen3),
    llama3 rope scaling and the sliding window. Returns last-position logits."""
    c = json.load(open(os.path.join(model_dir, "config.json")))
    w = read_safetensors_np(model_dir)
    H, Hkv, D = c["num_attention_heads"], c["num_key_value_heads"], c["hidden_size"]
    d = c.get("head_dim") or D // H
    eps = c["rms_norm_eps"]

    def norm(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    inv = 1.0 / c["rope_theta"] ** (np.arange(0, d, 2) / d)
    rs = c.get("rope_scaling")
    if rs:
        assert rs["rope_type"] == "llama3"
        old = rs["original_max_position_embeddings"]
        lo_w, hi_w = old / rs["low_freq_factor"], old / rs["high_freq_factor"]
        wl = 2 * math.pi / inv
        smooth = (old / wl - rs["low_freq_factor"]) / (rs["high_freq_factor"] -
                                                        rs["low_freq_factor"])
        mixed = (1 - smooth) * inv / rs["factor"] + smooth * inv
        inv = np.where(wl < hi_w, inv, np.where(wl > lo_w, inv / rs["factor"], mixed))
    n = len(ids)
    pos = np.arange(n)
    ang = pos[:, None] * inv[None, :]  # [n, d/2]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(x):  # x [n, heads, d]; halves rotated (HF/NeoX layout)
        x1, x2 = x[..., :d // 2], x[..., d // 2:]
        return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)

    allowed = pos[None, :] <= pos[:, None]  # [q, k]
    if c.get("sliding_window") and c.get("use_sliding_window", True):
        allowed &= pos[None, :] > pos[:, None] - c["sliding_window"]
    x = w["model.embed_tokens.weight"][ids]
    for il in range(c["num_hidden_layers"]):
        p = f"model.layers.{il}."
        h = norm(x, w[p + "input_layernorm.weight"])
        proj = {}
        for t, heads in (("q", H), ("k", Hkv), ("v", Hkv)):
            y = h @ w[p + f"self_attn.{t}_proj.weight"].T
            if p + f"self_attn.{t}_proj.bias" in w:
                y = y + w[p + f"self_attn.{t}_proj.bias"]
            y = y.reshape(n, heads, d)
            if t != "v" and p + f"self_attn.{t}_norm.weight" in w:
                y = norm(y, w[p + f"self_attn.{t}_norm.weight"])
            proj[t] = y
        q, k, v = rope(proj["q"]), rope(proj["k"]), proj["v"]
        o = np.empty((n, H, d))
        for hh in range(H):
            kv = hh // (H // Hkv)
            sc = q[:, hh] @ k[:, kv].T / math.sqrt(d)
            sc = np.where(allowed, sc, -np.inf)
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            o[:, hh] = (sc / sc.sum(-1, keepdims=True)) @ v[:, kv]
        x = x + o.reshape(n, H * d) @ w[p + "self_attn.o_proj.weight"].T
        h = norm(x, w[p + "post_attention_layernorm.weight"])
        g = h @ w[p + "mlp.gate_proj.weight"].T
        u = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "mlp.down_proj.weight"].T
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return norm(x[-1], w["model.norm.weight"]) @ head.T


def run_model(name, cases_prompts, greedy_prompt):
    model = load(name)
    cfg = model.config
    cases = []
    stats = []
    for ids in cases_prompts:
        if len(ids) > cfg.max_position_embeddings:
            sys.exit(f"{name}: prompt {len(ids)} exceeds max_position_embeddings")
        logits = full_logits(model, ids)
        case = {"prompt": ids, "last_logits": [r7(v) for v in logits[-1].tolist()]}
        if name == "tiny-llama" and len(ids) == 7:
            case["all_logits"] = [[r7(v) for v in row] for row in logits.tolist()]
        cases.append(case)
        # Cross-check HF against the independent NumPy float64 forward.
        ref = numpy_forward(os.path.join(MODELS_DIR, name), ids)
        err = float(np.abs(ref - logits[-1].double().numpy()).max())
        if err > 1e-3 or int(ref.argmax()) != int(logits[-1].argmax()):
            sys.exit(f"{name} len {len(ids)}: HF vs NumPy max abs diff {err}")
        stats.append(f"len{len(ids)}: std={float(logits[-1].std()):.3f} np_err={err:.1e} "
                     f"argmax={int(logits[-1].argmax())}")
    tokens, margin = greedy(model, greedy_prompt)
    distinct = len(set(tokens))
    if distinct < 8:
        sys.exit(f"{name}: degenerate greedy continuation ({distinct} distinct): {tokens}")
    peak = attention_peakiness(model, cases_prompts[2])
    print(f"{name}: {'; '.join(stats)}")
    print(f"  greedy distinct={distinct} min_top2_margin={margin:.4g} "
          f"attn_peak(len64)={peak:.3f} (uniform~{1 / 48:.3f}) tokens={tokens}")
    return {
        "model": name,
        "oracle": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "compute_dtype": "float32",
            "stored_dtype": str(cfg.torch_dtype).replace("torch.", ""),
            "attn_implementation": "eager",
            "float_format": "7 significant digits",
        },
        "cases": cases,
        "greedy": {"prompt": greedy_prompt, "tokens": tokens, "min_top2_margin": r7(margin)},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="*", help="subset of model names")
    args = ap.parse_args()
    torch.manual_seed(0)
    cases_prompts, greedy_prompt = make_prompts()
    os.makedirs(GOLDENS_DIR, exist_ok=True)
    for name in args.only or MODEL_NAMES:
        golden = run_model(name, cases_prompts, greedy_prompt)
        path = os.path.join(GOLDENS_DIR, f"model_{name}.json")
        with open(path, "w") as f:
            json.dump(golden, f, separators=(",", ":"))
            f.write("\n")
        print(f"  wrote {os.path.relpath(path, REPO_ROOT)} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
