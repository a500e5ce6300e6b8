#!/usr/bin/env bash
# The GPU check on a lent machine (no internet; torch, transformers 5 and peft preinstalled, no
# vLLM): a venv over the system's packages with the wheels of gpu_wheels/ (scripts/gpu_check_wheels.sh,
# carried in) on top, then scripts/gpu_check.py: GPTQ W4A16 / W8A8 at the real calibration size,
# a few bf16 KD and SFT steps, each step's time and peak GPU memory. Results in $OUT (or
# gpu_check/). Usage: scripts/gpu_check.sh [gpu_check.py options, e.g. --tiny]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_check}
venv=${GPU_CHECK_VENV:-/tmp/gpu-check-venv}
[ -d gpu_wheels ] || { echo "gpu_wheels/: missing (run scripts/gpu_check_wheels.sh where PyPI is reachable)" >&2; exit 2; }
python3 -m venv --system-site-packages "$venv"
# --no-deps: the wheels pin the compress env's versions; the rest comes from the system.
"$venv/bin/python" -m pip install -q --no-index --no-deps gpu_wheels/*.whl
"$venv/bin/python" -c "import pyarrow" || { echo "no pyarrow on this machine: datasets needs it (carry its wheel in gpu_wheels/)" >&2; exit 2; }
"$venv/bin/python" -m pip check || echo "(pip check: conflicts above are with the system's packages)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
mkdir -p "$out"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} "$venv/bin/python" scripts/gpu_check.py --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
