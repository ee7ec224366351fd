#!/usr/bin/env bash
# Writes docs/results/fidelity.md: every KV method against full KV on stories260K (prompts of
# 256-448 tokens, the model's own text) and SmolLM2-135M-Instruct (1K, 4K, 8K-token chat prompts
# over the Paul Graham essays), at retain rates 0.1, 0.2 and 0.5, 64 generated tokens each.
# Takes a while on 2 cores (mostly the 8K prompts); FKV_FIDELITY_LENGTHS overrides SmolLM2's.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
shared="${FKV_SHARED_DIR:-$root/../shared}"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target fastkv-fidelity
python3 tools/scripts/fetch_models.py smollm2-135m-instruct >/dev/null
out=docs/results/fidelity.md
mkdir -p docs/results
tmp="$(mktemp)"
{
  echo "# Fidelity of each KV method against full KV"
  echo
  echo "Written by \`bash tools/run_fidelity.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))."
  echo "Full KV greedily generates 64 tokens; every method prefills the same prompt and is"
  echo "teacher-forced along that continuation. Per step: does the method's top-1 token equal full KV's,"
  echo "and KL(full || method) of the next-token distributions. KV bytes are the sum of the rows kept"
  echo "after prefill (f32 K and V); prefill time and its ratio to full KV come from the same run."
  echo "Budgets are given as retain rates (per layer C = floor(N * r), FastKV with tsp_rate 0.2)."
  echo "The numbers are what they are. SmolLM2's \"8K\" prompt is 8000 tokens so that 64 generated"
  echo "tokens fit its 8192-token context."
  echo
} > "$tmp"
./build/fastkv-fidelity --model "$shared/models/stories260K/stories260K.gguf" --source self \
  --lengths 256,384,448 --rates 0.1,0.2,0.5 --gen 64 --out "$tmp"
./build/fastkv-fidelity --model smollm2-135m-instruct --source essays \
  --essays "$shared/data/needle/PaulGrahamEssays" \
  --lengths "${FKV_FIDELITY_LENGTHS:-1024,4096,8000}" --rates 0.1,0.2,0.5 --gen 64 --out "$tmp"
mv "$tmp" "$out"
echo "wrote $out"
