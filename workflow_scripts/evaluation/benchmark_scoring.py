"""Scoring a benchmark's generations: the per-item rows completed with parsed / gold / correct or
score (answers.py does the parsing), and the benchmark's entry of the metrics JSON. Stdlib only."""
from __future__ import annotations

from workflow_scripts.evaluation import answers

# What each benchmark kind is scored by (the metrics JSON names it).
METRIC_OF_KIND = {"mcqa": "accuracy", "longqa": "f1", "mtbench": "judge_score"}


def score_rows(spec, items, rows, ratings=None, judge_note=None):
    """Completes the per-item rows with parsed/gold/correct|score; returns the benchmark's
    entry: accuracy or mean F1 over items, or the mean judge rating over turns (null when there
    is no judge, with the note saying why)."""
    by_id = {str(it["id"]): it for it in items}
    entry = {"metric": METRIC_OF_KIND[spec["kind"]], "value": None, "n": len(items)}
    for row in rows:
        item = by_id[str(row["id"])]
        if spec["kind"] == "mcqa":
            row["options"] = item["options"]  # so that `answers --explain` can parse it again
            row["parsed"] = answers.parse_mcqa(row["response"], item["options"])
            row["gold"] = item["answer"]
            row["correct"] = row["parsed"] == item["answer"]
        elif spec["kind"] == "longqa":
            row["parsed"] = answers.answer_text(row["response"])
            row["gold"] = item["answer"]
            row["score"] = answers.f1_score(row["parsed"], item["answer"])
        else:
            ref = item.get("reference")
            row["gold"] = ref[row["turn"] - 1] if ref else None
            judged = (ratings or {}).get((str(row["id"]), row["turn"]), {})
            row["parsed"] = row["score"] = judged.get("rating")
            if judged:
                row["judge_response"] = judged["judge_response"]
    if spec["kind"] == "mcqa":
        entry["value"] = sum(r["correct"] for r in rows) / len(rows)
    elif spec["kind"] == "longqa":
        entry["value"] = sum(r["score"] for r in rows) / len(rows)
    else:
        got = [r["score"] for r in rows if r["score"] is not None]
        entry["value"] = sum(got) / len(got) if got else None
        if judge_note or len(got) < len(rows):
            entry["note"] = judge_note or f"{len(rows) - len(got)} of {len(rows)} turns without a rating"
    # Share of responses with an answer found (of judge responses with a rating; null without a judge).
    entry["parse_rate"] = answers.parse_rate(rows) if spec["kind"] != "mtbench" or ratings else None
    return entry
