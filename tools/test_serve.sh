#!/usr/bin/env bash
# End-to-end tests of `fastkv serve` (tests/serve/test_serve.py) with the official `openai` client
# and raw HTTP, on 127.0.0.1 only, every loop bounded, every server stopped at the end.
# Usage: tools/test_serve.sh [FASTKV_BINARY] (default build/fastkv). Prints a closing
# "serve tests: N passed, M failed" line; exits non-zero on any failure.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="${1:-build/fastkv}"
if [[ ! -x "$bin" ]]; then
  echo "test_serve: no fastkv binary at $bin (build first)"
  echo "serve tests: 0 passed, 1 failed"
  exit 1
fi
# The official OpenAI Python client (PyPI), the client most users' tools are built on.
if ! python3 -c "import openai" >/dev/null 2>&1; then
  python3 -m pip install -q openai
fi
# Bounded: the suite takes ~20 s on 2 cores; a hang fails instead of blocking CI.
timeout 300 python3 tests/serve/test_serve.py "$bin"
