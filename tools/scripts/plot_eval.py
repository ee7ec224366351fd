#!/usr/bin/env python3
"""Plots of a `fastkv eval` output folder (called by the CLI after a run; run it by hand too).

  python3 tools/scripts/plot_eval.py DIR

Reads DIR/predictions.jsonl and writes, each via a temporary file renamed over the target:
  needle_heatmap_<method>.png  needle runs: depth (rows) x length (columns), mean score
  accuracy_vs_kv.png           every family: task-averaged score against the measured KV share
                               (kept KV bytes / full-cache bytes), one line per method name
                               (a retain-rate sweep draws a line; a single rate draws a point)
Needs matplotlib (Debian: python3-matplotlib).
"""
import collections
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save(fig, path):
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def slug(method):
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", method)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: plot_eval.py DIR")
    d = sys.argv[1]
    rows = [json.loads(l) for l in open(os.path.join(d, "predictions.jsonl"), encoding="utf-8") if l.strip()]
    if not rows:
        sys.exit(f"{d}/predictions.jsonl has no rows")
    meta = {}
    if os.path.exists(os.path.join(d, "run.json")):
        meta = json.load(open(os.path.join(d, "run.json"), encoding="utf-8"))
    family = meta.get("family", "eval")
    protocol = meta.get("protocol", "")
    methods = []
    for r in sorted(rows, key=lambda r: r.get("method_index", 0)):
        if r["method"] not in methods:
            methods.append(r["method"])
    written = []

    # Needle heatmaps.
    needle = [r for r in rows if "depth" in r and "length" in r]
    if needle:
        lengths = sorted({r["length"] for r in needle})
        depths = sorted({r["depth"] for r in needle})
        for m in methods:
            cell = collections.defaultdict(list)
            for r in needle:
                if r["method"] == m:
                    cell[(r["depth"], r["length"])].append(r["score"])
            grid = [[(sum(cell[(dp, L)]) / len(cell[(dp, L)]) * 100) if cell[(dp, L)] else float("nan")
                     for L in lengths] for dp in depths]
            fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(lengths), 1.0 + 0.5 * len(depths)))
            im = ax.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
            ax.set_xticks(range(len(lengths)), [f"{L // 1024}K" if L % 1024 == 0 else str(L) for L in lengths])
            ax.set_yticks(range(len(depths)), [f"{dp:g}%" for dp in depths])
            for i in range(len(depths)):
                for j in range(len(lengths)):
                    if grid[i][j] == grid[i][j]:
                        ax.text(j, i, f"{grid[i][j]:.0f}", ha="center", va="center", fontsize=8)
            ax.set_xlabel("prompt length (tokens)")
            ax.set_ylabel("needle depth")
            ax.set_title(f"needle: {m} ({protocol})", fontsize=9)
            fig.colorbar(im, ax=ax, label="score")
            path = os.path.join(d, f"needle_heatmap_{slug(m)}.png")
            save(fig, path)
            written.append(path)

    # Accuracy against KV budget: one line per method name.
    by_method = collections.defaultdict(lambda: {"score": [], "share": []})
    task_scores = collections.defaultdict(list)
    for r in rows:
        task_scores[(r["method"], r["task"])].append(r["score"])
        if r.get("full_kv_bytes"):
            by_method[r["method"]]["share"].append(r["kv_bytes"] / r["full_kv_bytes"])
    points = collections.defaultdict(list)
    for m in methods:
        tasks = [t for (mm, t) in task_scores if mm == m]
        avg = sum(sum(task_scores[(m, t)]) / len(task_scores[(m, t)]) for t in tasks) / len(tasks) * 100
        shares = by_method[m]["share"]
        share = sum(shares) / len(shares) * 100 if shares else 100.0
        points[m.split(":")[0]].append((share, avg, m))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, pts in points.items():
        pts.sort()
        if name == "fullkv":
            ax.axhline(pts[0][1], color="black", linestyle="--", linewidth=1, label="fullkv")
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xlabel("KV cache kept (% of full, measured)")
    ax.set_ylabel("score (task average)")
    ax.set_title(f"{family}: accuracy vs KV budget ({protocol})", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = os.path.join(d, "accuracy_vs_kv.png")
    save(fig, path)
    written.append(path)
    print(f"[plot_eval] wrote {len(written)} plots to {d}", file=sys.stderr)


if __name__ == "__main__":
    main()
