"""Ranking the scored lanes with their timing noise: the base's timing over its two processes,
each lane's Score interval, the tie-aware rank (noise.tie_aware_order) and the summary's sentences
on what the noise decides (docs/metrics.md, "Intervals and ties")."""
from __future__ import annotations

from workflow_scripts.planning.config import BASE
from workflow_scripts.scoring import noise

# Order of lanes that have no Score, after the scored ones.
STATUS_ORDER = {"ok": 0, "untimed": 1, "unsupported": 2, "failed": 3, "missing": 4}
# The config key that sets how many runs each process times, by speed.score_uses.
RUNS_SETTING = {"server": "speed.repeats", "micro": "speed.micro_repeats", "paired": "speed.micro_repeats"}


def speed_reference(base, recheck, speed):
    """The base's timing from its two processes: {uses, statistic, runs_by_process, floor, interval}."""
    uses, statistic = speed.get("score_uses", "server"), speed.get("statistic", "median")
    runs = [noise.speed_runs(base, uses), noise.speed_runs(recheck, uses)]
    return {"uses": uses, "statistic": statistic, "runs_by_process": runs,
            "floor": noise.noise_floor(runs, statistic), "interval": noise.base_interval(runs, statistic)}


def add_intervals(rows, metrics_by_lane, reference):
    """Score_low / Score_high of each scored lane (docs/metrics.md, "Intervals and ties"), and
    reference["runs_per_process"]: the fewest timed runs any scored lane's process had."""
    counts = [len(runs) for runs in reference["runs_by_process"] if runs]
    for r in rows:
        if r["Score"] is None:
            continue
        if r["lane"] == BASE:
            lane_spt = reference["interval"]
        else:
            runs = noise.speed_runs(metrics_by_lane.get(r["lane"]), reference["uses"])
            counts += [len(runs)] if runs else []
            lane_spt = noise.lane_interval(runs, reference["floor"], reference["statistic"])
        bounds = noise.score_interval(r["PerfNorm"], lane_spt, reference["interval"])
        r["Score_low"], r["Score_high"] = bounds[:2] if bounds else (r["Score"], r["Score"])
        r["SpeedNorm_low"], r["SpeedNorm_high"] = bounds[2:] if bounds else (r["SpeedNorm"], r["SpeedNorm"])
        r["Score_range"] = f"{r['Score_low']:.4f}-{r['Score_high']:.4f}"
    reference["runs_per_process"] = min(counts) if counts else None


def rank_rows(rows):
    """Base first (the reference), then the scored lanes tie-aware (noise.tie_aware_order), then
    the rest by status."""
    base = [r for r in rows if r["lane"] == BASE]
    scored = noise.tie_aware_order([r for r in rows if r["lane"] != BASE and r["Score"] is not None])
    rest = sorted((r for r in rows if r["lane"] != BASE and r["Score"] is None),
                  key=lambda r: (STATUS_ORDER[r["status"]], r["lane"]))
    for r in base:
        r["rank"] = "ref"
    for i, r in enumerate(scored, 1):
        r["rank"] = i
    return base + scored + rest


def coverage_line(reference):
    """What the run count lets an interval claim: the chance that a process's run range holds
    its median (median_ranks), and how many runs 95 % takes."""
    n, setting = reference.get("runs_per_process"), RUNS_SETTING[reference["uses"]]
    if reference["statistic"] == "min":
        return ("With speed.statistic min a process's figure is its fastest run: its interval is the floor "
                "alone, and claims no coverage.")
    if not n:
        return "No timed runs: no intervals."
    _, coverage = noise.median_ranks(n)
    needed = next(m for m in range(2, 100) if noise.median_ranks(m)[1] >= noise.COVERAGE)
    return (f"Coverage: with {n} timed run(s) per process (`{setting}`), each run range holds its process's "
            f"median {100 * coverage:.1f} % of the time" + (
                f"; {100 * noise.COVERAGE:.0f} % takes at least {needed} runs." if coverage < noise.COVERAGE
                else f" (at least {100 * noise.COVERAGE:.0f} %)."))


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
                 "every lane's evaluation); spt_base is their mean.")
    k = min(top_k, len(ranked))
    decided = noise.places_decided_by_noise(ranked, k)
    own = "its fastest run" if statistic == "min" else "the run range of its median"
    return [floor + f" Score_low/Score_high: {own} per lane, widened by that floor, against the base's "
            "range over both processes. No lane is ranked above one whose range lies wholly above its own; "
            "among lanes whose ranges overlap (`tied_with`) the higher PerfNorm, which timing noise does not "
            "move, goes first.", coverage_line(reference),
            f"{decided} of the top {k} places are decided by noise (their lane's range overlaps another lane's)."]
