"""The summary's search section (workflow_scripts/scoring/search.py): the sweep's lanes on the Pareto
front, which knob moved Score most, and the layers each mixed-precision lane kept."""
import json

import pytest
from test_report import BASE, SPEC, metrics

from workflow_scripts.scoring import report, search

K, D = "keep_unquantized.most_sensitive", "dampening_frac"
# A 2 x 2 sweep around the base lane `mixed` (K=6, damp 0.01). Same speed: Score follows Perf.
KNOBS = {"mixed": {K: 6, D: 0.01},
         "mixed__k2_damp0p01": {K: 2, D: 0.01}, "mixed__k2_damp0p1": {K: 2, D: 0.1},
         "mixed__k8_damp0p01": {K: 8, D: 0.01}, "mixed__k8_damp0p1": {K: 8, D: 0.1}}
PERF = {"mixed": 0.70, "mixed__k2_damp0p01": 0.68, "mixed__k2_damp0p1": 0.50,
        "mixed__k8_damp0p01": 0.72, "mixed__k8_damp0p1": 0.52}
SWEEPS = {"mixed": {"lane": "mixed", "recipe": "gptq_mixed", "knobs": KNOBS}}


def row(lane, perf, speed):
    return {"lane": lane, "PerfNorm": perf, "SpeedNorm": speed, "Score": 0.5 * perf + 0.5 * speed}


def test_pareto_front():
    rows = [row("a", 1.0, 0.0), row("b", 0.9, 0.3), row("c", 0.8, 0.3), row("d", 0.9, 0.3),
            row("e", 0.5, 0.5), {"lane": "f", "PerfNorm": None, "SpeedNorm": None, "Score": None}]
    assert search.pareto_front(rows) == ["a", "b", "d", "e"]  # c is beaten by b; ties stay


def test_knob_effects_rank_the_knob_that_moved_score_most():
    scores = {lane: 0.5 * p for lane, p in PERF.items()}
    scores["mixed__k8_damp0p1"] = None  # not scored: left out
    (first, means, spread), (second, means2, spread2) = search.knob_effects(KNOBS, scores)
    assert first == D and second == K
    assert means == pytest.approx({"0.01": (0.70 + 0.68 + 0.72) / 6, "0.1": 0.25})
    assert spread == pytest.approx((0.70 + 0.68 + 0.72) / 6 - 0.25)
    assert list(means2) == ["2", "6", "8"]  # in numeric order
    assert means2 == pytest.approx({"6": 0.35, "2": (0.68 + 0.50) / 4, "8": 0.36})
    assert spread2 == pytest.approx(0.36 - 0.295)


def test_summary_has_the_search_section(tmp_path):
    m, models = tmp_path / "metrics", tmp_path / "models"
    m.mkdir()
    lanes = {"base": [], **{lane: [f"gptq_{lane}"] for lane in KNOBS}}
    (m / "base.json").write_text(json.dumps(BASE))
    for lane, perf in PERF.items():
        (m / f"{lane}.json").write_text(json.dumps(metrics(perf, perf, server=0.002)))
    kept = models / "base.gptq_mixed"
    kept.mkdir(parents=True)
    (kept / "quantize.json").write_text(json.dumps({"kept_layers": [0, 4], "kept_by": "the 2 largest KL in x"}))

    rows = report.write_summary(lanes, m, tmp_path / "logs", tmp_path / "bench", tmp_path,
                                {**SPEC, "sweeps": SWEEPS}, models)
    md = (tmp_path / "summary.md").read_text()
    section = md[md.index("## Search"):md.index("## Notes")]
    assert "### Sweep `mixed` (base lane mixed, recipe gptq_mixed)" in section
    table = [l for l in section.splitlines() if l.startswith("| mixed")]
    assert [l.split(" | ")[0][2:] for l in table] == sorted(PERF, key=lambda l: -PERF[l])  # by Score
    front = search.pareto_front(rows)
    assert front == ["mixed__k8_damp0p01"]  # same speed: the best Perf beats the rest
    assert "On the Pareto front of all lanes (PerfNorm, SpeedNorm): mixed__k8_damp0p01." in section
    assert "Score moved most by **dampening_frac**" in section
    assert "- **mixed**: [0, 4] (the 2 largest KL in x)" in section
    assert md.index("## Search") > md.index("| base |")  # after the ranking table
