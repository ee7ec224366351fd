#!/usr/bin/env bash
# Produces every figure of docs/PERFORMANCE.md: raw JSON under docs/results/perf/, then the
# document itself (tools/scripts/perf_report.py). Run it ONCE on an idle machine (nothing else
# running: the figures are only as good as the machine is quiet).
#
#   bash tools/run_perf.sh                 # every section not done yet, then the report
#   bash tools/run_perf.sh smollm2 memory  # only these sections (then the report)
#   FORCE=1 bash tools/run_perf.sh smollm2 # rerun a section that is already done
#   bash tools/run_perf.sh report          # only rebuild docs/PERFORMANCE.md from the JSON
#   FKV_PERF_SMOKE=1 bash tools/run_perf.sh   # every section on stories260K, tiny lengths, into
#                                            # /tmp/fastkv-perf-smoke (~2 min): checks the script
#
# Resumable: each section writes its JSON and then a .done marker with its duration; a section
# with a marker is skipped. Expected durations on an idle 2-core machine, 2 threads (estimated
# from indicative runs on the shared VM: 1B bf16 prefill ~45-55 tok/s, decode ~150-220 ms/token):
#   setup     ~25 min  first time (llama-bench build -j2, synthetic GGUFs), ~1 min after
#   smollm2   ~6 min   fastkv bench, SmolLM2-135M Q4_1, p/d = 512, 2K, 8K, fullkv + fastkv
#   b1_bf16   ~27 min  same on the Llama-3.2-1B shape, bf16 GGUF
#   b1_q4_0   ~27 min  same, Q4_0 GGUF
#   speedup   ~28 min  1B bf16: fastkv vs fullkv prefill at 4K/8K, decode at 8K/16K (random fill)
#   memory    ~65 min  1B bf16: peak RSS of a 32K prefill, fullkv (~40 min) and fastkv (~25 min)
#   pool      ~3 min   SmolLM2 decode with the thread pool's workers spinning 0 / 100 (default) /
#                      1000 us before they sleep, idle and with a busy core (a spinning `yes`)
#   llamacpp  ~75 min  tools/scripts/compare_llamacpp.sh on the three GGUFs (both engines)
#   e2e       ~25 min  1B bf16 at 8K: fastkv prefill + 128 decoded vs llama.cpp -pg 8192,128
#   methods   ~3 min   SmolLM2 prefill at 8128 tokens, every method (scorer overheads vs fullkv)
#   batch     ~6 min   batched decode (what `fastkv serve` steps): 1 / 4 / 8 sequences at depth
#                      2048 decoded together, SmolLM2 and the 1B shape Q4_0, fullkv + FastKV
#   (all: ~4.7 h; the report is rebuilt after every call, so sections can be spread over runs)
# Threads: FKV_PERF_THREADS (default 2). Models: FASTKV_MODEL_DIR / ~/.cache/fastkv/models for
# SmolLM2, FKV_PERF_MODELS (default /work/models) for the synthetic GGUFs. FKV_BIN: the fastkv binary
# (default build/fastkv). Hand-written notes on a run go in docs/results/perf/notes.md: the report
# appends that file.
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${FKV_PERF_THREADS:-2}
OUT=docs/results/perf
MODELS=${FKV_PERF_MODELS:-/work/models}
FASTKV=${FKV_BIN:-build/fastkv}  # a copy keeps a long run safe from rebuilds
export FASTKV                      # compare_llamacpp.sh reads it too
SMOL="${FASTKV_MODEL_DIR:-$HOME/.cache/fastkv/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
B1_BF16="$MODELS/llama-3.2-1b.bf16.gguf"
B1_Q4_0="$MODELS/llama-3.2-1b.q4_0.gguf"
FASTKV_SPEC="fastkv:tsp_rate=0.2,retain_rate=0.1"
ALL_SECTIONS="setup smollm2 b1_bf16 b1_q4_0 speedup memory pool llamacpp e2e batch methods"
REPORT=docs/PERFORMANCE.md
# Lengths (the figures' sizes; FKV_PERF_SMOKE=1 shrinks everything to check the script itself in
# ~2 minutes on stories260K, writing to /tmp/fastkv-perf-smoke instead of docs/).
P_SHORT=512,2048 P_LONG=8192 P_LONG_SMOL=8128 D_SMOL=512,2048,8128 D_1B=512,2048,8192
P_SPEED=4096,8192 D_SPEED=8192,16384 P_MEM=32768 P_E2E=8192 N_E2E=128 D_BATCH=2048
if [[ -n "${FKV_PERF_SMOKE:-}" ]]; then
  OUT=/tmp/fastkv-perf-smoke
  REPORT=$OUT/PERFORMANCE.md
  SMOL=../shared/models/stories260K/stories260K.gguf
  B1_BF16=$SMOL B1_Q4_0=$SMOL
  P_SHORT=64,128 P_LONG=256 P_LONG_SMOL=256 D_SMOL=64,128,256 D_1B=64,128,256
  P_SPEED=128,256 D_SPEED=256,512 P_MEM=1024 P_E2E=256 N_E2E=16 D_BATCH=128
