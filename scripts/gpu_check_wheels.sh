#!/usr/bin/env bash
# Download the wheels scripts/gpu_check.sh installs on a lent GPU machine without internet (which
# has torch, transformers 5 and peft, not the target's transformers 4.57.3 nor llmcompressor):
# the compress stack at envs/compress.lock.txt's versions, into the git-ignored gpu_wheels/
# (Linux x86_64; PYVER=3.12 for another Python: the machine's python3 must match). The run tool carries at most 64 MiB: the total is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
# pyarrow (datasets' dependency, 54 MB) would break the 64 MiB: the machine's own is used, and
# scripts/gpu_check.sh stops early if it has none.
PKGS="transformers tokenizers huggingface_hub safetensors llmcompressor compressed-tensors loguru accelerate
      peft datasets dill multiprocess xxhash nvidia-ml-py"
pins=()
for p in $PKGS; do
  pin=$(grep -iE "^${p//[-_]/[-_]}==" envs/compress.lock.txt) || { echo "envs/compress.lock.txt: no pin for $p" >&2; exit 2; }
  pins+=("$pin")
done
rm -rf gpu_wheels && mkdir gpu_wheels
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "${PYVER:-3.11}" --platform manylinux2014_x86_64 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d gpu_wheels "${pins[@]}"
du -sh gpu_wheels
total=$(du -sb gpu_wheels | cut -f1)
[ "$total" -le $((64 * 1024 * 1024)) ] || echo "warning: gpu_wheels/ is over 64 MiB ($total bytes)" >&2
