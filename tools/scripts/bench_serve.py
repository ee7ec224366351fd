#!/usr/bin/env python3
"""Benchmarks `fastkv serve` (and, optionally, llama.cpp's `llama-server`) over loopback HTTP.

Two experiments, one run, figures for docs/SERVING.md:

1. Throughput and time to first token: for each method (fullkv, fastkv) and each concurrency C
   (1, 4, 8), C streaming /v1/completions requests start together, each with its own
   --prompt-tokens-token prompt (token ids, so every server sees the same tokens) and
   --decode-tokens new tokens (ignore_eos, so every stream decodes the same count).
   - TTFT: request start -> first streamed token, median and max over the C streams.
   - aggregate decode tok/s: tokens streamed while all C streams were decoding (from the last
     first-token to the first finish) / that window: the batched decode rate with no prefill in
     it; per-stream rate = aggregate / C.
   - overall decode tok/s: all tokens after each stream's first / (first first-token .. last
     token): includes the decode steps slowed by the other streams' prefill pieces.
   With --llama-server PATH the same requests go to llama.cpp's server (-np C slots, same threads,
   same GGUF; fullkv only: it has no KV compression).
   --rounds N measures every row N times, the rows alternating within each round, and reports
   per row the median rate and the median of its per-round ratio to the fewest-streams row: on a
   shared VM a slow phase then lands on all rows of a round instead of on one side of a ratio.

2. Admission by KV memory: at a fixed --kv-memory, --conversations streaming requests of
   --conv-tokens prompt tokens each arrive at once (ignore_eos, --conv-decode tokens). Reported:
   the most sequences the server held at once (sampled from /metrics: running + prefilling),
   and its capacity kv_memory // (reserved bytes of one conversation, from usage).

Usage (idle machine, figures for docs):
  python3 tools/scripts/bench_serve.py --fastkv build/fastkv --model smollm2-135m-instruct \
      --threads 16 --out docs/results/serve_bench.json [--llama-server /path/to/llama-server]
Small-scale check (a minute):
  python3 tools/scripts/bench_serve.py --fastkv build/fastkv --model smollm2-135m-instruct \
      --smoke --threads 2
"""
import argparse
import http.client
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

WORDS = ("the of and a to in is was that for on with as by at from his her it an which were "
         "river mountain city garden library engine signal market harbor winter summer letter "
         "story doctor teacher window island bridge forest music number question answer light "
         "morning evening village station journey promise history science machine ocean field "
         "walked spoke found carried opened watched remembered built measured wrote discovered").split()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def write_atomic(path, text):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".bench_serve.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def prompt_ids(fastkv, model, n_tokens, seed):
    """n_tokens ids of seeded pseudo-English, through the model's own tokenizer."""
    rng = random.Random(seed)
    words = []
    while len(words) < n_tokens * 2:
        sentence = [rng.choice(WORDS) for _ in range(rng.randint(6, 14))]
        words.append(" ".join(sentence).capitalize() + ".")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(" ".join(words))
        path = f.name
    try:
        out = subprocess.run([fastkv, "tokenize", "--model", model, "--file", path],
                             capture_output=True, text=True, check=True)
    finally:
        os.unlink(path)
    ids = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(ids) >= n_tokens, (len(ids), n_tokens)
    return ids[:n_tokens]


class Proc:
    def __init__(self, cmd, ready_pattern, port=None, timeout=300):
        self.log_path = tempfile.mktemp(prefix="bench_serve_", suffix=".log")
        self.log = open(self.log_path, "w")
        env = dict(os.environ)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, env=env)
        self.port = port
        if ready_pattern is None:
            return  # the caller polls the server itself
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited:\n" + open(self.log_path).read()[-3000:])
            text = open(self.log_path).read()
            m = re.search(ready_pattern, text)
            if m:
                if self.port is None:
                    self.port = int(m.group(1))
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{cmd[0]} did not become ready")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        os.unlink(self.log_path)