fi
mkdir -p "$OUT"

bench() { "$FASTKV" bench -t "$THREADS" "$@"; }

# run_section NAME: skips when done, times the body, writes the marker.
run_section() {
  local name=$1
  if [[ -f "$OUT/$name.done" && -z "${FORCE:-}" ]]; then
    echo "== $name: done already ($(cat "$OUT/$name.done")); FORCE=1 to rerun" >&2
    return
  fi
  echo "== $name: start $(date -u +%H:%M:%S)" >&2
  local t0=$SECONDS
  "section_$name"
  local dt=$((SECONDS - t0))
  printf '{"section": "%s", "seconds": %d, "finished_utc": "%s", "threads": %d}\n' \
    "$name" "$dt" "$(date -u +%FT%TZ)" "$THREADS" >"$OUT/$name.done"
  echo "== $name: ${dt}s" >&2
}

section_setup() {
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j2 --target fastkv
  [[ -f "$SMOL" ]] || python3 tools/scripts/fetch_models.py smollm2-135m-instruct
  python3 -c "import gguf, numpy, matplotlib" 2>/dev/null || pip install gguf numpy matplotlib
  mkdir -p "$MODELS"
  [[ -f "$B1_BF16" ]] || python3 tools/scripts/write_synthetic_gguf.py llama-3.2-1b bf16 "$B1_BF16"
  [[ -f "$B1_Q4_0" ]] || python3 tools/scripts/write_synthetic_gguf.py llama-3.2-1b q4_0 "$B1_Q4_0"
  fkv_check_gguf "$B1_BF16" && fkv_check_gguf "$B1_Q4_0"
  LLAMACPP_JOBS=2 bash tools/scripts/compare_llamacpp.sh build
  lscpu >"$OUT/machine.txt"
  git rev-parse HEAD >"$OUT/commit.txt"
}

# The synthetic GGUFs load in fastkv (a bad file fails here, not hours later).
fkv_check_gguf() { "$FASTKV" bench --model "$1" -p 8 -n 1 -r 1 --warmup 0 --quiet >/dev/null; }

# Prefill rows at 512/2K/8K and decode rows at the same depths, fullkv and FastKV.
bench_table() {
  local model=$1 name=$2 depths=$3
  bench --model "$model" -p "$P_SHORT" -n 0 -m fullkv -m "$FASTKV_SPEC" -r 3 -o json \
    --out-file "$OUT/$name.prefill_short.json"
  bench --model "$model" -p "$P_LONG" -n 0 -m fullkv -m "$FASTKV_SPEC" -r 2 -o json \
    --out-file "$OUT/$name.prefill_8k.json"
  bench --model "$model" -p 0 -d "$depths" -n 32 -m fullkv -m "$FASTKV_SPEC" --fill random \
    -r 3 -o json --out-file "$OUT/$name.decode.json" --plot "$OUT/$name.decode.png"
}
# SmolLM2's context is 8192: its long rows stop 64 tokens short so the decoded token fits.
section_smollm2() { P_LONG=${P_LONG_SMOL} bench_table "$SMOL" smollm2 "$D_SMOL"; }
section_b1_bf16() { bench_table "$B1_BF16" b1_bf16 "$D_1B"; }
section_b1_q4_0() { bench_table "$B1_Q4_0" b1_q4_0 "$D_1B"; }

section_speedup() {
  bench --model "$B1_BF16" -p "$P_SPEED" -n 0 -m fullkv -m "$FASTKV_SPEC" -r 2 -o json \
    --out-file "$OUT/speedup.prefill.json" --plot "$OUT/speedup.prefill.png"
  bench --model "$B1_BF16" -p 0 -d "$D_SPEED" -n 32 -m fullkv -m "$FASTKV_SPEC" --fill random \
    -r 3 -o json --out-file "$OUT/speedup.decode.json"
}

