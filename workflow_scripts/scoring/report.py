"""Score every lane against the base, rank them, and write summary.csv, summary.md, pareto.png.

    python -m workflow_scripts.scoring.report --metrics-dir results/metrics --lanes JSON --spec JSON \
        --logs-dir results/logs --bench-dir results/benchmarks --out-dir results

--lanes: {"base": [], "w4a16": ["gptq_w4a16"], ...} (every lane of the run, base included).
--spec:  config `benchmarks` and `speed` (weights, speed.score_uses), and the resolved `sweeps`.

One row per lane. A lane whose metrics file is missing (a job of its chain failed, or never ran)
still gets a row, with the log to read. `write_summary` is also what Snakemake's onerror handler
calls, with some metrics missing, so it must never fail on a missing or broken lane.

The parts: score (the Score), noise and ranking (intervals, tie-aware rank), traces (logs and
costs), parse_flags, training_column, search (the sweeps), tables (csv, md), plot (pareto.png).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from workflow_scripts.common import StageError, run_cli
from workflow_scripts.planning.config import BASE, chain_dir
from workflow_scripts.scoring import noise
from workflow_scripts.scoring.parse_flags import parse_flag, parse_rates
from workflow_scripts.scoring.plot import plot_pareto
from workflow_scripts.scoring.ranking import STATUS_ORDER, add_intervals, noise_lines, rank_rows, speed_reference
from workflow_scripts.scoring.score import benchmark_values, number, raw_values, score_row
from workflow_scripts.scoring.search import search_lines
from workflow_scripts.scoring.tables import columns, write_csv, write_md
from workflow_scripts.scoring.traces import lane_cost, last_line, newest_log
from workflow_scripts.scoring.training_column import training_cell


def read_metrics(metrics_dir, lane):
    """(metrics dict or None, reason when it could not be read)."""
    path = Path(metrics_dir) / f"{lane}.json"
    if not path.is_file():
        return None, "no metrics file"
    try:
        return json.loads(path.read_text()), None
    except (OSError, json.JSONDecodeError) as e:
        return None, f"metrics file {path} is unreadable ({e})"


def with_statistic(read, statistic):
    """read_metrics' result with the speed figures as speed.statistic of the runs."""
    metrics, error = read
    if metrics and metrics.get("speed"):
        metrics["speed"] = noise.with_statistic(metrics["speed"], statistic)
    return metrics, error


def target_verdict(metrics_dir, lane):
    """The summary's `target` cell: 'ok', or why the deployment target would reject the lane's
    model (workflow_scripts.shipping.target_check wrote METRICS/<lane>.target.json)."""
    path = Path(metrics_dir) / f"{lane}.target.json"
    if not path.is_file():
        return "not checked (no target check result)"
    try:
        verdict = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return f"not checked ({path} is unreadable: {e})"
    return "ok" if verdict.get("ok") else verdict.get("reason") or "rejected"


def lane_row(lane, chain, metrics, read_error, base, recheck, spec, dirs):
    """One summary row; `base` and `recheck` are the base's two timed processes (None if absent)."""
    metrics_dir, logs_dir, bench_dir = dirs
    benchmarks = spec.get("benchmarks") or {}
    row = {c: None for c in columns(benchmarks)}
    row.update(lane=lane, chain=">".join(chain), model=chain_dir(chain), **lane_cost(bench_dir, lane, chain))
    row["target"] = target_verdict(metrics_dir, lane)
    log = newest_log(logs_dir, lane, chain)
    row["log"] = str(log) if log else None

    if metrics is None:
        # No metrics: a job of its chain failed (its log says why) or nothing of it ran yet.
        if log is None and read_error == "no metrics file":
            row.update(status="missing", reason="no metrics file and no log: not run")
        elif log is None:
            row.update(status="failed", reason=read_error)
        else:
            tail = last_line(log)
            row.update(status="failed", reason=f"{read_error}; see {log}" + (f": {tail}" if tail else ""))
        return row

    status = metrics.get("status") or "ok"
    row.update(status=status if status in STATUS_ORDER else "failed", reason=metrics.get("reason"))
    row.update(benchmark_values(metrics, benchmarks))
    raw = raw_values(metrics, benchmarks)
    row.update({c: raw[c.removesuffix("_rating")] for c in row if c.endswith("_rating")})
    rates = parse_rates(metrics, benchmarks)
    row.update(rates, parse_flag=parse_flag(rates, parse_rates(base, benchmarks)))
    speed = metrics.get("speed") or {}
    for key in ("server_sec_per_token", "micro_sec_per_token", "paired_speed_ratio"):
        row[key] = number(speed.get(key))
    size = number(metrics.get("size_bytes"))
    row["size_MB"] = None if size is None else size / 1e6
    if row["status"] != "ok":
        return row  # an untimed, unsupported or failed lane has no Score

    # The base's own row is timed over the same two processes as the reference: Score 0.5 exactly.
    scored = score_row(metrics, base, spec, recheck, recheck if lane == BASE else None)
    row.update({k: scored[k] for k in ("Perf", "PerfNorm", "SpeedNorm", "Score")})
    if scored["note"]:
        row["reason"] = "; ".join(filter(None, [row["reason"], scored["note"]]))
    return row


