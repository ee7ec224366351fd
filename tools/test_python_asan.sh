#!/usr/bin/env bash
# The Python suite against an AddressSanitizer + UBSan build of the module (by hand, not in CI:
# the sanitized engine build takes minutes). Python itself is not sanitized, so libasan is
# preloaded and leak checking is off (the interpreter keeps memory until exit by design).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
jobs="${FKV_JOBS:-$(nproc)}"
python3 -m venv build/pyvenv-asan
build/pyvenv-asan/bin/python -m pip install -q "scikit-build-core>=0.8" "numpy>=1.22" "pytest>=7"
rm -rf build/python-asan/dist
CMAKE_BUILD_PARALLEL_LEVEL="$jobs" build/pyvenv-asan/bin/python -m pip wheel -q \
  --no-build-isolation --no-deps -w build/python-asan/dist -C build-dir=build/python-asan/build \
  -C cmake.define.FKV_SANITIZE=ON -C cmake.build-type=RelWithDebInfo .
build/pyvenv-asan/bin/python -m pip install -q --force-reinstall --no-deps \
  build/python-asan/dist/fastkv-*.whl
LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)" \
  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  build/pyvenv-asan/bin/python -m pytest tests/python -q -p no:cacheprovider
