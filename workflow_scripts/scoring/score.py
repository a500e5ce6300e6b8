"""The contest Score of a lane against the base model (docs/metrics.md, "Score").

    Perf      = weighted mean of the benchmark values that are not null
    PerfNorm  = Perf / Perf_base
    SpeedNorm = 1 - spt / spt_base          (spt: seconds per generated token; with
                                             speed.score_uses paired, the time ratio to the
                                             base timed beside it in the same process)
    Score     = max(0.5 * PerfNorm + 0.5 * SpeedNorm, 0)

Pure functions on the metrics JSON dicts, stdlib only: the report (compress env) and any
serve-env code can import it. A value that cannot be computed is None, with a one-line `note`
saying why (base Perf 0, a speed missing, every benchmark null), never a crash or a NaN.
"""
from __future__ import annotations

# config `speed.score_uses` -> the key of the metrics' `speed` entry it names. `paired` is not in
# seconds: it is the model's micro-benchmark time over the base's, run by run in one process, so
# SpeedNorm = 1 - ratio / ratio_base (the base's ratio to a second engine of itself: about 1).
SPEED_KEYS = {"server": "server_sec_per_token", "micro": "micro_sec_per_token", "paired": "paired_speed_ratio"}


def _number(x):
    """A finite float, or None (null, missing, NaN, not a number)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if x == x and x not in (float("inf"), float("-inf")) else None


def benchmark_values(metrics: dict, benchmarks_spec: dict | None = None) -> dict:
    """{benchmark: value or None} for the configured benchmarks (or those in the metrics)."""
    found = (metrics or {}).get("benchmarks") or {}
    names = list(benchmarks_spec) if benchmarks_spec else list(found)
    return {name: _number((found.get(name) or {}).get("value")) for name in names}


def perf(metrics: dict, benchmarks_spec: dict | None = None):
    """Weighted mean of the non-null benchmark values; None when every value is null.

    Weights come from the config's benchmark spec, else from the metrics entry, else 1."""
    found = (metrics or {}).get("benchmarks") or {}
    total = weight_sum = 0.0
    for name, value in benchmark_values(metrics, benchmarks_spec).items():
        if value is None:
            continue
        spec = (benchmarks_spec or {}).get(name) or {}
        weight = _number(spec.get("weight", (found.get(name) or {}).get("weight", 1.0)))
        weight = 1.0 if weight is None else weight
        total += weight * value
        weight_sum += weight
    return total / weight_sum if weight_sum > 0 else None


def spt(metrics: dict, score_uses: str = "server"):
    """Seconds per generated token (or the paired ratio), as `speed.score_uses` names it; None if missing."""
    if score_uses not in SPEED_KEYS:
        raise ValueError(f"speed.score_uses: expected one of {sorted(SPEED_KEYS)}, got {score_uses!r}")
    value = _number(((metrics or {}).get("speed") or {}).get(SPEED_KEYS[score_uses]))
    return value if value is not None and value > 0 else None


def score_row(lane_metrics: dict, base_metrics: dict | None, spec: dict) -> dict:
    """Perf, PerfNorm, SpeedNorm, Score (and the spt used) of one lane against the base.

    `spec` holds config `benchmarks` and `speed`. Any part that cannot be computed is None and
    `note` says why; Score needs both PerfNorm and SpeedNorm."""
    benchmarks = spec.get("benchmarks") or {}
    uses = (spec.get("speed") or {}).get("score_uses", "server")
    row = {"Perf": perf(lane_metrics, benchmarks), "spt": spt(lane_metrics, uses),
           "PerfNorm": None, "SpeedNorm": None, "Score": None, "note": None}
    notes = []
    base_perf = perf(base_metrics, benchmarks) if base_metrics else None
    base_spt = spt(base_metrics, uses) if base_metrics else None

    if base_metrics is None:
        notes.append("base model not evaluated: nothing to normalise against")
    elif base_perf is None or base_perf <= 0:
        notes.append(f"base Perf is {base_perf}: PerfNorm undefined")
    elif row["Perf"] is None:
        notes.append("every benchmark value is null: no Perf")
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
