"""Every KV method against full KV on one prompt, and a picture of what each one kept.

For each method registered in the engine: the text it generates (greedy), its top-1 agreement
with full KV (teacher-forced on the full-KV continuation: how often its next-token argmax equals
full KV's), and its KV-cache size after prefill. Then one heat map per method of the prompt
positions each layer kept (share of KV heads keeping a position), written as a PNG.

    python docs/examples/compare_methods.py                      # stories260K (seconds)
    python docs/examples/compare_methods.py --model smollm2-135m-instruct --out kept.png

The same steps, cell by cell, are in docs/PYTHON.md. tools/test.sh runs this script.
"""

import argparse
import os
import pathlib
import tempfile

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import fastkv  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT.parent / "shared" / "models" / "stories260K" / "stories260K.gguf"
PROMPT = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
    "park with her friends. One day, she saw a big red ball under a tree. She ran to the ball "
    "and picked it up. Then a small dog came and wanted to play too. Lily threw the ball and "
    "the dog ran after it. They played all day until the sun went down. Lily was very happy "
    "and went home to tell her mom about the dog. Her mom smiled and gave her a big hug. The "
    "next day Lily went back to the park to look for the dog."
)


def method_objects(retain_rate):
    """One object per registered method; the budgeted ones keep `retain_rate` of the prompt."""
    out = []
    for name in fastkv.methods.available():
        cls = getattr(fastkv.methods, fastkv.methods.class_name(name))
        out.append(cls(retain_rate=retain_rate) if "retain_rate" in cls.option_keys else cls())
    return out


def top1_agreement(model, method, prompt_ids, reference):
    """Share of steps where the method's argmax equals full KV's greedy token, feeding both the
    same (full-KV) tokens."""
    s = model.session(method=method, max_new_tokens=len(reference))
    logits = s.prefill(prompt_ids)
    hits = 0
    for i, token in enumerate(reference):
        hits += int(np.argmax(logits)) == token
        if i + 1 < len(reference):
            logits = s.decode(token)
    return hits / len(reference), s


def kept_share(kept, n_prompt):
    """[layers, n_prompt]: share of a layer's KV heads that kept each prompt position."""
    grid = np.zeros((len(kept["layers"]), n_prompt))
    for il, heads in enumerate(kept["layers"]):
        for positions in heads:
            grid[il, positions] += 1.0 / len(heads)
    return grid


def save_png_atomically(fig, path):
    """Temp file beside `path`, flushed to disk, then renamed over it: a reader never sees half a PNG."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=110)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a PNG is for everyone
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="model path or short name")
    ap.add_argument("--prompt-file", help="prompt text file (default: a short story)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--retain-rate", type=float, default=0.2)
    ap.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    ap.add_argument("--out", default="kept_positions.png", help="PNG to write")
    args = ap.parse_args()

    out_dir = pathlib.Path(args.out).resolve().parent
    if not out_dir.is_dir():
        ap.error(f"--out: folder {out_dir} does not exist")
    model = fastkv.Model(args.model)
    text = pathlib.Path(args.prompt_file).read_text(encoding="utf-8") if args.prompt_file else PROMPT
    tok = model.tokenizer
    if args.chat:
        prompt_ids = tok.apply_chat_template([{"role": "user", "content": text}])
    else:
        prompt_ids = tok.encode(text)
    full = model.generate(prompt_ids, max_new_tokens=args.max_new_tokens)
    reference = full.token_ids
    print(f"model {model.path}: {len(prompt_ids)} prompt tokens, {len(reference)} generated")
    print(f"full KV: {full.text!r}\n")

    rows = []
    for method in method_objects(args.retain_rate):
        agreement, session = top1_agreement(model, method, prompt_ids, reference)
        own = model.generate(prompt_ids, max_new_tokens=args.max_new_tokens, method=method)
        rows.append((method, agreement, own, kept_share(session.kept_positions(), len(prompt_ids))))

    print(f"| method | KV after prefill | top-1 agreement | same text | text |")
    print(f"|---|---|---|---|---|")
    for method, agreement, own, _ in rows:
        share = own.kv_bytes_after_prefill / full.kv_bytes_after_prefill
        same = "yes" if own.text == full.text else "no"
        print(f"| {method.spec} | {share:.0%} | {agreement:.0%} | {same} | {own.text[:60]!r} |")

    cols = 3
    nrows = (len(rows) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 2.3 * nrows), squeeze=False,
                             constrained_layout=True)
    for ax, (method, agreement, own, grid) in zip(axes.flat, rows):
        image = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis",
                          vmin=0, vmax=1, origin="lower")
        share = own.kv_bytes_after_prefill / full.kv_bytes_after_prefill
        ax.set_title(f"{method.spec}\nKV {share:.0%}, top-1 {agreement:.0%}", fontsize=8)
        ax.set_xlabel("prompt position", fontsize=7)
        ax.set_ylabel("layer", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes, shrink=0.6, label="share of KV heads keeping the position")
    fig.suptitle(f"Prompt positions each layer kept ({pathlib.Path(model.path).name}, "
                 f"{len(prompt_ids)} tokens)", fontsize=10)
    save_png_atomically(fig, args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
