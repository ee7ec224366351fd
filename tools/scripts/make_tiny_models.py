#!/usr/bin/env python3
"""Writes tiny random-weight Hugging Face checkpoints used as test fixtures.

Each model lands in tests/data/models/<name>/ in the exact layout that
`transformers` `save_pretrained` produces (config.json, generation_config.json,
model.safetensors or sharded model-0000N-of-0000M.safetensors + index).

Weights are drawn from a fixed-seed NumPy generator in float32 and then cast
(round-to-nearest-even) to the stored dtype BEFORE saving, so the bf16/f16
files themselves are the ground truth the oracle (make_model_goldens.py) and
the C++ engine both read.

Run with the oracle venv (see tools/scripts/README.md):
  /work/venv-oracle/bin/python tools/scripts/make_tiny_models.py
"""

import argparse
import json
import os
import shutil
import sys
import zlib

import numpy as np
import torch
import transformers
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT_ROOT = os.path.join(REPO_ROOT, "tests", "data", "models")

# Token ids 0..2 are reserved (pad/unk=0, bos=1, eos=2) in every tiny model.
COMMON = dict(vocab_size=512, bos_token_id=1, eos_token_id=2, rms_norm_eps=1e-5,
              max_position_embeddings=2048, hidden_act="silu", initializer_range=0.02)

# name -> (config class, model class, config kwargs, stored dtype, shards)
SPECS = {
    "tiny-llama": (LlamaConfig, LlamaForCausalLM, dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, rope_theta=10000.0, tie_word_embeddings=False),
        torch.float32, 1),
    "tiny-llama3": (LlamaConfig, LlamaForCausalLM, dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, rope_theta=500000.0, tie_word_embeddings=True,
        # original_max_position_embeddings is tiny so that the llama3 frequency
        # scaling touches every regime (kept / smoothed / divided) at short lengths.
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
        torch.bfloat16, 1),
    "tiny-mistral": (MistralConfig, MistralForCausalLM, dict(
        # head_dim 32 != hidden/heads (=16), as in Mistral-Nemo.
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, rope_theta=10000.0, sliding_window=256,
        tie_word_embeddings=False),
        torch.float16, 2),
    "tiny-qwen2": (Qwen2Config, Qwen2ForCausalLM, dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, rope_theta=1000000.0, tie_word_embeddings=True,
        use_sliding_window=False, sliding_window=None, max_window_layers=2),
        torch.float32, 1),
    "tiny-qwen3": (Qwen3Config, Qwen3ForCausalLM, dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, rope_theta=1000000.0, tie_word_embeddings=False,
        attention_bias=False, use_sliding_window=False, sliding_window=None,
        max_window_layers=2),
        torch.bfloat16, 1),
    "tiny-llama-fastkv": (LlamaConfig, LlamaForCausalLM, dict(
        hidden_size=128, intermediate_size=128, num_hidden_layers=6, num_attention_heads=8,
        num_key_value_heads=2, head_dim=16, rope_theta=10000.0, tie_word_embeddings=True),
        torch.float32, 1),
}


def init_std(name, shape, tied):
    """(mean, std) for a parameter, chosen so the model is 'alive': attention
    scores are far from uniform and logits vary by several units."""
    if name.endswith("embed_tokens.weight"):
        # With tied embeddings the token vector left in the residual stream boosts the
        # current token's own logit (greedy then repeats it forever); keep it small
        # next to the layer outputs.
        return 0.0, (0.05 if tied else 1.0)
    if name.endswith(("q_norm.weight", "k_norm.weight")):
        return 1.5, 0.2  # per-head QK norms: gain > 1 so scores are not near-uniform
    if name == "model.norm.weight" and tied:
        # Tied logits are norm(h) . E with small E; a larger final gain restores O(4) logits.
        return 10.0, 2.0
    if "norm" in name:
        return 1.0, 0.2  # RMSNorm gains around 1 but not all-ones (catches a missing multiply)
    if name.endswith(".bias"):
        return 0.0, 0.2
    if name.endswith("lm_head.weight"):
        return 0.0, 0.5  # logits std ~4: clear argmax margins for greedy goldens
    if any(k in name for k in ("q_proj", "k_proj")):
        return 0.0, 1.5 / np.sqrt(shape[1])  # q,k entries ~1.5 => score std ~2
    if tied and any(k in name for k in ("o_proj", "down_proj")):
        return 0.0, 2.0 / np.sqrt(shape[1])  # residual dominated by layer outputs (see above)
    # v/o/gate/up/down projections: unit-ish gain keeps the residual stream moving.
    return 0.0, 1.0 / np.sqrt(shape[1])


