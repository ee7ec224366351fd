#!/usr/bin/env python3
"""Plot `fastkv bench -o json` rows: latency against prompt length per method.

usage: plot_bench.py ROWS.json [OUT.png]

Left panel: prefill seconds (time to first token) against prompt length, one line per method
spec (and per threads / KV dtype / ubatch when those vary). Right panel: decode ms/token against
context (prompt length, or depth for -d rows). Error bars are the rows' standard deviations.
Without OUT.png the PNG bytes go to stdout (`fastkv bench --plot` reads them and writes the file
atomically); with it the file is written to a temporary beside it and renamed.
Needs matplotlib (pip install matplotlib).
"""
import io
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def label_of(row, varying):
    parts = [row["method_spec"]]
    for key in varying:
        parts.append(f"{key}={row[key]}")
    return " ".join(parts)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    rows = json.load(open(sys.argv[1]))
    if not isinstance(rows, list) or not rows:
        sys.exit(f"{sys.argv[1]}: expected a non-empty list of bench rows")
    varying = [k for k in ("threads", "kv_dtype", "ubatch", "gen_tokens")
               if len({r[k] for r in rows}) > 1]
    fig, (ax_pre, ax_dec) = plt.subplots(1, 2, figsize=(11, 4.2))
    series_pre, series_dec = {}, {}
    for r in rows:
        lab = label_of(r, varying)
        if r["prompt_tokens"] > 0:
            series_pre.setdefault(lab, []).append((r["prompt_tokens"], r["prefill_s"], r["prefill_s_std"]))
        if r["gen_tokens"] > 0:
            ctx = r["prompt_tokens"] if r["depth"] == 0 else r["depth"]
            series_dec.setdefault(lab, []).append(
                (ctx, r["decode_ms_per_token"], r["decode_ms_per_token_std"]))
    for ax, series in ((ax_pre, series_pre), (ax_dec, series_dec)):
        for lab, pts in sorted(series.items()):
            pts.sort()
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                        marker="o", capsize=3, label=lab)
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
        if series:
            ax.legend(fontsize=7)
    ax_pre.set_xlabel("prompt tokens")
    ax_pre.set_ylabel("prefill s (time to first token)")
    ax_dec.set_xlabel("context tokens (prompt or depth)")
    ax_dec.set_ylabel("decode ms / token")
    fig.suptitle(f"fastkv bench: {rows[0]['model']} ({rows[0]['model_dtype']})", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    data = buf.getvalue()
    if len(sys.argv) == 3:
        tmp = sys.argv[2] + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, sys.argv[2])
    else:
        sys.stdout.buffer.write(data)


if __name__ == "__main__":
    main()
