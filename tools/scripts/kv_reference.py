#!/usr/bin/env python3
"""Independent NumPy restatement of the KV-compression methods (shared/spec/FASTKV.md).

Written from the spec, not from the C++ in src/kv/: a float64 Llama forward pass over an
HF-layout safetensors checkpoint (RMSNorm, RoPE rotate_half at explicit positions, GQA attention
with a causal mask by position, SwiGLU MLP, tied or separate lm_head) that calls each method's
prefill selection after every layer's attention, with Token-Selective Propagation (later layers
see only the selected rows at their ORIGINAL positions) and GemFilter's two passes.

The returned record follows the engine's --dump-selection schema:
  {"method", "n_prompt", "layers": [{"layer", "n_in", "kept": [[prompt positions] per KV head]}],
   "tsp": {"layer", "positions"} | null}
plus "logits" (last prompt position) and "margins" (the smallest relative score gap at any top-k
boundary that is not an exact tie: a small one means the golden is fragile under fp32 rounding).

Tie rule everywhere: higher score first, equal scores -> lower position first.
Usage as a library: see make_kv_goldens.py. CLI: kv_reference.py MODEL_DIR METHOD [k=v,...] IDS...
prints the record as JSON; kv_reference.py --selfcheck MODEL_DIR checks this file against
PyTorch/transformers (run it with the oracle venv, /work/venv-oracle/bin/python).
"""

import json
import math
import os
import struct
import sys

import numpy as np

# ----------------------------------------------------------------------------- checkpoint

