#!/usr/bin/env bash
# Re-resolve envs/serve-gpu.lock.txt from envs/serve-gpu.txt with pip's resolver, installing
# nothing (a throwaway venv; PyPI's Linux torch wheels are the CUDA 12.8 builds). Needs Python
# 3.11 on Linux x86_64 (the lock is for that platform) and PyPI; no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv "$tmp/v"
"$tmp/v/bin/python" -m pip install -q "pip==26.3"
"$tmp/v/bin/python" -m pip install -q --dry-run --ignore-installed --report "$tmp/report.json" -r envs/serve-gpu.txt
{
  sed -n '/^#/p' envs/serve-gpu.lock.txt
  "$tmp/v/bin/python" -c 'import json, sys
rows = sorted((i["metadata"]["name"], i["metadata"]["version"]) for i in json.load(open(sys.argv[1]))["install"])
print("".join(f"{n}=={v}\n" for n, v in rows), end="")' "$tmp/report.json"
} > "$tmp/lock.txt"
mv "$tmp/lock.txt" envs/serve-gpu.lock.txt
echo "envs/serve-gpu.lock.txt: $(grep -vc '^#' envs/serve-gpu.lock.txt) packages"
