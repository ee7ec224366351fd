#!/usr/bin/env bash
# Times llama.cpp (llama-bench, from the source llama-cpp-python vendors) and fastkv (fastkv
# bench) on the same GGUF with the same threads and KV dtype, row by row (each prefill length and
# decode depth: llama.cpp, then fastkv), and writes both engines' raw JSON plus one markdown table
# side by side.
#
# usage:
#   tools/scripts/compare_llamacpp.sh build                 # only fetch + build llama-bench
#   tools/scripts/compare_llamacpp.sh path                  # build if needed, print its path
#   tools/scripts/compare_llamacpp.sh run MODEL.gguf OUTDIR [-p 512,2048] [-d DEPTHS] [-n 32] [-t 2]
#                                      [-r 3] [--kv-dtype f16] [--label NAME]
#
# Environment:
#   LLAMACPP_ROOT   where the sdist is fetched and built (default /work/llamacpp-src; never the repo)
#   LLAMACPP_PY_VERSION  llama-cpp-python sdist version (default 0.3.36, the one whose llama.cpp
#                   made the committed goldens)
#   LLAMACPP_JOBS   build parallelism (default 1: the machine is shared)
#   FASTKV          fastkv binary (default build/fastkv)
# Nothing from llama.cpp is committed: source and binaries live under LLAMACPP_ROOT.
set -euo pipefail

LLAMACPP_ROOT=${LLAMACPP_ROOT:-/work/llamacpp-src}
LLAMACPP_PY_VERSION=${LLAMACPP_PY_VERSION:-0.3.36}
LLAMACPP_JOBS=${LLAMACPP_JOBS:-1}
FASTKV=${FASTKV:-build/fastkv}
SRC_DIR="$LLAMACPP_ROOT/llama_cpp_python-$LLAMACPP_PY_VERSION/vendor/llama.cpp"
BUILD_DIR="$LLAMACPP_ROOT/build-$LLAMACPP_PY_VERSION"
LLAMA_BENCH="$BUILD_DIR/bin/llama-bench"

die() { echo "compare_llamacpp.sh: $*" >&2; exit 2; }

build_llamacpp() {
  if [[ -x "$LLAMA_BENCH" ]]; then
    echo "llama-bench present: $LLAMA_BENCH" >&2
    return
  fi
  mkdir -p "$LLAMACPP_ROOT"
  local sdist="$LLAMACPP_ROOT/llama_cpp_python-$LLAMACPP_PY_VERSION.tar.gz"
  if [[ ! -f "$sdist" ]]; then
    pip download --no-deps --no-binary :all: "llama-cpp-python==$LLAMACPP_PY_VERSION" -d "$LLAMACPP_ROOT"
  fi
  [[ -d "$SRC_DIR" ]] || tar -xzf "$sdist" -C "$LLAMACPP_ROOT"
  [[ -f "$SRC_DIR/CMakeLists.txt" ]] || die "no vendored llama.cpp in $SRC_DIR"
  # Native ISA like fastkv's own dispatch; no network features; only the two tools we need.
  nice -n 19 cmake -S "$SRC_DIR" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DBUILD_SHARED_LIBS=OFF
  nice -n 19 cmake --build "$BUILD_DIR" --target llama-bench llama-server -j "$LLAMACPP_JOBS"
  [[ -x "$LLAMA_BENCH" ]] || die "build finished but $LLAMA_BENCH is missing"
}

