#!/usr/bin/env python3
"""Write a GGUF file of a real model shape with random weights, for speed comparisons.

`fastkv bench --synthetic SHAPE` makes these shapes in memory; this script writes the same shapes
(layers, widths, heads, vocabulary, dtype) to a GGUF file so llama.cpp and fastkv can load
identical weights from one file (tools/scripts/compare_llamacpp.sh, tools/run_perf.sh).

    pip install gguf numpy
    python3 tools/scripts/write_synthetic_gguf.py llama-3.2-1b bf16 /work/models/llama-3.2-1b.bf16.gguf

Shapes: llama-3.2-1b, llama-3.1-8b, qwen2.5-0.5b (values of their published config.json, as in
src/model/synthetic.cc). Dtypes: f32, f16, bf16, q4_0, q8_0 (every matrix, embeddings included),
and q4_k_m: llama.cpp's Q4_K_M mix (q6_K for the output matrix, the embedding when tied, and for
attn_v / ffn_down in the layers llama.cpp's use_more_bits picks; q4_K elsewhere; widths must be
multiples of 256).
Weights are uniform with std 0.02 (quantized: random quants under one fixed scale, as the
in-memory synthetic model does), norms 1, biases 0; the same seed gives the same file. The
tokenizer is a placeholder SentencePiece vocabulary of the right size (<unk>, <s>, </s>, the 256
byte tokens, then "t<N>"), enough for engines that draw random token ids. RoPE scaling (llama3)
is not written: speed does not depend on the rotation frequencies.
The file is written to a temporary beside the target and renamed when complete. Tensors are
generated one at a time, so memory stays at about the largest tensor (8B bf16: 1 GiB).
"""
import argparse
import os
import sys

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as T
except ImportError:
    sys.exit("write_synthetic_gguf.py needs the gguf package: pip install gguf numpy")

SHAPES = {
    "llama-3.2-1b": dict(arch="llama", n_layers=16, d_model=2048, n_heads=32, n_kv_heads=8,
                         head_dim=64, d_ff=8192, n_vocab=128256, n_ctx=131072, rms_eps=1e-5,
                         rope_theta=500000.0, tie=True, bias=False),
    "llama-3.1-8b": dict(arch="llama", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8,
                         head_dim=128, d_ff=14336, n_vocab=128256, n_ctx=131072, rms_eps=1e-5,
                         rope_theta=500000.0, tie=False, bias=False),
    "qwen2.5-0.5b": dict(arch="qwen2", n_layers=24, d_model=896, n_heads=14, n_kv_heads=2,
                         head_dim=64, d_ff=4864, n_vocab=151936, n_ctx=32768, rms_eps=1e-6,
                         rope_theta=1000000.0, tie=True, bias=True),
}
DTYPES = {"f32": T.F32, "f16": T.F16, "bf16": T.BF16, "q4_0": T.Q4_0, "q8_0": T.Q8_0,
          "q4_k_m": T.Q4_K}
FILE_TYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "bf16": 32, "q4_k_m": 15}  # llama_ftype
# Bytes per row block and elements per block of the quantised types.
BLOCK = {"q4_0": (18, 32), "q8_0": (34, 32), "q4_K": (144, 256), "q6_K": (210, 256)}
WEIGHT_STD = 0.02


