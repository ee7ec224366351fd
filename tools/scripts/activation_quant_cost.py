#!/usr/bin/env python3
"""What quantising activations costs on a real model: teacher-forced next-token distributions of
the default path (weights in their GGUF types; activations quantised to q8_K / q8_0 for the integer
dots, as llama.cpp's CPU backend does) against the f32 path (every weight dequantised to f32,
activations kept in f32: FKV_REPACK=0 FKV_QDOT=0 FKV_BF16_DOT=0), over a few prompts. Prints, per
prompt and overall, the top-1 agreement and the mean / max KL(f32 || quantised).

usage: python3 tools/scripts/activation_quant_cost.py [--model qwen2.5-coder-1.5b-instruct]
           [--tokens 256] [--threads 2] [--out results.json]
Each configuration runs in its own process (the kernels read the environment once).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

PROMPTS = {
    "code": "def quicksort(xs):\n    if len(xs) <= 1:\n        return xs\n    pivot = xs[0]\n"
            "    left = [x for x in xs[1:] if x < pivot]\n    right = [x for x in xs[1:] if x >= pivot]\n"
            "    return quicksort(left) + [pivot] + quicksort(right)\n\n\nclass LRUCache:\n"
            "    def __init__(self, capacity):\n        self.capacity = capacity\n",
    "prose": "The history of the printing press begins in the fifteenth century, when Johannes "
             "Gutenberg combined movable metal type, oil-based ink and a screw press adapted from "
             "wine making. Within fifty years presses had spread to more than two hundred cities.",
    "chat": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nExplain "
            "what a hash map is and when a tree map is the better choice.<|im_end|>\n"
            "<|im_start|>assistant\n",
    "essay": None,  # the start of a Paul Graham essay from ../shared/data
}

CHILD = r"""
import sys, numpy as np, fastkv
model, threads, ids_path, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
m = fastkv.Model(model, threads=threads)
ids = np.load(ids_path)
np.save(out_path, m.logits(ids).astype(np.float32))
"""


def essay_text():
    here = os.path.dirname(os.path.abspath(__file__))
    folder = os.path.join(here, "..", "..", "..", "shared", "data")
    for root, _, files in os.walk(folder):
        for f in sorted(files):
            if f.endswith(".txt"):
                with open(os.path.join(root, f), encoding="utf-8", errors="replace") as fh:
                    return fh.read()[:6000]
    return PROMPTS["prose"] * 8


def log_softmax(x):
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--tokens", type=int, default=256, help="tokens per prompt (cut or repeated)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    import fastkv
    tok = fastkv.Model(args.model, threads=args.threads).tokenizer
    results = {"model": args.model, "tokens": args.tokens, "prompts": {}}
    all_top1, all_kl = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in PROMPTS.items():
            text = essay_text() if text is None else text
            ids = tok.encode(text)
            while len(ids) < args.tokens:
                ids = ids + ids
            ids = np.asarray(ids[:args.tokens], dtype=np.int32)
            ids_path = os.path.join(tmp, name + ".ids.npy")
            np.save(ids_path, ids)
            logits = {}
            for label, env_extra in (("f32", {"FKV_REPACK": "0", "FKV_QDOT": "0",
                                              "FKV_BF16_DOT": "0"}), ("quantised", {})):
                out = os.path.join(tmp, f"{name}.{label}.npy")
                env = dict(os.environ, **env_extra)
                subprocess.run([sys.executable, "-c", CHILD, args.model, str(args.threads),
                                ids_path, out], check=True, env=env)
                logits[label] = np.load(out)
            p = log_softmax(logits["f32"])
            q = log_softmax(logits["quantised"])
            kl = (np.exp(p) * (p - q)).sum(axis=-1)
            top1 = (p.argmax(-1) == q.argmax(-1)).mean()
            all_top1.append(top1)
            all_kl.append(kl)
            results["prompts"][name] = {"top1": float(top1), "kl_mean": float(kl.mean()),
                                        "kl_max": float(kl.max())}
            print(f"{name:6s} top-1 {top1 * 100:6.2f} %  KL mean {kl.mean():.2e}  max {kl.max():.2e}",
                  flush=True)
    kl = np.concatenate(all_kl)
    results["overall"] = {"top1": float(np.mean(all_top1)), "kl_mean": float(kl.mean()),
                          "kl_max": float(kl.max())}
    print(f"overall top-1 {np.mean(all_top1) * 100:6.2f} %  KL mean {kl.mean():.2e}  "
          f"max {kl.max():.2e}")
    if args.out:
        tmp_out = args.out + ".tmp"
        with open(tmp_out, "w") as f:
            json.dump(results, f, indent=2)
        os.replace(tmp_out, args.out)


if __name__ == "__main__":
    main()