_DT = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def read_safetensors(path):
    """Minimal safetensors reader: 8-byte LE header length, JSON header, raw little-endian data."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            b, e = info["data_offsets"]
            f.seek(base + b)
            raw = f.read(e - b)
            if info["dtype"] == "BF16":
                u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
                arr = u.view(np.float32)
            else:
                arr = np.frombuffer(raw, dtype=np.dtype(_DT[info["dtype"]]).newbyteorder("<"))
            out[name] = arr.reshape(info["shape"]).astype(np.float64)
    return out


class LlamaRef:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            c = json.load(f)
        self.cfg = c
        self.L = c["num_hidden_layers"]
        self.H = c["num_attention_heads"]
        self.Hkv = c.get("num_key_value_heads", self.H)
        self.D = c["hidden_size"]
        self.d = c.get("head_dim") or self.D // self.H
        self.eps = c["rms_norm_eps"]
        self.theta = c.get("rope_theta", 10000.0)
        assert not c.get("rope_scaling"), "reference supports plain RoPE only"
        self.w = {}
        files = [x for x in sorted(os.listdir(model_dir)) if x.endswith(".safetensors")]
        for fn in files:
            self.w.update(read_safetensors(os.path.join(model_dir, fn)))
        self.embed = self.w["model.embed_tokens.weight"]
        self.lm_head = self.w.get("lm_head.weight", self.embed)
        self.name = c.get("_name_or_path", "")

    def rmsnorm(self, x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * g

    def rope(self, x, pos):
        """x [n, heads, d]; HF rotate_half convention; pos are explicit (original) positions."""
        d = x.shape[-1]
        inv = 1.0 / (self.theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
        ang = pos.astype(np.float64)[:, None] * inv[None, :]
        cos = np.concatenate([np.cos(ang), np.cos(ang)], axis=-1)[:, None, :]
        sin = np.concatenate([np.sin(ang), np.sin(ang)], axis=-1)[:, None, :]
        half = d // 2
        rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos + rot * sin

    def layer_qkv(self, il, x, pos):
        p = f"model.layers.{il}."
        h = self.rmsnorm(x, self.w[p + "input_layernorm.weight"])
        n = x.shape[0]
        q = (h @ self.w[p + "self_attn.q_proj.weight"].T).reshape(n, self.H, self.d)
        k = (h @ self.w[p + "self_attn.k_proj.weight"].T).reshape(n, self.Hkv, self.d)
        v = (h @ self.w[p + "self_attn.v_proj.weight"].T).reshape(n, self.Hkv, self.d)
        return self.rope(q, pos), self.rope(k, pos), v

    def layer_rest(self, il, x, q, k, v, pos):
        """Full causal attention over the n rows (mask by position), o_proj, MLP."""
        p = f"model.layers.{il}."
        G = self.H // self.Hkv
        kk = np.repeat(k, G, axis=1)  # HF repeat_kv: query head h reads KV head h // G
        vv = np.repeat(v, G, axis=1)
        logits = np.einsum("ihd,jhd->hij", q, kk) / math.sqrt(self.d)
        mask = pos[None, :] > pos[:, None]
        logits = np.where(mask[None], -np.inf, logits)
        a = softmax(logits)
        o = np.einsum("hij,jhd->ihd", a, vv).reshape(x.shape[0], self.H * self.d)
        x = x + o @ self.w[p + "self_attn.o_proj.weight"].T
        h = self.rmsnorm(x, self.w[p + "post_attention_layernorm.weight"])
        gate = h @ self.w[p + "mlp.gate_proj.weight"].T
        up = h @ self.w[p + "mlp.up_proj.weight"].T
        act = gate / (1.0 + np.exp(-gate)) * up
        return x + act @ self.w[p + "mlp.down_proj.weight"].T

    def final_logits(self, x_last):
        return self.rmsnorm(x_last, self.w["model.norm.weight"]) @ self.lm_head.T


def softmax(x):
    m = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- selection math


class Margins:
    """Collects the smallest relative gap across top-k boundaries (exact ties excluded)."""

    def __init__(self):
        self.min_gap = float("inf")

    def note(self, scores, k):
        s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
        if k <= 0 or k >= len(s):
            return
        a, b = s[k - 1], s[k]
        if a == b or not np.isfinite(a):
            # exact tie at the boundary: decided by the tie rule; look for the nearest distinct value
            below = s[k:][s[k:] < a]
            above = s[:k][s[:k] > a]
            for other in ([below[0]] if len(below) else []) + ([above[-1]] if len(above) else []):
                self._gap(a, other)
            return
        self._gap(a, b)

    def _gap(self, a, b):
        if not (np.isfinite(a) and np.isfinite(b)):
            return
        den = max(abs(a), abs(b), 1e-30)
        self.min_gap = min(self.min_gap, abs(a - b) / den)


def topk_rule(scores, k, margins=None):
    """Top-k indices, ties -> lower index, returned ascending."""
    scores = np.asarray(scores, dtype=np.float64)
    m = len(scores)
    k = max(0, min(k, m))
    if margins is not None:
        margins.note(scores, k)
    order = np.lexsort((np.arange(m), -scores))  # primary: score desc; secondary: index asc
    return sorted(int(i) for i in order[:k])


def pool(s, K, kind):
    """Same-length 1-D pooling along the last axis, stride 1, padding K//2."""
    m = s.shape[-1]
    pad = K // 2
    out = np.empty_like(s)
    for j in range(m):
        lo, hi = max(0, j - pad), min(m, j + pad + 1)
        if kind == "max":
            out[..., j] = s[..., lo:hi].max(axis=-1)  # -inf padding never wins
        else:
            out[..., j] = s[..., lo:hi].sum(axis=-1) / K  # count_include_pad: always / K
    return out


def window_score_q(q, k, W, K, kind):
    """Spec §2 steps 1-5 per query head: [H, n-W]."""
    n, H, d = q.shape
    G = H // k.shape[1]
    kk = np.repeat(k, G, axis=1)
    qw = q[n - W:]
    logits = np.einsum("ihd,jhd->hij", qw, kk) / math.sqrt(d)  # [H, W, n]
    rows = np.arange(n - W, n)[:, None]
    cols = np.arange(n)[None, :]
    logits = np.where((cols > rows)[None], -np.inf, logits)
    a = softmax(logits)
    s = a.sum(axis=1)[:, : n - W]
    return pool(s, K, kind)


