"""Scoring a benchmark's generations: the per-item rows completed with parsed / gold / correct or
score (each kind's entry in benchmark_kinds.py parses and scores), and the benchmark's entry of
the metrics JSON. Stdlib only."""
from __future__ import annotations

from workflow_scripts.evaluation import answers
from workflow_scripts.evaluation.benchmark_kinds import KINDS

# What each benchmark kind is scored by (the metrics JSON names it).
METRIC_OF_KIND = {name: kind.metric for name, kind in KINDS.items()}


def score_rows(spec, items, rows, ratings=None, judge_note=None):
    """Completes the per-item rows with parsed/gold/correct|score; returns the benchmark's
    entry: accuracy or mean F1 over items, or the mean judge rating over turns (null when there
    is no judge, with the note saying why)."""
    kind = KINDS[spec["kind"]]
    by_id = {str(it["id"]): it for it in items}
    for row in rows:
        kind.score(row, by_id[str(row["id"])], ratings)
    value, note = kind.value(rows)
    entry = {"metric": kind.metric, "value": value, "n": len(items)}
    if judge_note or note:
        entry["note"] = judge_note or note
    # Share of responses with an answer found (of judge responses with a rating; null without a judge).
    entry["parse_rate"] = answers.parse_rate(rows) if not kind.judged or ratings else None
    return entry
