"""Timing noise (workflow_scripts/scoring/noise.py): the noise floor, Score intervals, tie-aware ranking,
and how the summary shows them (report.write_summary with hand-made metrics)."""
import csv
import json

import pytest

from workflow_scripts.scoring import noise, report


def test_noise_floor_is_the_spread_between_the_base_processes():
    assert noise.noise_floor([[0.010, 0.011, 0.009], [0.012, 0.012]]) == pytest.approx(0.002 / 0.011)
    assert noise.noise_floor([[0.010], []]) is None  # one process: unknown, not zero


def test_lane_interval_is_its_runs_widened_by_the_floor():
    lo, hi = noise.lane_interval([0.010, 0.012, 0.011], floor=0.1)
    assert lo == pytest.approx(0.010 * 0.95) and hi == pytest.approx(0.012 * 1.05)
    assert noise.lane_interval([], 0.1) is None


def test_min_statistic_reads_the_fastest_run_and_its_reproducibility_is_the_floor():
    # Slow runs are interruptions: under `min` they neither move the figure nor widen its range.
    base = [[0.0100, 0.0130, 0.0101], [0.0103, 0.0160, 0.0104]]
    assert noise.figure(base[1], "min") == 0.0103 and noise.figure(base[1]) == 0.0104
    floor = noise.noise_floor(base, "min")
    assert floor == pytest.approx(0.0003 / 0.01015)
    assert noise.base_interval(base, "min") == (0.0100, 0.0103)
    assert noise.base_interval(base) == (0.0100, 0.0160)
    lo, hi = noise.lane_interval([0.0090, 0.0140, 0.0091], floor, "min")
    assert (lo, hi) == (pytest.approx(0.0090 * (1 - floor / 2)), pytest.approx(0.0090 * (1 + floor / 2)))


def test_min_statistic_separates_lanes_that_the_median_ties():
    base = [[0.0100, 0.0130, 0.0101], [0.0103, 0.0160, 0.0104]]
    lanes = {"fast": [0.0080, 0.0120, 0.0125], "slow": [0.0095, 0.0098, 0.0130]}

    def ranked(statistic):
        floor, base_spt = noise.noise_floor(base, statistic), noise.base_interval(base, statistic)
        rows = []
        for lane, runs in lanes.items():
            spt = noise.lane_interval(runs, floor, statistic)
            score = 0.5 + 0.5 * (1 - noise.figure(runs, statistic) / noise.figure(base[0], statistic))
            low, high = noise.score_interval(1.0, spt, base_spt)[:2]
            rows.append(row(lane, score, low, high, 1.0))
        return noise.tie_aware_order(rows)

    assert all(r["tied_with"] for r in ranked("median"))
    assert [(r["lane"], r["tied_with"]) for r in ranked("min")] == [("fast", None), ("slow", None)]


def test_score_interval_brackets_the_point_score():
    base = (0.0095, 0.0105)
    lane = noise.lane_interval([0.0078, 0.008, 0.0082], floor=0.05)
    low, high, speed_low, speed_high = noise.score_interval(1.0, lane, base)
    point = 0.5 * 1.0 + 0.5 * (1 - 0.008 / 0.01)
    assert low < point < high
    assert speed_low == pytest.approx(1 - lane[1] / base[0]) and speed_high == pytest.approx(1 - lane[0] / base[1])
    assert noise.score_interval(None, lane, base) is None


def row(lane, score, low, high, perf_norm):
    return {"lane": lane, "Score": score, "Score_low": low, "Score_high": high, "PerfNorm": perf_norm}