def build(name, spec, seed_base):
    cfg_cls, model_cls, kwargs, dtype, shards = spec
    cfg = cfg_cls(**COMMON, **kwargs)
    torch.manual_seed(0)  # from_config init is overwritten below, but keep it deterministic
    model = model_cls(cfg).to(torch.float32).eval()
    rng = np.random.default_rng(seed_base + zlib.crc32(name.encode()))
    with torch.no_grad():
        seen = set()
        for pname, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if id(p) in seen:
                continue  # tied lm_head shares the embedding tensor
            seen.add(id(p))
            mean, std = init_std(pname, tuple(p.shape), cfg.tie_word_embeddings)
            vals = rng.standard_normal(size=tuple(p.shape), dtype=np.float32) * np.float32(std)
            vals += np.float32(mean)
            p.copy_(torch.from_numpy(vals))
    # Round to the stored dtype; these rounded values are the fixture's truth.
    model = model.to(dtype)
    return model, cfg, dtype, shards


def save(name, model, dtype, shards):
    out = os.path.join(OUT_ROOT, name)
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    total = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    if shards == 1:
        model.save_pretrained(out, safe_serialization=True, max_shard_size="1GB")
    else:
        # A bit over half the bytes forces exactly two shards for these layer sizes.
        model.save_pretrained(out, safe_serialization=True,
                              max_shard_size=int(total * 0.55))
    files = sorted(os.listdir(out))
    st = [f for f in files if f.endswith(".safetensors")]
    if len(st) != shards:
        sys.exit(f"{name}: expected {shards} safetensors file(s), got {st}")
    if shards > 1 and "model.safetensors.index.json" not in files:
        sys.exit(f"{name}: missing model.safetensors.index.json")
    return out, files


def write_checksums():
    """SHA256SUMS over every fixture file, so goldens made by other scripts from these
    weights can tell whether they are stale (`sha256sum -c` from tests/data/models)."""
    import hashlib
    lines = []
    for name in sorted(os.listdir(OUT_ROOT)):
        d = os.path.join(OUT_ROOT, name)
        if not os.path.isdir(d):
            continue
        for f in sorted(os.listdir(d)):
            with open(os.path.join(d, f), "rb") as fh:
                lines.append(f"{hashlib.sha256(fh.read()).hexdigest()}  {name}/{f}\n")
    with open(os.path.join(OUT_ROOT, "SHA256SUMS"), "w") as fh:
        fh.writelines(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="*", help="subset of model names")
    ap.add_argument("--seed", type=int, default=20250211)
    args = ap.parse_args()
    names = args.only or list(SPECS)
    os.makedirs(OUT_ROOT, exist_ok=True)
    for name in names:
        spec = SPECS[name]
        model, cfg, dtype, shards = build(name, spec, args.seed)
        out, files = save(name, model, dtype, shards)
        ref = spec[1].from_pretrained(out, torch_dtype=torch.float32)
        sd_mem = model.state_dict()
        for k, v in ref.state_dict().items():
            if not torch.equal(v, sd_mem[k].to(torch.float32)):
                sys.exit(f"{name}: reload mismatch for {k}")
        sizes = {f: os.path.getsize(os.path.join(out, f)) for f in files}
        print(f"{name}: dtype={dtype} files={sizes} total={sum(sizes.values())} "
              f"params={sum(p.numel() for p in model.parameters())}")
    for f in os.listdir(OUT_ROOT):
        for g in [f] + ([os.path.join(f, x) for x in os.listdir(os.path.join(OUT_ROOT, f))]
                        if os.path.isdir(os.path.join(OUT_ROOT, f)) else []):
            os.chmod(os.path.join(OUT_ROOT, g), 0o755 if os.path.isdir(os.path.join(OUT_ROOT, g))
                     else 0o644)  # safetensors writes 0600
    write_checksums()
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