def group_sum(s_q, Hkv):
    H, m = s_q.shape
    return s_q.reshape(Hkv, H // Hkv, m).sum(axis=1)


def window_score_kv(q, k, W, K, kind):
    return group_sum(window_score_q(q, k, W, K, kind), k.shape[1])


def topk_plus_window(s_kv, n, W, ks, margins):
    kept = []
    for g in range(s_kv.shape[0]):
        rows = topk_rule(s_kv[g], ks[g], margins) + list(range(n - W, n))
        kept.append(rows)
    return kept


def budget(opts, n, default_rate=0.1):
    if "kv_budget" in opts:
        return int(opts["kv_budget"])
    return math.floor(n * opts.get("retain_rate", default_rate))


def round_half_up(x):
    return int(math.floor(x + 0.5))


def default_layer(name, L, known, frac, hi):
    for key, val in zip(("Llama-3.1-8B", "Ministral-8B", "Mistral-Nemo"), known):
        if key in name and val < L:
            return val
    return min(max(round_half_up(frac * L), 0), max(0, hi))


# ----------------------------------------------------------------------------- methods
# Each method object: select_kv(il, q, k, N) -> list per KV head of kept ROW indices, or None (all);
# select_rows(il, q, k, N) -> ascending rows to propagate, or None (all).


class FullKV:
    def __init__(self, m, o):
        pass

    def select_kv(self, il, q, k, N):
        return None

    def select_rows(self, il, q, k, N):
        return None


class WindowOpts:
    def __init__(self, o):
        self.W = o.get("window", 8)
        self.K = o.get("kernel", 7)
        self.kind = {"max": "max", "maxpool": "max", "avg": "avg", "avgpool": "avg"}[
            o.get("pooling", "max")]


class SnapKV:
    def __init__(self, m, o):
        self.w, self.o, self.Hkv = WindowOpts(o), o, m.Hkv
        self.per_q = o.get("per_query_head", False)
        self.margins = Margins()

    def select_kv(self, il, q, k, N):
        n, W = q.shape[0], self.w.W
        C = budget(self.o, N)
        if C - W <= 0 or C >= n:
            return None
        if not self.per_q:
            s = window_score_kv(q, k, W, self.w.K, self.w.kind)
            return topk_plus_window(s, n, W, [C - W] * self.Hkv, self.margins)
        s_q = window_score_q(q, k, W, self.w.K, self.w.kind)
        G = q.shape[1] // self.Hkv
        kept = []
        for g in range(self.Hkv):
            union = set()
            for h in range(g * G, (g + 1) * G):
                union.update(topk_rule(s_q[h], C - W, self.margins))
            kept.append(sorted(union) + list(range(n - W, n)))
        return kept

    def select_rows(self, il, q, k, N):
        return None


class PyramidKV(SnapKV):
    def __init__(self, m, o):
        super().__init__(m, o)
        self.L = m.L

    def select_kv(self, il, q, k, N):
        n, W = q.shape[0], self.w.W
        C = budget(self.o, N)
        if C - W <= 0 or C >= n:
            return None
        beta = 20
        lo = (C - W) // beta
        hi = 2 * (C - W) - lo
        C_l = C if self.L == 1 else W + hi - (il * (hi - lo)) // (self.L - 1)
        if C_l >= n:
            return None
        s = window_score_kv(q, k, W, self.w.K, self.w.kind)
        return topk_plus_window(s, n, W, [C_l - W] * self.Hkv, self.margins)


class AdaKV(SnapKV):
    def select_kv(self, il, q, k, N):
        n, W = q.shape[0], self.w.W
        C = budget(self.o, N)
        if C - W <= 0 or C >= n:
            return None
        s = window_score_kv(q, k, W, self.w.K, self.w.kind)
        Hkv, m = s.shape
        per = C - W
        B = Hkv * per
        flat = topk_rule(s.reshape(-1), B, self.margins)  # ties -> lower head, then position
        raw = [0] * Hkv
        for f in flat:
            raw[f // m] += 1
        alpha = 0.2
        x = [raw[g] * (1 - alpha) + alpha * per for g in range(Hkv)]
        caps = [math.floor(v) for v in x]
        # largest remainder so that the caps sum to B (ties -> lower head)
        order = sorted(range(Hkv), key=lambda g: (-(x[g] - caps[g]), g))
        t = 0
        while sum(caps) < B and t < Hkv:
            if caps[order[t]] < m:
                caps[order[t]] += 1
            t += 1
        return topk_plus_window(s, n, W, caps, self.margins)


class StreamingLLM(FullKV):
    def __init__(self, m, o):
        self.o, self.Hkv = o, m.Hkv
        self.margins = Margins()

    def select_kv(self, il, q, k, N):
        n = q.shape[0]
        C = budget(self.o, N)
        if C - 4 <= 0 or C >= n:
            return None
        rows = list(range(4)) + list(range(n - (C - 4), n))
        return [rows[:] for _ in range(self.Hkv)]


class H2O(FullKV):
    def __init__(self, m, o):
        self.o, self.Hkv = o, m.Hkv
        self.W = o.get("window", 8)
        self.margins = Margins()

    def select_kv(self, il, q, k, N):
        n, W = q.shape[0], self.W
        C = budget(self.o, N)
        if C - W <= 0 or C >= n:
            return None
        H, d = q.shape[1], q.shape[2]
        G = H // self.Hkv
        col = np.zeros((H, n))
        # Row by row with the proper causal mask; the reference implementation may use n x n,
        # this one never needs to (rows are independent).
        for i in range(n):
            kk = np.repeat(k[: i + 1], G, axis=1)  # [i+1, H, d]
            lg = np.einsum("hd,jhd->hj", q[i], kk) / math.sqrt(d)
            col[:, : i + 1] += softmax(lg)
        s = group_sum(col[:, : n - W], self.Hkv)
        return topk_plus_window(s, n, W, [C - W] * self.Hkv, self.margins)


class FastKV(FullKV):
    def __init__(self, m, o):
        self.o, self.Hkv = o, m.Hkv
        self.w = WindowOpts(o)
        self.margins = Margins()
        self.tsp_layer = o.get("tsp_layer", default_layer(m.name, m.L, (15, 17, 19), 15 / 32,
                                                          m.L - 2))
        mode = o.get("mode", "proportional")
        self.kv_count = o.get("kv_budget", 512 if mode == "constant" else None)
        self.r = o.get("retain_rate", 0.1)
        self.T_count = o.get("tsp_len", 2048 if mode == "constant" else None)
        self.t = o.get("tsp_rate", 0.2)

    def begin(self, N):
        self.N = N
        self.T = self.T_count if self.T_count is not None else math.floor(N * self.t)
        self.tsp_on = self.T - self.w.W > 0 and self.T < N

    def capacity(self, il, n):
        if self.kv_count is not None:
            return self.kv_count
        r = self.r
        if il > self.tsp_layer and self.tsp_on:
            t = self.T / self.N if self.T_count is not None else self.t
            r = r / t
        return math.floor(n * r)

    def select_kv(self, il, q, k, N):
        n, W = q.shape[0], self.w.W
        C = self.capacity(il, n)
        if C - W <= 0 or C >= n:
            return None
        s = window_score_kv(q, k, W, self.w.K, self.w.kind)
        return topk_plus_window(s, n, W, [C - W] * self.Hkv, self.margins)

    def select_rows(self, il, q, k, N):
        if il != self.tsp_layer or not self.tsp_on:
            return None
        n, W = q.shape[0], self.w.W
        s = window_score_kv(q, k, W, self.w.K, self.w.kind).sum(axis=0)
        return topk_rule(s, self.T - W, self.margins) + list(range(n - W, n))


class PyramidInfer(FullKV):
    def __init__(self, m, o):
        self.Hkv, self.L = m.Hkv, m.L
        self.d = o.get("retain_rate", 0.2)
        self.W = o.get("window", 8)
        self.margins = Margins()

    def rows(self, il, q, k):
        n, H, d = q.shape
        R = min(self.W, n)
        ctx = n - R
        if ctx <= 64:
            return None
        ratio = (1 - self.d) * (math.cos(math.pi * il / self.L) + 1) / 2 + self.d
        keep = math.floor(ctx * ratio)
        if keep >= ctx:
            return None
        G = H // self.Hkv
        kk = np.repeat(k, G, axis=1)
        lg = np.einsum("ihd,jhd->hij", q[ctx:], kk) / math.sqrt(d)  # [H, R, n]
        lg = np.where((np.arange(n)[None, :] > np.arange(ctx, n)[:, None])[None], -np.inf, lg)
        a = softmax(lg)
        w = np.linspace(1.0, 1.2, R) if R > 1 else np.ones(1)
        score = (a * w[None, :, None]).sum(axis=1).mean(axis=0)[:ctx]
        score[: min(4, ctx)] = np.inf  # sinks forced
        return topk_rule(score, keep, self.margins) + list(range(ctx, n))

    def select_kv(self, il, q, k, N):
        r = self.rows(il, q, k)
        return None if r is None else [r[:] for _ in range(self.Hkv)]

    def select_rows(self, il, q, k, N):
        return self.rows(il, q, k)


class GemFilter(FullKV):
    def __init__(self, m, o):
        self.o = o
        self.filter_layer = o.get("filter_layer", default_layer(m.name, m.L, (13, 17, 19),
                                                                13 / 32, m.L - 1))
        self.margins = Margins()

    def select_prompt(self, q, k, N):
        n, H, d = q.shape
        kk = np.repeat(k, H // k.shape[1], axis=1)
        kc = budget(self.o, N)
        if kc <= 0 or kc >= n:
            return list(range(n))
        raw = np.einsum("hd,jhd->j", q[-1], kk)  # no scaling, no softmax, summed over heads
        pooled = pool(raw[None, :], 5, "avg")[0]
        return topk_rule(pooled, kc, self.margins)


class KeyDiff(FullKV):
    """kvpress KeyDiffPress: per KV head, anchor = mean of the L2-normalised keys of the layer's
    rows; score = -cos(key, anchor); top C = floor(n r) (n = the layer's rows) or kv_budget, ties
    to the lower position; no window. Guard: C <= 0 or C >= n keeps every row."""

    def __init__(self, m, o):
        self.o, self.Hkv = o, m.Hkv
        self.margins = Margins()

    def select_kv(self, il, q, k, N):
        n = k.shape[0]
        C = budget(self.o, n)
        if C <= 0 or C >= n:
            return None
        kept = []
        for g in range(self.Hkv):
            keys = k[:, g, :]
            norms = np.linalg.norm(keys, axis=-1)
            anchor = (keys / np.maximum(norms, 1e-12)[:, None]).mean(axis=0)
            den = norms * np.linalg.norm(anchor)
            cos = np.where(den > 0, keys @ anchor / np.where(den > 0, den, 1.0), 0.0)
            kept.append(topk_rule(-cos, C, self.margins))
        return kept


METHODS = {"fullkv": FullKV, "fastkv": FastKV, "snapkv": SnapKV, "pyramidkv": PyramidKV,
           "adakv": AdaKV, "streamingllm": StreamingLLM, "h2o": H2O, "gemfilter": GemFilter,
           "pyramidinfer": PyramidInfer, "keydiff": KeyDiff}


# ----------------------------------------------------------------------------- prefill driver


def run_layers(model, pol, ids, record, last_layer=None, on_layer=None, orig=None, N=None):
    """Prefill with selection; returns the final hidden state rows and positions.

    Records kept/propagated rows as PROMPT positions: orig maps this pass's positions to prompt
    positions (GemFilter's second pass runs at fresh positions 0..k-1)."""
    N = len(ids) if N is None else N
    orig = list(range(len(ids))) if orig is None else orig
    x = model.embed[np.asarray(ids)]
    pos = np.arange(len(ids))
    L = model.L if last_layer is None else last_layer + 1
    for il in range(L):
        q, k, v = model.layer_qkv(il, x, pos)
        if on_layer is not None and on_layer(il, q, k):
            return None, None
        n = x.shape[0]
        kept = pol.select_kv(il, q, k, N)
        # Propagating after the last layer would change nothing: only asked before it.
        rows = pol.select_rows(il, q, k, N) if il + 1 < model.L else None
        if kept is None:
            kept = [list(range(n)) for _ in range(model.Hkv)]
        record["layers"].append({"layer": il, "n_in": n,
                                 "kept": [[int(orig[pos[r]]) for r in kh] for kh in kept]})
        x = model.layer_rest(il, x, q, k, v, pos)
        if rows is not None:
            assert rows[-1] == n - 1, "propagation must keep the last row"
            if record["tsp"] is None:  # the first propagation (FastKV: its only one)
                record["tsp"] = {"layer": il, "positions": [int(orig[pos[r]]) for r in rows]}
            x, pos = x[rows], pos[rows]
    return x, pos


def prefill(model, method, opts, ids):
    """Runs one method's prefill; returns the selection record (+ logits, margins)."""
    pol = METHODS[method](model, opts)
    N = len(ids)
    record = {"method": method, "n_prompt": N, "layers": [], "tsp": None}
    if isinstance(pol, FastKV):
        pol.begin(N)
    if isinstance(pol, GemFilter):
        chosen = {}

        def grab(il, q, k):
            if il == pol.filter_layer:
                chosen["sel"] = pol.select_prompt(q, k, N)
                return True
            return False

        run_layers(model, FullKV(model, {}), ids, {"layers": []}, pol.filter_layer, grab)
        sel = chosen["sel"]
        # The selection shows in the second pass's kept lists (as prompt positions); tsp stays null.
        x, _ = run_layers(model, FullKV(model, {}), [ids[i] for i in sel], record, orig=sel, N=N)
    else:
        x, _ = run_layers(model, pol, ids, record)
    record["logits"] = model.final_logits(x[-1]).tolist()
    record["min_margin"] = pol.margins.min_gap if hasattr(pol, "margins") else float("inf")
    return record


def selfcheck(model_dir):
    """Checks this reference against PyTorch/transformers (needs the oracle venv): the forward
    pass vs LlamaForCausalLM in float64, pooling vs F.max_pool1d / F.avg_pool1d, and the window
    score vs a torch restatement in the reference code's style (repeat_kv, masked last-W block)."""
    import torch
    import torch.nn.functional as F
    from transformers import LlamaForCausalLM

    rng = np.random.default_rng(0)
    m = LlamaRef(model_dir)
    hf = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float64).eval()
    for n in (1, 37, 100):
        ids = [int(t) for t in rng.integers(3, m.embed.shape[0], size=n)]
        with torch.no_grad():
            want = hf(torch.tensor([ids])).logits[0, -1].numpy()
        got = np.array(prefill(m, "fullkv", {}, ids)["logits"])
        print(f"forward n={n}: max |logit diff| vs transformers {np.abs(want - got).max():.2e}")
    for K in (3, 5, 7):
        s = rng.random((4, 23))
        t = torch.tensor(s)[None]
        mp = F.max_pool1d(t, K, stride=1, padding=K // 2)[0].numpy()
        ap = F.avg_pool1d(t, K, stride=1, padding=K // 2, count_include_pad=True)[0].numpy()
        print(f"pool K={K}: max {np.abs(mp - pool(s, K, 'max')).max():.1e} "
              f"avg {np.abs(ap - pool(s, K, 'avg')).max():.1e}")
    n, H, Hkv, d, W = 40, 8, 2, 16, 8
    q = rng.standard_normal((n, H, d))
    k = rng.standard_normal((n, Hkv, d))
    qt = torch.tensor(q).permute(1, 0, 2)[None]
    kt = torch.tensor(k).permute(1, 0, 2)[None].repeat_interleave(H // Hkv, dim=1)
    aw = torch.matmul(qt[..., -W:, :], kt.transpose(2, 3)) / d ** 0.5
    aw[:, :, -W:, -W:] += torch.full((W, W), float("-inf")).triu(1)
    aw = aw.softmax(-1).sum(-2)[..., :-W]
    want = F.max_pool1d(aw[0], 7, stride=1, padding=3).view(Hkv, H // Hkv, -1).sum(1).numpy()
    print(f"window score: max diff {np.abs(want - window_score_kv(q, k, W, 7, 'max')).max():.1e}")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--selfcheck":
        selfcheck(sys.argv[2])
        return
    if len(sys.argv) < 4:
        sys.exit("usage: kv_reference.py MODEL_DIR METHOD [key=value,...] ID...")
    model = LlamaRef(sys.argv[1])
    method = sys.argv[2]
    opts = {}
    rest = sys.argv[3:]
    if "=" in rest[0]:
        for kv in rest[0].split(","):
            key, val = kv.split("=")
            opts[key] = json.loads(val) if val[0].isdigit() or val in ("true", "false") else val
        rest = rest[1:]
    rec = prefill(model, method, opts, [int(t) for t in rest])
    rec.pop("logits")
    print(json.dumps(rec))


if __name__ == "__main__":
    main()