def test_no_lane_ranks_above_one_whose_interval_lies_wholly_above_it():
    rows = [row("fast_wrong", 0.60, 0.55, 0.65, 0.90),   # overlaps accurate
            row("accurate", 0.58, 0.54, 0.62, 1.02),
            row("chained", 0.53, 0.50, 0.545, 1.00),     # overlaps accurate, wholly below fast_wrong
            row("alone", 0.40, 0.38, 0.42, 1.05)]
    ranked = noise.tie_aware_order(rows)
    # accurate first (overlaps fast_wrong, more accurate); chained may not pass fast_wrong.
    assert [r["lane"] for r in ranked] == ["accurate", "fast_wrong", "chained", "alone"]
    ties = {r["lane"]: r["tied_with"] for r in ranked}
    assert ties == {"accurate": "fast_wrong;chained", "fast_wrong": "accurate", "chained": "accurate", "alone": None}
    assert noise.places_decided_by_noise(ranked, 3) == 3
    assert noise.places_decided_by_noise(ranked[3:], 1) == 0


def test_a_chain_of_overlaps_cannot_lift_a_lane_over_a_better_interval():
    # The case of issue 20: [0.551, 0.551] was ranked above [0.75, 0.75] through a chain.
    rows = [row("exact_high", 0.75, 0.75, 0.75, 0.90),
            row("wide", 0.65, 0.551, 0.76, 0.95),        # overlaps both
            row("exact_low", 0.551, 0.551, 0.551, 1.10)]
    ranked = noise.tie_aware_order(rows)
    assert [r["lane"] for r in ranked] == ["wide", "exact_high", "exact_low"]
    for i, r in enumerate(ranked):
        assert not any(above["Score_high"] < r["Score_low"] for above in ranked[:i])
    assert ranked[1]["tied_with"] == "wide" and ranked[2]["tied_with"] == "wide"


def test_tied_with_names_direct_overlaps_not_a_chain():
    # a-b, b-c, c-d overlap: one chain across the table, but a cannot trade places with c or d.
    rows = [row("a", 0.80, 0.78, 0.82, 1.0), row("b", 0.74, 0.70, 0.785, 1.0),
            row("c", 0.66, 0.60, 0.71, 1.0), row("d", 0.58, 0.55, 0.605, 1.0), row("e", 0.40, 0.39, 0.41, 1.0)]
    ranked = noise.tie_aware_order(rows)
    assert [r["lane"] for r in ranked] == ["a", "b", "c", "d", "e"]
    assert [r["tied_with"] for r in ranked] == ["b", "a;c", "b;d", "c", None]
    assert noise.places_decided_by_noise(ranked, 1) == 1
    assert noise.places_decided_by_noise(ranked[3:], 2) == 1    # d overlaps c (above it), e nothing


def test_random_intervals_never_rank_below_a_wholly_worse_lane():
    import random
    rng = random.Random(7)
    for _ in range(200):
        rows = []
        for i in range(8):
            score = rng.uniform(0.3, 0.8)
            half = rng.uniform(0, 0.08)
            rows.append(row(f"l{i}", score, score - half, score + half, rng.uniform(0.8, 1.1)))
        ranked = noise.tie_aware_order(rows)
        for i, r in enumerate(ranked):
            assert not any(below["Score_low"] > r["Score_high"] for below in ranked[i + 1:])


def test_separate_intervals_keep_the_score_order():
    rows = [row("b", 0.55, 0.54, 0.56, 0.9), row("a", 0.60, 0.59, 0.61, 0.8)]
    assert [r["lane"] for r in noise.tie_aware_order(rows)] == ["a", "b"]


