"""The contest Score of a lane against the base model (docs/metrics.md, "Score").

    Perf      = weighted mean of the benchmark values, each on 0-1 (a judge's 1-10 rating / 10),
                over the benchmarks the base has a value for
    PerfNorm  = Perf / Perf_base
    SpeedNorm = 1 - spt / spt_base          (spt: seconds per generated token, the mean of a model's
                                             processes: the base is timed twice; with
                                             speed.score_uses paired, the time ratio to the
                                             base timed beside it in the same process)
    Score     = max(0.5 * PerfNorm + 0.5 * SpeedNorm, 0)

A lane with no value for a benchmark the base has (its judge failed, say) gets no Score: a Perf
over fewer benchmarks than the base's is not comparable with it.

Pure functions on the metrics JSON dicts, stdlib only: the report (compress env) and any
serve-env code can import it. A value that cannot be computed is None, with a one-line `note`
saying why (base Perf 0, a speed missing, a benchmark missing), never a crash or a NaN.
"""
from __future__ import annotations

import math

# config `speed.score_uses` -> the key of the metrics' `speed` entry it names. `paired` is not in
# seconds: it is the model's micro-benchmark time over the base's, run by run in one process, so
# SpeedNorm = 1 - ratio / ratio_base (the base's ratio to a second engine of itself: about 1).
SPEED_KEYS = {"server": "server_sec_per_token", "micro": "micro_sec_per_token", "paired": "paired_speed_ratio"}

# A benchmark metric that is not on 0-1, and what divides it onto 0-1 before it enters Perf: a
# judge rates 1-10 (answers.RATING_RULES). Unscaled, KoMT-Bench would be ~80 % of Perf.
METRIC_SCALE = {"judge_score": 10.0}


def number(x):
    """A finite float, or None (null, missing, NaN, "NA", not a number). Numeric text counts:
    Snakemake's benchmark tsv holds text, and writes NA when a job ended before its first sample."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def raw_values(metrics: dict, benchmarks_spec: dict | None = None) -> dict:
    """{benchmark: value as the metrics hold it (a judge's mean rating 1-10) or None}."""
    found = (metrics or {}).get("benchmarks") or {}
    names = list(benchmarks_spec) if benchmarks_spec else list(found)
    return {name: number((found.get(name) or {}).get("value")) for name in names}


def benchmark_values(metrics: dict, benchmarks_spec: dict | None = None) -> dict:
    """{benchmark: value on 0-1 or None} for the configured benchmarks (or those in the metrics)."""
    found = (metrics or {}).get("benchmarks") or {}
    return {name: None if value is None else value / METRIC_SCALE.get((found.get(name) or {}).get("metric"), 1.0)
            for name, value in raw_values(metrics, benchmarks_spec).items()}


def perf(metrics: dict, benchmarks_spec: dict | None = None, over=None):
    """Weighted mean of the 0-1 benchmark values: over the benchmarks named in `over` (None when
    one of them has no value), else over those not null; None when there is nothing to average.

    Weights come from the config's benchmark spec, else from the metrics entry, else 1."""
    found = (metrics or {}).get("benchmarks") or {}
    values = benchmark_values(metrics, benchmarks_spec)
    names = [n for n, v in values.items() if v is not None] if over is None else list(over)
    total = weight_sum = 0.0
    for name in names:
        if values.get(name) is None:
            return None
        spec = (benchmarks_spec or {}).get(name) or {}
        weight = number(spec.get("weight", (found.get(name) or {}).get("weight", 1.0)))
        weight = 1.0 if weight is None else weight
        total += weight * values[name]
        weight_sum += weight
    return total / weight_sum if weight_sum > 0 else None


def spt(metrics: dict, score_uses: str = "server"):
    """Seconds per generated token (or the paired ratio), as `speed.score_uses` names it; None if missing."""
    if score_uses not in SPEED_KEYS:
        raise ValueError(f"speed.score_uses: expected one of {sorted(SPEED_KEYS)}, got {score_uses!r}")
    value = number(((metrics or {}).get("speed") or {}).get(SPEED_KEYS[score_uses]))
    return value if value is not None and value > 0 else None


def process_mean_spt(processes, score_uses: str = "server"):
    """The mean spt over a model's timed processes (metrics dicts; None entries skipped): the base
    is timed in two, before and after every lane, and both are its timing. None if none has one."""
    figures = [s for s in (spt(m, score_uses) for m in processes if m) if s is not None]
    return sum(figures) / len(figures) if figures else None


def score_row(lane_metrics: dict, base_metrics: dict | None, spec: dict, base_recheck: dict | None = None,
              lane_recheck: dict | None = None) -> dict:
    """Perf, PerfNorm, SpeedNorm, Score (and the spt used) of one lane against the base.

    `spec` holds config `benchmarks` and `speed`. `base_recheck` is the base's second timed process
    (metrics/base.recheck.json): spt_base is the mean of both. The base's own row passes it as
    `lane_recheck` too, so that it scores exactly 0.5. Any part that cannot be computed is None and
    `note` says why; Score needs both PerfNorm and SpeedNorm."""
    benchmarks = spec.get("benchmarks") or {}
    uses = (spec.get("speed") or {}).get("score_uses", "server")
    base_values = benchmark_values(base_metrics, benchmarks) if base_metrics else {}
    base_set = [n for n, v in base_values.items() if v is not None]
    row = {"Perf": perf(lane_metrics, benchmarks, base_set if base_metrics else None),
           "spt": process_mean_spt([lane_metrics, lane_recheck], uses),
           "PerfNorm": None, "SpeedNorm": None, "Score": None, "note": None}
    notes = []
    base_perf = perf(base_metrics, benchmarks, base_set) if base_set else None
    base_spt = process_mean_spt([base_metrics, base_recheck], uses) if base_metrics else None
    missing = [n for n in base_set if benchmark_values(lane_metrics, benchmarks).get(n) is None]

    if base_metrics is None:
        notes.append("base model not evaluated: nothing to normalise against")
    elif base_perf is None or base_perf <= 0:
        notes.append(f"base Perf is {base_perf}: PerfNorm undefined")
    elif missing:
        notes.append(f"no value for {', '.join(missing)}, which the base has: no Perf over the base's benchmarks, "
                     "so no Score")
    else:
        row["PerfNorm"] = row["Perf"] / base_perf

    if base_metrics is not None and base_spt is None:
        notes.append(f"base has no {SPEED_KEYS[uses]}: SpeedNorm undefined")
    elif base_metrics is not None and row["spt"] is None:
        notes.append(f"no {SPEED_KEYS[uses]}: SpeedNorm undefined")
    elif base_spt is not None:
        row["SpeedNorm"] = 1.0 - row["spt"] / base_spt

    if row["PerfNorm"] is not None and row["SpeedNorm"] is not None:
        row["Score"] = max(0.5 * row["PerfNorm"] + 0.5 * row["SpeedNorm"], 0.0)
    row["note"] = "; ".join(notes) or None
    return row