def write_summary(lanes, metrics_dir, logs_dir, bench_dir, out_dir, spec, models_dir=None):
    """Rank every lane of `lanes` ({lane: chain}) and write summary.csv/.md and pareto.png
    into `out_dir`. Missing or broken metrics become failed/missing rows. Returns the rows.
    `models_dir` (default OUT_DIR/models) holds the stages' side files: the training column's
    before/after figures and the search section's kept layers (spec["sweeps"]: config.Plan.sweeps)."""
    out_dir = Path(out_dir)
    models_dir = Path(models_dir) if models_dir else out_dir / "models"
    out_dir.mkdir(parents=True, exist_ok=True)
    statistic = (spec.get("speed") or {}).get("statistic", "median")
    read = {lane: with_statistic(read_metrics(metrics_dir, lane), statistic) for lane in lanes}
    metrics_by_lane = {lane: m for lane, (m, _) in read.items()}
    base = metrics_by_lane.get(BASE)
    if base is not None and (base.get("status") or "ok") != "ok":
        base = None  # a base that did not evaluate cannot be the reference
    recheck, _ = with_statistic(read_metrics(metrics_dir, f"{BASE}.recheck"), statistic)
    recheck = recheck if base is not None else None
    dirs = (metrics_dir, logs_dir, bench_dir)
    rows = [lane_row(lane, list(chain), *read[lane], base, recheck, spec, dirs) for lane, chain in lanes.items()]
    for r in rows:
        r["training"] = training_cell(models_dir, list(lanes[r["lane"]]))
    reference = speed_reference(base, recheck, spec.get("speed") or {})
    add_intervals(rows, metrics_by_lane, reference)
    rows = rank_rows(rows)
    ranked = [r for r in rows if isinstance(r.get("rank"), int)]
    noise_text = noise_lines(reference, ranked, (spec.get("package") or {}).get("top_k", 3))
    write_csv(out_dir / "summary.csv", rows, columns(spec.get("benchmarks")))
    write_md(out_dir / "summary.md", rows, metrics_by_lane, spec, metrics_dir, noise_text,
             search_lines(rows, spec.get("sweeps"), lanes, models_dir))
    plot_pareto(out_dir / "pareto.png", rows)
    return rows


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metrics-dir", required=True)
    ap.add_argument("--lanes", required=True, help='JSON {"lane": [recipe, ...]}, base included')
    ap.add_argument("--spec", required=True, help="JSON with config benchmarks and speed")
    ap.add_argument("--logs-dir", required=True)
    ap.add_argument("--bench-dir", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--models-dir", help="model folders (their quantize.json: the layers kept in full precision)")
    args = ap.parse_args(argv)
    try:
        lanes, spec = json.loads(args.lanes), json.loads(args.spec)
    except json.JSONDecodeError as e:
        raise StageError(f"--lanes/--spec: not valid JSON ({e})") from None
    if not isinstance(lanes, dict):
        raise StageError('--lanes: expected a JSON object {"lane": [recipe, ...]}')
    rows = write_summary(lanes, args.metrics_dir, args.logs_dir, args.bench_dir, args.out_dir, spec, args.models_dir)
    for r in rows:
        score = "" if r["Score"] is None else f"{r['Score']:.4f}"
        print(f"{str(r['rank'] or '-'):>4} {r['lane']:22s} {r['status']:11s} {score}")
    print(f"wrote {Path(args.out_dir) / 'summary.csv'}, summary.md, pareto.png")
    return 0


if __name__ == "__main__":
    run_cli(main)
