"""Parse rates: per benchmark in the metrics (benchmark_scoring.score_rows), per MCQA benchmark in the
summary, and the flag on a lane whose parse rate falls below the base's (report.py). Stdlib only:
the plot, which needs matplotlib, is left out."""
import csv
import json

import pytest

from workflow_scripts.evaluation import answers, benchmark_scoring
from workflow_scripts.scoring import report

OPTIONS = ["사과", "배", "감", "귤"]
BENCHMARKS = {
    "mc": {"kind": "mcqa", "metric": "accuracy", "weight": 1.0},
    "lq": {"kind": "longqa", "metric": "f1", "weight": 1.0},
    "mt": {"kind": "mtbench", "metric": "judge_score", "weight": 1.0},
}
SPEC = {"benchmarks": BENCHMARKS, "speed": {"score_uses": "server"}}
MC_ITEMS = [{"id": f"q{i}", "question": "?", "options": OPTIONS, "answer": 1 + i % 4} for i in range(20)]
LQ_ITEMS = [{"id": "l0", "context": "", "question": "?", "answer": "요가"}]
MT_ITEMS = [{"id": "t0", "turns": ["1", "2"], "reference": None}]
ECHO = "(A) 사과 (B) 배 (C) 감 (D) 귤"


def test_parse_rate_is_the_share_of_rows_with_an_answer():
    assert answers.parse_rate([]) is None
    rows = [{"parsed": 3}, {"parsed": None}, {"parsed": ""}, {"parsed": "요가"}, {"parsed": 7.0}]
    assert answers.parse_rate(rows) == pytest.approx(3 / 5)


def test_score_rows_puts_the_parse_rate_in_each_benchmark_entry():
    rows = [{"id": "q0", "response": "정답: A"}, {"id": "q1", "response": ECHO}]
    entry = benchmark_scoring.score_rows(BENCHMARKS["mc"], MC_ITEMS, rows)
    assert entry["parse_rate"] == 0.5 and entry["value"] == 0.5
    assert rows[1]["options"] == OPTIONS  # kept for `answers --explain`
    lq = benchmark_scoring.score_rows(BENCHMARKS["lq"], LQ_ITEMS, [{"id": "l0", "response": "<think>...</think>"}])
    assert lq["parse_rate"] == 0.0
    turns = [{"id": "t0", "turn": t, "response": "x"} for t in (1, 2)]
    assert benchmark_scoring.score_rows(BENCHMARKS["mt"], MT_ITEMS, turns, None, "no judge configured")["parse_rate"] is None
    ratings = {("t0", 1): {"rating": 7.0, "judge_response": "[7]"}, ("t0", 2): {"rating": None, "judge_response": "?"}}
    assert benchmark_scoring.score_rows(BENCHMARKS["mt"], MT_ITEMS, turns, ratings)["parse_rate"] == 0.5


@pytest.mark.parametrize("lane,base,flagged", [
    (0.90, 0.95, False),      # 5 points: not more than 5
    (0.89, 0.95, True),
    (0.50, None, False),      # no base rate to compare with
    (None, 0.95, False),
    (1.00, 0.95, False),
])
def test_parse_flag_threshold(lane, base, flagged):
    flag = report.parse_flag({"mc_parse_rate": lane}, {"mc_parse_rate": base})
    assert (flag is not None) == flagged
    if flagged:
        assert flag == f"mc {lane:.1%} vs base {base:.1%}"


def _write_items(path, responses):
    """A hand-made <lane>.items.jsonl: one MCQA row per response."""
    rows = [{"benchmark": "mc", "id": it["id"], "prompt": "p", "response": r, "tokens": 4}
            for it, r in zip(MC_ITEMS, responses)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _metrics_from_items(path, lane):
    """The metrics evaluate.py writes for these rows: scored as it scores them."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    entry = benchmark_scoring.score_rows(BENCHMARKS["mc"], MC_ITEMS, rows)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return {"lane": lane, "status": "ok", "reason": None,
            "benchmarks": {"mc": entry, "lq": {"metric": "f1", "value": 0.5, "weight": 1.0},
                           "mt": {"metric": "judge_score", "value": None, "weight": 1.0, "note": "no judge configured"}},
            "speed": {"server_sec_per_token": 0.004}, "size_bytes": 1}


def test_summary_shows_parse_rates_and_flags_a_lane_below_the_base(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "plot_pareto", lambda path, rows: None)  # matplotlib: tested in test_report
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    right = [f"정답: {'ABCD'[it['answer'] - 1]}" for it in MC_ITEMS]
    responses = {
        "base": right,
        "echoes": [ECHO] * 3 + right[3:],                 # 85%: 15 points below the base
        "terse": ["모르겠습니다."] + right[1:],             # 95%: within 5 points
    }
    for lane, rs in responses.items():
        items = metrics_dir / f"{lane}.items.jsonl"
        _write_items(items, rs)
        (metrics_dir / f"{lane}.json").write_text(json.dumps(_metrics_from_items(items, lane)))
    lanes = {"base": [], "echoes": ["gptq"], "terse": ["awq"], "notrun": ["prune"]}
    report.write_summary(lanes, metrics_dir, tmp_path / "logs", tmp_path / "benchmarks", tmp_path, SPEC)

    with open(tmp_path / "summary.csv", newline="") as f:
        rows = {r["lane"]: r for r in csv.DictReader(f)}
    assert "mc_parse_rate" in rows["base"] and "lq_parse_rate" not in rows["base"]  # MCQA benchmarks only
    assert [rows[l]["mc_parse_rate"] for l in ("base", "echoes", "terse", "notrun")] == ["1", "0.85", "0.95", ""]
    assert rows["echoes"]["parse_flag"] == "mc 85.0% vs base 100.0%"
    assert rows["base"]["parse_flag"] == rows["terse"]["parse_flag"] == rows["notrun"]["parse_flag"] == ""

    md = (tmp_path / "summary.md").read_text()
    assert "| mc_parse_rate |" in md and "| 85.0% |" in md
    notes = [line for line in md.splitlines() if "parse rate more than 5 points" in line]
    assert len(notes) == 1 and notes[0].startswith("- **echoes**")
    assert f"--explain {metrics_dir / 'echoes.items.jsonl'}" in notes[0]
    # ... and the command it names shows why: three echoed option lists.
    explained = answers.explain([json.loads(l) for l in (metrics_dir / "echoes.items.jsonl").read_text().splitlines()])
    assert explained[-1] == "# mc: parse rate 85.0% (17/20); marker 17, echo 3"
