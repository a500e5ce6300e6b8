#!/usr/bin/env bash
# Build the CUDA compress and serve envs from their locks in a throwaway folder and import them:
# checks envs/serve-gpu.lock.txt and envs/torch-cuda.txt on any Linux x86_64 host with PyPI
# (installing needs no GPU; importing vLLM's CUDA build needs none either). Prints the build time
# and the disk size of each env. Usage: scripts/check_cuda_envs.sh [FOLDER] (default: a temp
# folder, removed at the end; a given FOLDER is kept).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-}
if [ -z "$dir" ]; then
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
fi
start=$(date +%s)
ENVS_CUDA=1 ENVS_DIR="$dir" PYTHON=${PYTHON:-python3.11} scripts/setup_envs.sh
echo "==> built in $(( $(date +%s) - start )) s"
"$dir/.venv/bin/python" -c '
import torch, transformers, peft, llmcompressor, compressed_tensors
assert torch.version.cuda, "compress env: torch is a CPU build"
print("compress:", "torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__,
      "llmcompressor", llmcompressor.__version__, "peft", peft.__version__)'
"$dir/.venv-serve/bin/python" -c '
import torch, transformers, compressed_tensors, vllm
from vllm import LLM, SamplingParams
assert torch.version.cuda, "serve env: torch is a CPU build"
assert (vllm.__version__, transformers.__version__, compressed_tensors.__version__) == ("0.14.1", "4.57.3", "0.13.0"), \
    (vllm.__version__, transformers.__version__, compressed_tensors.__version__)
print("serve:", "torch", torch.__version__, "cuda", torch.version.cuda, "vllm", vllm.__version__,
      "transformers", transformers.__version__, "compressed-tensors", compressed_tensors.__version__)'
"$dir/.venv-serve/bin/python" -m pip check
du -sh "$dir/.venv" "$dir/.venv-serve"
du -sh "$dir"  # together: identical files are hard-linked between the envs