def metrics(lane, mcqa, runs, device="cpu"):
    return {"lane": lane, "status": "ok", "reason": None, "runtime": {"device": device},
            "benchmarks": {"mcqa": {"metric": "accuracy", "value": mcqa, "weight": 1.0, "parse_rate": 1.0}},
            "speed": {"server_sec_per_token": sorted(runs)[len(runs) // 2], "server_runs_sec_per_token": runs,
                      "micro_sec_per_token": None},
            "size_bytes": 1_000_000}


def test_summary_has_intervals_the_floor_and_tie_marks(tmp_path):
    d = tmp_path / "metrics"
    d.mkdir()
    lanes = {"base": [], "fast": ["q1"], "accurate": ["q2"], "slow": ["q3"]}
    files = {"base": metrics("base", 0.80, [0.0100, 0.0101, 0.0099]),
             "base.recheck": metrics("base", 0.80, [0.0104, 0.0105, 0.0103]),
             "fast": metrics("fast", 0.78, [0.0075, 0.0076, 0.0077]),       # Score 0.6075
             "accurate": metrics("accurate", 0.82, [0.0083, 0.0084, 0.0085]),  # 0.5925, tied with fast
             "slow": metrics("slow", 0.80, [0.0150, 0.0151, 0.0149])}     # far below
    for name, m in files.items():
        (d / f"{name}.json").write_text(json.dumps(m))
    spec = {"benchmarks": {"mcqa": {"weight": 1.0, "kind": "mcqa"}}, "speed": {"score_uses": "server"},
            "package": {"top_k": 2}}
    report.write_summary(lanes, d, tmp_path / "logs", tmp_path / "bench", tmp_path, spec)

    rows = {r["lane"]: r for r in csv.DictReader(open(tmp_path / "summary.csv"))}
    for lane in ("fast", "accurate", "slow"):
        assert float(rows[lane]["Score_low"]) <= float(rows[lane]["Score"]) <= float(rows[lane]["Score_high"])
    assert rows["fast"]["tied_with"] == "accurate" and rows["accurate"]["tied_with"] == "fast"
    assert rows["slow"]["tied_with"] == ""
    # Tied: the more accurate lane ranks first although its point Score is lower.
    assert float(rows["fast"]["Score"]) > float(rows["accurate"]["Score"])
    assert (rows["accurate"]["rank"], rows["fast"]["rank"], rows["slow"]["rank"]) == ("1", "2", "3")

    md = (tmp_path / "summary.md").read_text()
    floor = (0.0104 - 0.0100) / 0.0102
    assert f"moved by {100 * floor:.1f} % between its two processes" in md
    assert "2 of the top 2 places are decided by noise" in md
    assert "Speed was measured on a CPU" in md
    assert (tmp_path / "pareto.png").stat().st_size > 10_000


def test_without_a_recheck_the_floor_is_unknown(tmp_path):
    d = tmp_path / "metrics"
    d.mkdir()
    for name, m in {"base": metrics("base", 0.8, [0.01, 0.011, 0.012], device="cuda"),
                    "a": metrics("a", 0.8, [0.008, 0.0081, 0.0082], device="cuda")}.items():
        (d / f"{name}.json").write_text(json.dumps(m))
    spec = {"benchmarks": {"mcqa": {"weight": 1.0, "kind": "mcqa"}}, "speed": {"score_uses": "server"}}
    report.write_summary({"base": [], "a": ["q"]}, d, tmp_path / "logs", tmp_path / "bench", tmp_path, spec)
    md = (tmp_path / "summary.md").read_text()
    assert "Noise floor: unknown" in md and "Speed was measured on a CPU" not in md
    (a,) = [r for r in csv.DictReader(open(tmp_path / "summary.csv")) if r["lane"] == "a"]
    assert float(a["Score_low"]) < float(a["Score"]) < float(a["Score_high"])



def test_median_interval_coverage_is_exact_for_the_run_count():
    # [min, max] of n runs holds the median with probability 1 - 2 * 0.5**n: 75 % for 3 runs.
    assert noise.median_ranks(3) == (1, pytest.approx(0.75))
    assert noise.median_ranks(5) == (1, pytest.approx(0.9375))
    assert noise.median_ranks(6) == (1, pytest.approx(1 - 2 / 64))   # the fewest runs reaching 95 %
    assert noise.median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)
    assert noise.median_interval(list(range(8))) == (0, 7)     # up to 8 runs: [min, max]
    assert noise.median_interval(list(range(9))) == (1, 7)     # 2nd and 8th: 96.1 %
    # 60 runs: the 22nd and 39th smallest (97.3 %; the 23rd/38th would give 94.8 %)
    assert noise.median_interval(list(range(60, 0, -1))) == (22, 39)
    j, coverage = noise.median_ranks(60)
    assert coverage >= 0.95 and noise.median_ranks(60)[0] == 22


