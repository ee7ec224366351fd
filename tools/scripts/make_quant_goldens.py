#!/usr/bin/env python3
"""Goldens for src/quant dequantisation, from the `gguf` package's NumPy dequantisers (the oracle).

For every supported type: random block bytes (f16 scale fields replaced by finite, sane values so
no NaN/inf scale makes the comparison meaningless), dequantised with gguf.quants.dequantize.
Writes tests/data/goldens/quant_dequant.json: per case the raw bytes (hex) and the expected f32
outputs as little-endian bytes (hex). tests/unit/test_quant.cc requires bit-exact equality.

    pip install gguf numpy
    python3 tools/scripts/make_quant_goldens.py
"""
import importlib.metadata
import json
import os
import sys

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as T
    from gguf.quants import dequantize
except ImportError:
    sys.exit("make_quant_goldens.py needs the gguf package: pip install gguf numpy")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "data", "goldens", "quant_dequant.json")

# type -> (n_blocks, byte offsets of its f16 scale fields within a block)
CASES = {
    T.F32: (64, []),
    T.F16: (64, []),
    T.BF16: (64, []),
    T.Q4_0: (4, [0]),
    T.Q4_1: (4, [0, 2]),
    T.Q5_0: (4, [0]),
    T.Q5_1: (4, [0, 2]),
    T.Q8_0: (4, [0]),
    T.Q2_K: (3, [80, 82]),
    T.Q3_K: (3, [108]),
    T.Q4_K: (3, [0, 2]),
    T.Q5_K: (3, [0, 2]),
    T.Q6_K: (3, [208]),
}


def sane_f16(rng, n):
    """Finite f16 scales over a wide range of magnitudes and both signs, some subnormal or zero."""
    mags = 10.0 ** rng.uniform(-6, 2, size=n)
    vals = (mags * rng.choice([-1.0, 1.0], size=n)).astype(np.float16)
    vals[rng.random(n) < 0.05] = 0
    assert np.all(np.isfinite(vals))
    return vals.view(np.uint8).reshape(n, 2)


def make_case(rng, qtype, n_blocks, scale_offsets):
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    if qtype == T.F16:
        # Any finite half (NaN payload handling differs between numpy's code paths); keep a few
        # infinities and subnormals in.
        h = raw.view(np.uint16).reshape(-1)
        nan = (h & 0x7C00) == 0x7C00
        h[nan] &= 0xFC00  # NaN -> inf of the same sign
    for off in scale_offsets:
        raw[:, off:off + 2] = sane_f16(rng, n_blocks)
    out = dequantize(raw.reshape(-1), qtype).astype(np.float32, copy=False).reshape(-1)
    assert out.size == n_blocks * block_elems
    return {
        "type": qtype.name.lower(),
        "type_id": int(qtype),
        "n": int(out.size),
        "bytes_hex": raw.tobytes().hex(),
        "expected_f32_le_hex": out.astype("<f4").tobytes().hex(),
    }


def main():
    rng = np.random.default_rng(20250201)
    cases = [make_case(rng, t, nb, offs) for t, (nb, offs) in CASES.items()]
    doc = {
        "generator": "tools/scripts/make_quant_goldens.py",
        "oracle": f"gguf {importlib.metadata.version('gguf')} gguf.quants.dequantize, "
                  f"numpy {np.__version__}",
        "comparison": "bit-exact (f32 bit patterns)",
        "cases": cases,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}: {len(cases)} cases, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
