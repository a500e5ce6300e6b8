"""Signal and noise in the speed half of the Score (docs/metrics.md, "Intervals and ties").

Every evaluation times its benchmark generations `speed.repeats` times and its micro-benchmark
`speed.micro_repeats` times (with speed.score_uses paired, each micro run beside one of the base in
a second engine: the runs are then time ratios to the base); the base model is timed again in a
second process after every lane's evaluation. A process's figure is `speed.statistic` of its
runs: the median, or the min (the fastest run: what the code costs when nothing interrupts it;
on a shared machine the slow runs are the interruptions). From those:
  noise floor   the relative spread of the base's figure between its processes
                (|stat_1 - stat_2| / mean of both): what moving to another process, or the
                machine drifting over the run, does to one unchanged model;
  run range     what one process's runs leave open about its figure: for the median the
                distribution-free interval between order statistics [x_(j), x_(n+1-j)] with the
                largest j whose coverage 1 - 2 P(Bin(n, 1/2) < j) reaches 95 %; with fewer than 6
                runs that is [min, max], which covers the median only 1 - 2^(1-n) of the time
                (75 % for 3 runs): the summary states the coverage it has. None for the min (its
                reproducibility is the floor);
  a lane's spt  interval [range_lo * (1 - floor/2), range_hi * (1 + floor/2)]: its own
                range, widened by the floor because its single process is subject to it too;
  the base's    interval the run range of its processes' runs pooled, stretched to take in
                each process's figure (for the min: [lowest, highest] of the two mins);
  SpeedNorm     interval [1 - lane_hi / base_lo, 1 - lane_lo / base_hi], and Score's from it
                (PerfNorm is exact: greedy decoding answers the same every time).
Ranking: a lane is never ranked above one whose Score interval lies wholly above its own; within
that rule the lane with the higher PerfNorm (which noise does not move) goes first among lanes
whose intervals overlap. A lane is `tied_with` the lanes its own interval overlaps (not a chain
of overlaps), and a top-k place is decided by noise when its lane is tied with another.

Pure functions on metrics dicts and summary rows, stdlib only.
"""
from __future__ import annotations

import math
import statistics

from workflow_scripts.scoring.score import SPEED_KEYS, number

RUNS_KEYS = {"server": "server_runs_sec_per_token", "micro": "micro_runs_sec_per_token",
             "paired": "paired_ratio_runs"}


def speed_runs(metrics, uses="server"):
    """The timed repetitions of a lane's sec/token (the point value alone for older metrics)."""
    speed = (metrics or {}).get("speed") or {}
    runs = [v for v in map(number, speed.get(RUNS_KEYS[uses]) or []) if v is not None and v > 0]
    point = number(speed.get(SPEED_KEYS[uses]))
    return runs or ([point] if point and point > 0 else [])


COVERAGE = 0.95


def median_ranks(n):
    """(j, coverage): the interval [x_(j), x_(n+1-j)] of n sorted runs, with the largest j whose
    chance of holding the true median reaches COVERAGE (j = 1, [min, max], when none does), and
    that chance, 1 - 2 P(Bin(n, 1/2) < j), exact for any continuous distribution."""
    def coverage(j):
        return 1 - 2 * sum(math.comb(n, i) for i in range(j)) / 2 ** n
    j = max((j for j in range(1, n // 2 + 1) if coverage(j) >= COVERAGE), default=1)
    return j, coverage(j) if n > 1 else 0.0


def with_statistic(speed, statistic):
    """A metrics file's `speed` with each figure re-derived as `statistic` of its runs: the
    statistic is a scoring setting (the report's, not a rerun trigger of the evaluations)."""
    out = {**speed, "statistic": statistic}
    for uses, key in RUNS_KEYS.items():
        runs = [v for v in map(number, speed.get(key) or []) if v is not None and v > 0]
        if runs:
            out[SPEED_KEYS[uses]] = figure(runs, statistic)
    return out


def median_interval(runs):
    """The distribution-free confidence interval of the median (median_ranks): [min, max] up to
    8 runs, then narrower (the 22nd..39th of 60)."""
    ordered = sorted(runs)
    j, _ = median_ranks(len(ordered))
    return ordered[j - 1], ordered[len(ordered) - j]


# speed.statistic -> (a process's figure from its runs, the (low, high) its runs leave open)
STATISTICS = {
    "median": (statistics.median, median_interval),
    "min": (min, lambda runs: (min(runs), min(runs))),
}


def figure(runs, statistic="median"):
    """One process's sec/token: `statistic` (speed.statistic) of its runs."""
    return STATISTICS[statistic][0](runs)


def run_range(runs, statistic="median"):
    """(low, high) that one process's runs leave open about its figure."""
    return STATISTICS[statistic][1](runs)


def noise_floor(base_runs_by_process, statistic="median"):
    """Relative spread between the base's processes' figures; None with fewer than two."""
    figures = [figure(runs, statistic) for runs in base_runs_by_process if runs]
    if len(figures) < 2:
        return None
    return (max(figures) - min(figures)) / statistics.mean(figures)


def lane_interval(runs, floor, statistic="median"):
    if not runs:
        return None
    f = floor or 0.0
    lo, hi = run_range(runs, statistic)
    return lo * (1 - f / 2), hi * (1 + f / 2)


def base_interval(base_runs_by_process, statistic="median"):
    """The run range of all the base's runs pooled, stretched to take in each process's figure."""
    processes = [runs for runs in base_runs_by_process if runs]
    if not processes:
        return None
    lo, hi = run_range([r for runs in processes for r in runs], statistic)
    figures = [figure(runs, statistic) for runs in processes]
    return min(lo, *figures), max(hi, *figures)


def score_interval(perf_norm, lane_spt, base_spt):
    """(Score_low, Score_high) from PerfNorm and the two sec/token intervals; None if any is missing."""
    if perf_norm is None or not lane_spt or not base_spt:
        return None
    speed_low, speed_high = 1 - lane_spt[1] / base_spt[0], 1 - lane_spt[0] / base_spt[1]
    return (max(0.5 * perf_norm + 0.5 * speed_low, 0.0), max(0.5 * perf_norm + 0.5 * speed_high, 0.0),
            speed_low, speed_high)


def _wholly_above(a, b):
    """Row a's Score interval lies wholly above row b's."""
    return a["Score_low"] > b["Score_high"]


def overlaps(a, b):
    return not _wholly_above(a, b) and not _wholly_above(b, a)


def tie_aware_order(rows):
    """Scored rows (with Score, Score_low, Score_high, PerfNorm) in rank order. Each place goes,
    among the lanes left that no lane left lies wholly above (they all overlap one another), to
    the highest PerfNorm (then Score, then name): so no lane is ranked above one whose interval
    lies wholly above its own. Sets each row's `tied_with`: the lanes its interval overlaps."""
    left, ordered = list(rows), []
    while left:
        free = [r for r in left if not any(_wholly_above(o, r) for o in left)]
        best = min(free, key=lambda r: (-(r["PerfNorm"] or 0.0), -r["Score"], r["lane"]))
        ordered.append(best)
        left.remove(best)
    for r in ordered:
        r["tied_with"] = ";".join(o["lane"] for o in ordered if o is not r and overlaps(o, r)) or None
    return ordered


def places_decided_by_noise(ranked, k):
    """How many of the first k ranked lanes overlap another lane (`tied_with`): the places
    timing noise could change. Direct overlaps only: a chain of them says nothing."""
    return sum(1 for r in ranked[:k] if r.get("tied_with"))
