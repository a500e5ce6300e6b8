"""Where a lane's jobs left their traces: its logs (the newest one, and its last line, for a
failed lane's reason) and its cost (Snakemake's benchmark records of the jobs that built it).

Looked up by path, never by file name alone: sensitivity/base.gptq_w4a16.* (an analysis of the
base) and quantize/base.gptq_w4a16.* (the w4a16 lane's model) share a name.
"""
from __future__ import annotations

import csv
from pathlib import Path

from workflow_scripts.planning.config import BASE, chain_dir
from workflow_scripts.scoring.score import number

# The rules that build a model folder <parent>.<recipe>, one per step kind, each logging to
# <logs>/<rule>/<parent>.<recipe>.log (rules/train.smk, rules/quantize.smk). A chain prefix is
# built by exactly one of them; other rules (sensitivity, target_check) are not a build job.
BUILD_RULES = ("sft", "post_sft", "prune", "kd", "quantize")
COST_COLUMNS = ["build_seconds", "cpu_seconds", "peak_rss_MB"]


def job_files(root, lane, chain, suffix):
    """Existing files under `root` (logs or benchmarks) of the lane's jobs: the build job of each
    chain prefix (the base lane: base_model), then its evaluation, evaluate/<lane><suffix>."""
    root = Path(root)
    if lane == BASE or not chain:
        builds = [root / f"base_model{suffix}"]
    else:
        builds = [root / rule / f"{chain_dir(chain[: i + 1])}{suffix}"
                  for i in range(len(chain)) for rule in BUILD_RULES]
    return [p for p in [*builds, root / "evaluate" / f"{lane}{suffix}"] if p.is_file()]


def newest_log(logs_dir, lane, chain):
    logs = job_files(logs_dir, lane, chain, ".log")
    return max(logs, key=lambda p: p.stat().st_mtime) if logs else None


def last_line(path, limit=200):
    """The last non-empty line of a log (a stage's one-line error ends there), shortened."""
    try:
        lines = [l.strip() for l in path.read_text(errors="replace").replace("\r", "\n").splitlines()]
    except OSError:
        return ""
    lines = [l for l in lines if l]
    return lines[-1][:limit] if lines else ""


def read_benchmark(path):
    """A Snakemake benchmark tsv -> (seconds, cpu_seconds, max_rss MB); repeats are averaged."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))

    def mean(key):
        vals = [v for v in (number(r.get(key)) for r in rows) if v is not None]
        return sum(vals) / len(vals) if vals else None

    rss = [v for v in (number(r.get("max_rss")) for r in rows) if v is not None]
    return mean("s"), mean("cpu_time"), max(rss) if rss else None


def lane_cost(bench_dir, lane, chain):
    """Sum of wall and CPU seconds, and the peak RSS, over the jobs that produced the lane
    (every chain prefix, so a shared prefix counts in each of its lanes, plus evaluation)."""
    seconds = cpu = peak = None
    for path in job_files(bench_dir, lane, chain, ".tsv"):
        try:
            s, c, rss = read_benchmark(path)
        except (OSError, csv.Error):
            continue
        if s is not None:
            seconds = (seconds or 0.0) + s
        if c is not None:
            cpu = (cpu or 0.0) + c
        if rss is not None:
            peak = max(peak or 0.0, rss)
    return dict(zip(COST_COLUMNS, (seconds, cpu, peak)))