def use_more_bits(i, n):
    """llama.cpp's Q4_K_M choice of q6_K layers for attn_v / ffn_down."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensor_type(dtype, name, n_layers, tie):
    """The stored type of a matrix: dtype, or for q4_k_m q4_K / q6_K by role."""
    if dtype != "q4_k_m":
        return dtype
    if name == "output.weight" or (tie and name == "token_embd.weight"):
        return "q6_K"
    if name.endswith("attn_v.weight") or name.endswith("ffn_down.weight"):
        return "q6_K" if use_more_bits(int(name.split(".")[1]), n_layers) else "q4_K"
    return "q4_K"


def random_kquant(rng, rows, cols, t):
    """k-quant blocks of [rows, cols], as src/model/synthetic.cc makes them (std ~0.02)."""
    nb = cols // 256
    if t == "q4_K":
        blocks = np.zeros((rows, nb, 144), dtype=np.uint8)
        d = np.float16(WEIGHT_STD * np.sqrt(3.0) / (7.5 * 6.0))
        blocks[:, :, 0:2] = np.frombuffer(d.tobytes(), dtype=np.uint8)
        blocks[:, :, 2:4] = np.frombuffer(d.tobytes(), dtype=np.uint8)
        sc = rng.integers(4, 8, size=(rows, nb, 8)).astype(np.uint8)
        mn = np.round(7.5 * sc.astype(np.float64)).astype(np.uint8)
        s12 = np.zeros((rows, nb, 12), dtype=np.uint8)
        s12[:, :, 0:4] = sc[:, :, 0:4] | ((sc[:, :, 4:8] >> 4) << 6)
        s12[:, :, 4:8] = mn[:, :, 0:4] | ((mn[:, :, 4:8] >> 4) << 6)
        s12[:, :, 8:12] = (sc[:, :, 4:8] & 15) | ((mn[:, :, 4:8] & 15) << 4)
        blocks[:, :, 4:16] = s12
        blocks[:, :, 16:] = rng.integers(0, 256, size=(rows, nb, 128), dtype=np.uint8)
    else:
        blocks = np.zeros((rows, nb, 210), dtype=np.uint8)
        blocks[:, :, 0:192] = rng.integers(0, 256, size=(rows, nb, 192), dtype=np.uint8)
        blocks[:, :, 192:208] = 12
        d = np.float16(WEIGHT_STD * np.sqrt(3.0) / (32.0 * 12.0))
        blocks[:, :, 208:210] = np.frombuffer(d.tobytes(), dtype=np.uint8)
    return blocks.reshape(rows, -1)


def random_matrix(rng, rows, cols, dtype):
    """(numpy array as stored, numpy shape/dtype to declare) for a [rows, cols] weight."""
    if dtype in ("q4_K", "q6_K"):
        return random_kquant(rng, rows, cols, dtype)
    if dtype in ("f32", "f16", "bf16"):
        half = WEIGHT_STD * np.sqrt(3.0)
        x = rng.uniform(-half, half, size=(rows, cols)).astype(np.float32)
        if dtype == "f32":
            return x
        if dtype == "f16":
            return x.astype(np.float16)
        u = x.view(np.uint32)
        rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # round to nearest even
        return rounded.astype(np.uint16)
    # Blocks of 32: f16 scale + quants (16 bytes of nibbles for q4_0, 32 int8 for q8_0).
    qbytes = 16 if dtype == "q4_0" else 32
    scale = np.float16(WEIGHT_STD / (4.6 if dtype == "q4_0" else 73.9))
    n_blocks = cols // 32
    blocks = np.empty((rows, n_blocks, 2 + qbytes), dtype=np.uint8)
    blocks[:, :, 0:2] = np.frombuffer(scale.tobytes(), dtype=np.uint8)
    blocks[:, :, 2:] = rng.integers(0, 256, size=(rows, n_blocks, qbytes), dtype=np.uint8)
    return blocks.reshape(rows, n_blocks * (2 + qbytes))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("dtype", choices=sorted(DTYPES))
    ap.add_argument("out", help="output .gguf path")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.out.endswith(".gguf"):
        sys.exit(f"output '{args.out}' must end in .gguf")
    s = SHAPES[args.shape]
    if args.dtype == "q4_k_m":
        for width in (s["d_model"], s["d_ff"], s["n_heads"] * s["head_dim"]):
            if width % 256:
                sys.exit(f"{args.shape}: q4_k_m needs widths divisible by 256, got {width}")
    q_dim = s["n_heads"] * s["head_dim"]
    kv_dim = s["n_kv_heads"] * s["head_dim"]
    # name -> (rows, cols); 1-D tensors have rows None
    tensors = [("token_embd.weight", s["n_vocab"], s["d_model"]),
               ("output_norm.weight", None, s["d_model"])]
    if not s["tie"]:
        tensors.append(("output.weight", s["n_vocab"], s["d_model"]))
    for il in range(s["n_layers"]):
        p = f"blk.{il}."
        tensors += [(p + "attn_norm.weight", None, s["d_model"]),
                    (p + "ffn_norm.weight", None, s["d_model"]),
                    (p + "attn_q.weight", q_dim, s["d_model"]),
                    (p + "attn_k.weight", kv_dim, s["d_model"]),
                    (p + "attn_v.weight", kv_dim, s["d_model"]),
                    (p + "attn_output.weight", s["d_model"], q_dim),
                    (p + "ffn_gate.weight", s["d_ff"], s["d_model"]),
                    (p + "ffn_up.weight", s["d_ff"], s["d_model"]),
                    (p + "ffn_down.weight", s["d_model"], s["d_ff"])]
        if s["bias"]:
            tensors += [(p + "attn_q.bias", None, q_dim), (p + "attn_k.bias", None, kv_dim),
                        (p + "attn_v.bias", None, kv_dim)]

    tmp = args.out + ".tmp"
    w = gguf.GGUFWriter(tmp, s["arch"])
    w.add_name(f"synthetic {args.shape} {args.dtype}")
    w.add_file_type(FILE_TYPE[args.dtype])
    w.add_context_length(s["n_ctx"])
    w.add_embedding_length(s["d_model"])
    w.add_block_count(s["n_layers"])
    w.add_feed_forward_length(s["d_ff"])
    w.add_head_count(s["n_heads"])
    w.add_head_count_kv(s["n_kv_heads"])
    w.add_rope_dimension_count(s["head_dim"])
    w.add_rope_freq_base(s["rope_theta"])
    w.add_layer_norm_rms_eps(s["rms_eps"])
    w.add_vocab_size(s["n_vocab"])
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"t{i}" for i in range(len(tokens), s["n_vocab"])]
    types = [2, 3, 3] + [6] * 256 + [1] * (s["n_vocab"] - 259)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * s["n_vocab"])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    rng = np.random.default_rng(args.seed)
    for name, rows, cols in tensors:  # declare every tensor first, then stream the data
        t = tensor_type(args.dtype, name, s["n_layers"], s["tie"])
        if rows is None:
            w.add_tensor_info(name, [cols], np.dtype(np.float32), cols * 4)
        elif t in BLOCK:
            block_bytes, block_elems = BLOCK[t]
            row_bytes = cols // block_elems * block_bytes
            raw = {"q4_0": T.Q4_0, "q8_0": T.Q8_0, "q4_K": T.Q4_K, "q6_K": T.Q6_K}[t]
            w.add_tensor_info(name, [rows, row_bytes], np.dtype(np.uint8), rows * row_bytes,
                              raw_dtype=raw)
        else:
            item = {"f32": 4, "f16": 2, "bf16": 2}[args.dtype]
            np_dtype = {"f32": np.float32, "f16": np.float16, "bf16": np.uint16}[args.dtype]
            w.add_tensor_info(name, [rows, cols], np.dtype(np_dtype), rows * cols * item,
                              raw_dtype=None if args.dtype != "bf16" else T.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, rows, cols in tensors:
        if rows is None:
            data = np.zeros(cols, np.float32) if name.endswith(".bias") else np.ones(cols, np.float32)
        else:
            data = random_matrix(rng, rows, cols,
                                 tensor_type(args.dtype, name, s["n_layers"], s["tie"]))
        w.write_tensor_data(data)
    w.close()
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