run_compare() {
  [[ $# -ge 2 ]] || die "run needs MODEL.gguf OUTDIR"
  local model=$1 outdir=$2
  shift 2
  local prompts=512,2048 depths="" gen=32 threads=2 reps=3 kv=f16 label=""
  while [[ $# -gt 0 ]]; do
    case $1 in
      -p) prompts=$2; shift 2 ;;
      -d) depths=$2; shift 2 ;;
      -n) gen=$2; shift 2 ;;
      -t) threads=$2; shift 2 ;;
      -r) reps=$2; shift 2 ;;
      --kv-dtype) kv=$2; shift 2 ;;
      --label) label=$2; shift 2 ;;
      *) die "unknown option '$1'" ;;
    esac
  done
  [[ -f "$model" ]] || die "model file '$model' not found"
  [[ -x "$FASTKV" ]] || die "fastkv binary '$FASTKV' not found (build first or set FASTKV)"
  case $kv in f16|bf16|f32) ;; *) die "--kv-dtype must be f16, bf16 or f32, got '$kv'" ;; esac
  [[ -n "$label" ]] || label=$(basename "$model" .gguf)
  [[ -n "$depths" ]] || depths=$prompts
  build_llamacpp
  mkdir -p "$outdir"
  local lc_json="$outdir/llamacpp_$label.json" fk_json="$outdir/fastkv_$label.json"
  # Row by row, llama.cpp then fastkv: a slow phase of a shared machine (minutes long on a VM)
  # then falls on both engines of a row, not on one engine's whole table.
  # llama-bench: -fa 1 (flash attention, as llama.cpp users run long context), prompt rows
  # (-p N -n 0) and decode rows at depth N (-n gen -d N), same KV dtype as fastkv.
  # fastkv: the same prefill rows (-n 0) and decode-only rows at the same depths; decode rows
  # fill the cache with random K/V of the right size (--fill random: a full cache of depth N, as
  # llama-bench's untimed depth prefill leaves); decode speed does not depend on values.
  ROWS_DIR=$(mktemp -d)  # global: the EXIT trap runs after this function's locals are gone
  trap 'rm -rf "$ROWS_DIR"' EXIT  # also when a row fails
  local row=0 p d
  for p in ${prompts//,/ }; do
    row=$((row + 1))
    echo "row $row: prefill $p (llama.cpp, then fastkv) $model t=$threads kv=$kv" >&2
    nice -n 0 "$LLAMA_BENCH" -m "$model" -p "$p" -n 0 -t "$threads" -r "$reps" -fa 1 \
      -ctk "$kv" -ctv "$kv" -o json >"$ROWS_DIR/lc_$row.json"
    "$FASTKV" bench --model "$model" -p "$p" -n 0 -t "$threads" -r "$reps" --kv-dtype "$kv" \
      -o json --out-file "$ROWS_DIR/fk_$row.json"
  done
  for d in ${depths//,/ }; do
    row=$((row + 1))
    echo "row $row: decode $gen @ depth $d (llama.cpp, then fastkv) $model t=$threads kv=$kv" >&2
    nice -n 0 "$LLAMA_BENCH" -m "$model" -p 0 -n "$gen" -d "$d" -t "$threads" -r "$reps" -fa 1 \
      -ctk "$kv" -ctv "$kv" -o json >"$ROWS_DIR/lc_$row.json"
    "$FASTKV" bench --model "$model" -p 0 -n "$gen" -d "$d" -t "$threads" -r "$reps" \
      --kv-dtype "$kv" --fill random -o json --out-file "$ROWS_DIR/fk_$row.json"
  done
  python3 - "$ROWS_DIR" "$row" "$fk_json" "$lc_json" "$outdir/compare_$label.md" \
    "$label" "$threads" "$kv" <<'PY'
import json, os, sys
rows_dir, n_rows, fk_out, lc_path, md_path, label, threads, kv = sys.argv[1:9]
lc, fk = [], []
for i in range(1, int(n_rows) + 1):
    lc += json.load(open(os.path.join(rows_dir, f"lc_{i}.json")))
    fk += json.load(open(os.path.join(rows_dir, f"fk_{i}.json")))

def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text); f.flush(); os.fsync(f.fileno())
    os.replace(tmp, path)

write_atomic(lc_path, json.dumps(lc, indent=1))
write_atomic(fk_out, json.dumps(fk, indent=1))
lines = [f"| model | measure | llama.cpp tok/s | fastkv tok/s | ratio |", "|---|---|---|---|---|"]
def lc_row(n_prompt, n_gen, depth):
    for r in lc:
        if r["n_prompt"] == n_prompt and r["n_gen"] == n_gen and r.get("n_depth", 0) == depth:
            return r
    return None
for r in fk:
    if r["gen_tokens"] == 0 and r["prompt_tokens"] > 0:
        n = r["prompt_tokens"]; l = lc_row(n, 0, 0)
        ours = r["prefill_tok_per_s"]; what = f"prefill {n} tok"
    elif r["depth"] > 0:
        n = r["depth"]; l = lc_row(0, r["gen_tokens"], n)
        ours = 1000.0 / r["decode_ms_per_token"] if r["decode_ms_per_token"] > 0 else 0.0
        what = f"decode @ {n} ctx"
    else:
        continue
    theirs = l["avg_ts"] if l else float("nan")
    ratio = ours / theirs if l and theirs > 0 else float("nan")
    sd = (f" ± {l['stddev_ts']:.1f}" if l else "")
    lines.append(f"| {label} | {what} | {theirs:.1f}{sd} | {ours:.1f} | {ratio:.2f}x |")
lines.append("")
lines.append(f"threads {threads}, KV {kv}; llama.cpp {lc[0].get('build_commit', '?') if lc else '?'} "
             "(llama-bench -fa 1); fastkv bench; mean ± stddev over the repetitions.")
write_atomic(md_path, "\n".join(lines) + "\n")
print("\n".join(lines))
PY
}

case ${1:-} in
  build) build_llamacpp ;;
  path) build_llamacpp >&2; echo "$LLAMA_BENCH" ;;
  run) shift; run_compare "$@" ;;
  *) die "usage: $0 build | path | run MODEL.gguf OUTDIR [-p LIST] [-d LIST] [-n N] [-t N] [-r N] [--kv-dtype T] [--label NAME]" ;;
esac