section_memory() {
  bench --model "$B1_BF16" -p "$P_MEM" -n 1 -m fullkv -m "$FASTKV_SPEC" -r 1 --warmup 0 -o json \
    --out-file "$OUT/memory.json"
}

# The pool's idle wait (FASTKV_POOL_SPIN_US), idle and with one core held by another process.
POOL_SPINS="0 100 1000"
section_pool() {
  for busy in 0 1; do
    HOG=""
    if [[ $busy == 1 ]]; then
      yes >/dev/null &
      HOG=$!
      trap 'if [[ -n "${HOG:-}" ]]; then kill "$HOG" 2>/dev/null || true; fi' EXIT
      sleep 1
    fi
    for spin in $POOL_SPINS; do
      FASTKV_POOL_SPIN_US=$spin "$FASTKV" bench --model "$SMOL" -t "$THREADS" -p 0 -d 512 -n 64 \
        --fill random -r 3 -o json --out-file "$OUT/pool.spin$spin.busy$busy.json"
    done
    if [[ -n "$HOG" ]]; then kill "$HOG"; HOG=""; fi
  done
}

section_llamacpp() {
  bash tools/scripts/compare_llamacpp.sh run "$SMOL" "$OUT" -p "$P_SHORT,$P_LONG_SMOL" -d "$D_SMOL" \
    -n 32 -t "$THREADS" -r 3 --label smollm2
  bash tools/scripts/compare_llamacpp.sh run "$B1_BF16" "$OUT" -p "$P_SHORT,$P_LONG" -d "$D_1B" \
    -n 32 -t "$THREADS" -r 2 --label b1_bf16
  bash tools/scripts/compare_llamacpp.sh run "$B1_Q4_0" "$OUT" -p "$P_SHORT,$P_LONG" -d "$D_1B" \
    -n 32 -t "$THREADS" -r 2 --label b1_q4_0
}

section_e2e() {
  local lb
  lb=$(bash tools/scripts/compare_llamacpp.sh path)
  "$lb" -m "$B1_BF16" -pg "$P_E2E,$N_E2E" -p 0 -n 0 -t "$THREADS" -r 2 -fa 1 -ctk f16 -ctv f16 -o json \
    >"$OUT/e2e.llamacpp.json.tmp"
  mv "$OUT/e2e.llamacpp.json.tmp" "$OUT/e2e.llamacpp.json"
  bench --model "$B1_BF16" -p "$P_E2E" -n "$N_E2E" -m fullkv -m "$FASTKV_SPEC" -r 2 -o json \
    --out-file "$OUT/e2e.fastkv.json"
}

# B sequences filled to the same depth (random K/V through each method's selection), then -n steps
# of decode_batch: aggregate decode tok/s against one sequence (issue 9's 8-vs-1 target, here
# without HTTP; docs/SERVING.md has the server's own figures).
section_batch() {
  bench --model "$SMOL" -p 0 -d "$D_BATCH" -n 64 -b 1,4,8 -m fullkv -m "$FASTKV_SPEC" --fill random \
    -r 2 -o json --out-file "$OUT/batch.smollm2.json"
  bench --model "$B1_Q4_0" -p 0 -d "$D_BATCH" -n 32 -b 1,4,8 -m fullkv -m "$FASTKV_SPEC" \
    --fill random -r 2 -o json --out-file "$OUT/batch.b1_q4_0.json"
}

# Every method's prefill at the long length (default options; FastKV with the figures' spec).
section_methods() {
  bench --model "$SMOL" -p "$P_LONG_SMOL" -n 0 -m fullkv,snapkv,pyramidkv,adakv,streamingllm,h2o \
    -m gemfilter -m pyramidinfer -m "$FASTKV_SPEC" -r 2 -o json --out-file "$OUT/methods.json"
}

sections=("$@")
[[ ${#sections[@]} -gt 0 ]] || read -r -a sections <<<"$ALL_SECTIONS"
for s in "${sections[@]}"; do
  [[ $s == report ]] && continue
  [[ " $ALL_SECTIONS " == *" $s "* ]] || { echo "run_perf.sh: unknown section '$s' ($ALL_SECTIONS report)" >&2; exit 2; }
  if [[ $s != setup && ! -f "$OUT/setup.done" ]]; then run_section setup; fi
  run_section "$s"
done
python3 tools/scripts/perf_report.py "$OUT" "$REPORT"