def start_fastkv(args, method, parallel, kv_memory, queue=256):
    cmd = [args.fastkv, "serve", "--model", args.model, "--port", "0", "--parallel", str(parallel),
           "--queue", str(queue), "--kv-memory", kv_memory, "--method", method,
           "--max-body", "64M"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return Proc(cmd, r"listening on http://127\.0\.0\.1:(\d+)")


def start_llama(args, parallel, ctx_per_slot):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [args.llama_server, "-m", args.model_path, "--host", "127.0.0.1", "--port", str(port),
           "-np", str(parallel), "-c", str(parallel * ctx_per_slot), "-t", str(args.threads or
                                                                                os.cpu_count())]
    p = Proc(cmd, None, port=port)
    # /health answers 503 while the model loads, 200 once the slots are ready.
    deadline = time.time() + 300
    while time.time() < deadline:
        if p.proc.poll() is not None:
            raise RuntimeError("llama-server exited:\n" + open(p.log_path).read()[-3000:])
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return p
        except OSError:
            pass
        time.sleep(0.2)
    p.stop()
    raise RuntimeError("llama-server not healthy")


def stream_request(port, ids, n_decode, out, extra=None):
    """One streaming completion; records start, first-token and per-token times."""
    body = {"prompt": ids, "max_tokens": n_decode, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    body.update(extra or {})
    rec = {"start": time.perf_counter(), "times": [], "usage": None, "error": None}
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
        conn.request("POST", "/v1/completions", body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            rec["error"] = f"HTTP {r.status}: {r.read()[:300]!r}"
        else:
            buf = b""
            while True:
                chunk = r.read1(65536) if hasattr(r, "read1") else r.read(1)
                if not chunk:
                    break
                buf += chunk
                while b"\n\n" in buf:
                    event, buf = buf.split(b"\n\n", 1)
                    for line in event.split(b"\n"):
                        if not line.startswith(b"data: "):
                            continue
                        data = line[6:]
                        if data == b"[DONE]":
                            continue
                        j = json.loads(data)
                        if j.get("usage"):
                            rec["usage"] = j["usage"]
                        for ch in j.get("choices", []):
                            # Every token is one event, also those whose text is empty (a
                            # special token or a partial UTF-8 character): count them all.
                            if ch.get("finish_reason") is None or ch.get("text"):
                                rec["times"].append(time.perf_counter())
        conn.close()
    except Exception as e:  # noqa: BLE001 - reported in the results
        rec["error"] = repr(e)
    out.append(rec)


def run_concurrent(port, prompts, n_decode, extra=None):
    out = []
    threads = [threading.Thread(target=stream_request, args=(port, p, n_decode, out, extra))
               for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [r["error"] for r in out if r["error"]]
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed: {errors[:3]}")
    ttft = [r["times"][0] - r["start"] for r in out]
    window_start = max(r["times"][0] for r in out)
    window_end = min(r["times"][-1] for r in out)
    in_window = sum(sum(1 for t in r["times"] if window_start < t <= window_end) for r in out)
    # NaN when a stream ended before the last one started decoding (--decode-tokens too small
    # for the prefill of the others); the overall rate below is then the one to read.
    agg = in_window / (window_end - window_start) if window_end > window_start else float("nan")
    first = min(r["times"][0] for r in out)
    last = max(r["times"][-1] for r in out)
    overall = sum(len(r["times"]) - 1 for r in out) / (last - first) if last > first else 0.0
    return {"streams": len(prompts), "ttft_median_s": statistics.median(ttft),
            "ttft_max_s": max(ttft), "aggregate_decode_tok_s": agg,
            "overall_decode_tok_s": overall,
            "tokens_per_stream": [len(r["times"]) for r in out],
            "kv_bytes_per_stream": [r["usage"].get("kv_cache_bytes") if r["usage"] else None
                                    for r in out]}


def metrics(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def throughput(args, results):
    """Every (server, method, streams) once per round; rounds alternate them all, so that a slow
    phase of a shared machine lands on all of them instead of on one row of a ratio."""
    n_max = max(args.concurrency)
    prompts = [prompt_ids(args.fastkv, args.model, args.prompt_tokens, 1000 + i)
               for i in range(n_max)]

    def measure(label, server, method, c, rnd, start):
        """One row: a fresh server (`start()`), a warm-up request, then c streams together."""
        log(f"[throughput] {label} x{c}" + (f" (round {rnd + 1}/{args.rounds})"
                                             if args.rounds > 1 else ""))
        srv = start()
        try:
            run_concurrent(srv.port, prompts[:1], 4)  # warm-up (page in the weights)
            r = run_concurrent(srv.port, prompts[:c], args.decode_tokens)
        finally:
            srv.stop()
        r.update({"server": server, "method": method, "round": rnd})
        results["throughput"].append(r)
        log(f"    ttft median {r['ttft_median_s']:.2f} s, aggregate decode "
            f"{r['aggregate_decode_tok_s']:.1f} tok/s")

    for rnd in range(args.rounds):
        for method in args.methods:
            for c in args.concurrency:
                measure(f"fastkv serve {method}", "fastkv", method, c, rnd,
                        lambda: start_fastkv(args, method, parallel=c, kv_memory="0"))
        if args.llama_server:
            for c in args.concurrency:
                measure("llama-server", "llama-server", "fullkv", c, rnd,
                        lambda: start_llama(args, c, args.prompt_tokens + args.decode_tokens + 16))
    results["summary"] = summarize(results["throughput"], min(args.concurrency))


def summarize(rows, base_streams):
    """Per (server, method, streams): the median over rounds of the aggregate rate and TTFT, and
    the median over rounds of the ratio to the same round's `base_streams` row."""
    groups = {}
    for r in rows:
        groups.setdefault((r["server"], r["method"], r["streams"]), []).append(r)
    out = []
    for (server, method, streams), rs in groups.items():
        base = {b["round"]: b["aggregate_decode_tok_s"]
                for b in groups.get((server, method, base_streams), [])}
        ratios = [r["aggregate_decode_tok_s"] / base[r["round"]] for r in rs
                  if base.get(r["round"])]
        out.append({"server": server, "method": method, "streams": streams,
                    "rounds": len(rs),
                    "aggregate_decode_tok_s": [r["aggregate_decode_tok_s"] for r in rs],
                    "aggregate_decode_tok_s_median":
                        statistics.median(r["aggregate_decode_tok_s"] for r in rs),
                    "ttft_median_s_median": statistics.median(r["ttft_median_s"] for r in rs),
                    "ttft_max_s_median": statistics.median(r["ttft_max_s"] for r in rs),
                    f"vs_{base_streams}_stream_median": statistics.median(ratios) if ratios
                    else None})
    return out


def admission(args, results):
    if args.conversations <= 0:  # --conversations 0: throughput only
        return
    prompts = [prompt_ids(args.fastkv, args.model, args.conv_tokens, 5000 + i)
               for i in range(args.conversations)]
    for method in args.methods:
        log(f"[admission] {method} at --kv-memory {args.kv_memory}, {args.conversations} "
            f"conversations of {args.conv_tokens} tokens")
        srv = start_fastkv(args, method, parallel=args.conversations, kv_memory=args.kv_memory,
                           queue=args.conversations + 8)
        peak = [0.0]
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                m = metrics(srv.port)
                peak[0] = max(peak[0], m["fastkv_running_sequences"] +
                              m["fastkv_prefilling_sequences"])
                time.sleep(0.05)

        w = threading.Thread(target=watch)
        w.start()
        try:
            out = []
            threads = [threading.Thread(target=stream_request,
                                        args=(srv.port, p, args.conv_decode, out))
                       for p in prompts]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            limit = metrics(srv.port)["fastkv_kv_bytes_limit"]
        finally:
            stop.set()
            w.join()
            srv.stop()
        errors = [r["error"] for r in out if r["error"]]
        if errors:
            raise RuntimeError(f"admission {method}: {errors[:3]}")
        reserved = max(r["usage"]["kv_cache_bytes_reserved"] for r in out)
        after = max(r["usage"]["kv_cache_bytes"] for r in out)
        r = {"method": method, "kv_memory_bytes": limit, "conversations": args.conversations,
             "conv_tokens": args.conv_tokens, "conv_decode": args.conv_decode,
             "peak_admitted": int(peak[0]), "capacity": int(limit // reserved),
             "kv_bytes_reserved_per_conversation": reserved, "kv_bytes_per_conversation": after}
        results["admission"].append(r)
        log(f"    peak admitted {r['peak_admitted']}, capacity {r['capacity']} "
            f"({reserved} bytes reserved each)")


def table(results):
    rounds = results.get("rounds", 1)
    base = min((r["streams"] for r in results["throughput"]), default=1)
    of_rounds = ", median of rounds" if rounds > 1 else ""
    lines = [f"| server | method | streams | TTFT median (s){of_rounds} | TTFT max (s){of_rounds} | "
             f"aggregate decode tok/s (all streams decoding){of_rounds} | "
             f"vs {base} stream{'s' if base != 1 else ''}{of_rounds} |",
             "|---|---|---|---|---|---|---|"]
    for r in results.get("summary", []):
        ratio = r.get(f"vs_{base}_stream_median")
        each = " / ".join(f"{v:.1f}" for v in r["aggregate_decode_tok_s"])
        lines.append(f"| {r['server']} | {r['method']} | {r['streams']} | "
                     f"{r['ttft_median_s_median']:.2f} | {r['ttft_max_s_median']:.2f} | "
                     f"{r['aggregate_decode_tok_s_median']:.1f}"
                     + (f" ({each})" if r["rounds"] > 1 else "") + " | "
                     + (f"{ratio:.2f}x" if ratio is not None else "-") + " |")
    if results["admission"]:
        lines += ["", "| method | --kv-memory | peak admitted | capacity | reserved per conversation |",
                  "|---|---|---|---|---|"]
        for r in results["admission"]:
            lines.append(f"| {r['method']} | {r['kv_memory_bytes']:.0f} | {r['peak_admitted']} | "
                         f"{r['capacity']} | {r['kv_bytes_reserved_per_conversation']} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fastkv", default="build/fastkv")
    ap.add_argument("--model", default="smollm2-135m-instruct",
                    help="path or known short name (the same GGUF goes to llama-server)")
    ap.add_argument("--threads", type=int, default=0, help="threads for every server (0: all)")
    ap.add_argument("--methods", default="fullkv,fastkv")
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--prompt-tokens", type=int, default=2048)
    # fastkv serve prefills one prompt at a time in layer pieces between decode steps, so the
    # first stream has decoded about (C - 1) x n_layers tokens when the last one starts; 512
    # leaves a window where all 8 streams of a 30-layer model decode together.
    ap.add_argument("--decode-tokens", type=int, default=512)
    ap.add_argument("--kv-memory", default="1G")
    ap.add_argument("--conversations", type=int, default=32,
                    help="conversations of the admission experiment (0: skip it)")
    ap.add_argument("--conv-tokens", type=int, default=4096)
    ap.add_argument("--conv-decode", type=int, default=512,
                    help="tokens each conversation decodes: long enough that the first ones are "
                         "still running when the last are prefilled")
    ap.add_argument("--llama-server", default="", help="path to llama.cpp's llama-server binary")
    ap.add_argument("--rounds", type=int, default=1,
                    help="times to measure every throughput row, alternating them (medians and "
                         "per-round ratios are reported)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes to check the script works (not figures)")
    ap.add_argument("--out", default="", help="write the results as JSON here")
    args = ap.parse_args()
    if args.smoke:
        args.prompt_tokens, args.decode_tokens = 256, 96
        args.concurrency = "1,4"
        args.conversations, args.conv_tokens, args.conv_decode = 6, 512, 64
        args.kv_memory = "64M"
    if args.rounds < 1:
        ap.error(f"--rounds {args.rounds}: must be at least 1")
    args.methods = [m for m in args.methods.split(",") if m]
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    if args.out and not os.access(os.path.dirname(os.path.abspath(args.out)), os.W_OK):
        ap.error(f"--out {args.out}: its folder is not writable")  # now, not after the run
    args.model_path = args.model
    if not os.path.exists(args.model):
        cache = os.environ.get("FASTKV_MODEL_DIR", os.path.expanduser("~/.cache/fastkv/models"))
        known = {"smollm2-135m-instruct": "SmolLM2-135M-Instruct.Q4_1.gguf",
                 "qwen2.5-coder-1.5b-instruct": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"}
        args.model_path = os.path.join(cache, known.get(args.model, args.model))
    results = {"model": args.model, "threads": args.threads, "prompt_tokens": args.prompt_tokens,
               "decode_tokens": args.decode_tokens, "rounds": args.rounds, "throughput": [],
               "admission": [],
               "smoke": args.smoke, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    t0 = time.time()
    throughput(args, results)
    admission(args, results)
    results["seconds"] = time.time() - t0
    print(table(results))
    if args.out:
        write_atomic(args.out, json.dumps(results, indent=2) + "\n")
    log(f"done in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