def test_summary_states_the_coverage_its_run_count_gives(tmp_path):
    d = tmp_path / "metrics"
    d.mkdir()
    for name, m in {"base": metrics("base", 0.8, [0.010, 0.011, 0.012]),
                    "base.recheck": metrics("base", 0.8, [0.010, 0.011, 0.012]),
                    "a": metrics("a", 0.8, [0.008, 0.0081, 0.0082])}.items():
        (d / f"{name}.json").write_text(json.dumps(m))
    spec = {"benchmarks": {"mcqa": {"weight": 1.0, "kind": "mcqa"}}, "speed": {"score_uses": "server"}}
    report.write_summary({"base": [], "a": ["q"]}, d, tmp_path / "logs", tmp_path / "bench", tmp_path, spec)
    md = (tmp_path / "summary.md").read_text()
    assert "with 3 timed run(s) per process (`speed.repeats`)" in md
    assert "median 75.0 % of the time; 95 % takes at least 6 runs" in md


def paired_metrics(lane, mcqa, ratios):
    """A lane timed beside the base (speed.score_uses paired): its runs are time ratios."""
    return {"lane": lane, "status": "ok", "reason": None, "runtime": {"device": "cpu"},
            "benchmarks": {"mcqa": {"metric": "accuracy", "value": mcqa, "weight": 1.0, "parse_rate": 1.0}},
            "speed": {"statistic": "median", "server_sec_per_token": 0.01, "micro_sec_per_token": 0.004,
                      "paired_speed_ratio": sorted(ratios)[len(ratios) // 2], "paired_ratio_runs": ratios},
            "size_bytes": 1_000_000}


def test_paired_ratios_score_against_the_base_self_ratio(tmp_path):
    d = tmp_path / "metrics"
    d.mkdir()
    # The base beside a second engine of itself: about 1, in both processes.
    files = {"base": paired_metrics("base", 0.80, [0.98, 1.00, 1.02]),
             "base.recheck": paired_metrics("base", 0.80, [1.01, 1.02, 1.03]),
             "w4": paired_metrics("w4", 0.80, [0.79, 0.80, 0.81]),       # 20 % faster: its own tie group
             "w8": paired_metrics("w8", 0.80, [1.12, 1.13, 1.14])}       # 13 % slower
    for name, m in files.items():
        (d / f"{name}.json").write_text(json.dumps(m))
    spec = {"benchmarks": {"mcqa": {"weight": 1.0, "kind": "mcqa"}},
            "speed": {"score_uses": "paired", "statistic": "median"}, "package": {"top_k": 2}}
    report.write_summary({"base": [], "w4": ["q1"], "w8": ["q2"]}, d, tmp_path / "logs", tmp_path / "bench",
                         tmp_path, spec)

    rows = {r["lane"]: r for r in csv.DictReader(open(tmp_path / "summary.csv"))}
    assert float(rows["base"]["Score"]) == pytest.approx(0.5)
    # spt_base: the mean of the base's two processes' figures (1.00 and 1.02)
    assert float(rows["w4"]["SpeedNorm"]) == pytest.approx(1 - 0.80 / 1.01, rel=1e-5)
    assert float(rows["w8"]["SpeedNorm"]) == pytest.approx(1 - 1.13 / 1.01, rel=1e-5)
    assert float(rows["w4"]["paired_speed_ratio"]) == pytest.approx(0.80)
    assert (rows["w4"]["rank"], rows["w8"]["rank"]) == ("1", "2")
    assert rows["w4"]["tied_with"] == "" and rows["w8"]["tied_with"] == ""
    md = (tmp_path / "summary.md").read_text()
    floor = (1.02 - 1.00) / 1.01
    assert f"time ratio to a second base engine beside it moved by {100 * floor:.1f} %" in md
    assert "0 of the top 2 places are decided by noise" in md and "paired_speed_ratio" in md
