"""The benchmark kinds: one entry per kind holds what the workflow knows about it -- the raw
fields a set must have, the row normalizer (data prep, docs/data.md), the prompt builder (the
worker), the parser and per-row scoring, the metric and how rows add up to it (scoring), and the
texts that training data must not contain (decontamination). Stdlib only (compress and serve env).

Adding a kind is one entry in KINDS (and its name in the schema's `kind` enum, which a test
checks), plus demo items in workflow_scripts/demo/data.py; see docs/extending.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from workflow_scripts.evaluation import answers, prompts

# --- mcqa: KMMLU-Pro / KMMLU-Redux ----------------------------------------------------------

def norm_mcqa(row):
    options = row["options"]
    if not isinstance(options, list) or len(options) < 2:
        raise ValueError("field 'options' must be a list of at least 2 options")
    if len(options) > len(prompts.LETTERS):
        raise ValueError(f"field 'options' has {len(options)} options, at most {len(prompts.LETTERS)} are supported")
    try:
        answer = int(str(row["solution"]).strip())
    except ValueError:
        raise ValueError(f"field 'solution' is {row['solution']!r}, expected a 1-based option number") from None
    if not 1 <= answer <= len(options):
        raise ValueError(f"field 'solution' {answer} is outside 1..{len(options)}")
    return {"question": str(row["question"]), "options": [str(o) for o in options], "answer": answer}


def prompt_mcqa(item, template, context=None):
    return prompts.mcqa_prompt(item, template), {}


def score_mcqa(row, item, ratings=None):
    row["options"] = item["options"]  # so that `answers --explain` can parse it again
    row["parsed"] = answers.parse_mcqa(row["response"], item["options"])
    row["gold"] = item["answer"]
    row["correct"] = row["parsed"] == item["answer"]


def value_mcqa(rows):
    return sum(r["correct"] for r in rows) / len(rows), None


# --- longqa: Ko-LongRAG ---------------------------------------------------------------------

def norm_longqa(row):
    answer = row["answer"]
    if isinstance(answer, list):  # some releases list several acceptable answers
        answer = answer[0] if answer else ""
    titles = row.get("titles") or []
    if isinstance(titles, str):
        titles = [titles]
    item = {"context": str(row["context"]), "question": str(row["question"]), "answer": str(answer),
            "titles": [str(t) for t in titles]}
    if prompts.own_longqa_prompt(row.get("prompt")):  # the set's official instruction (docs/data.md)
        item["prompt"] = row["prompt"]
    return item


def prompt_longqa(item, template, context=None):
    return prompts.longqa_prompt(item, template, context), {"prompt_source": prompts.longqa_prompt_source(item)}


def score_longqa(row, item, ratings=None):
    row["parsed"] = answers.answer_text(row["response"])
    row["gold"] = item["answer"]
    row["score"] = answers.f1_score(row["parsed"], item["answer"])


def value_longqa(rows):
    return sum(r["score"] for r in rows) / len(rows), None


# --- mtbench: KoMT-Bench ----------------------------------------------------------------------

def norm_mtbench(row):
    turns = row["turns"]
    if not isinstance(turns, list) or len(turns) != 2 or not all(isinstance(t, str) and t.strip() for t in turns):
        raise ValueError("field 'turns' must be a list of 2 non-empty strings (the two user turns)")
    reference = row.get("reference")
    if reference is not None and not isinstance(reference, list):
        raise ValueError(f"field 'reference' is {type(reference).__name__}, expected a list of strings")
    # [] is no reference; an empty turn ("") is no reference for that turn (KoMT-Bench card).
    refs = [str(r) if r is not None and str(r).strip() else None for r in (reference or [])]
    refs += [None] * (len(turns) - len(refs))
    return {"category": str(row.get("category") or "general"), "turns": list(turns),
            "reference": refs[: len(turns)] if any(refs) else None}


def score_mtbench(row, item, ratings=None):
    ref = item.get("reference")
    row["gold"] = ref[row["turn"] - 1] if ref else None
    judged = (ratings or {}).get((str(row["id"]), row["turn"]), {})
    row["parsed"] = row["score"] = judged.get("rating")
    if judged:
        row["judge_response"] = judged["judge_response"]


def value_mtbench(rows):
    """The mean rating over rated turns, and a note when some turns have none."""
    got = [r["score"] for r in rows if r["score"] is not None]
    note = f"{len(rows) - len(got)} of {len(rows)} turns without a rating" if len(got) < len(rows) else None
    return (sum(got) / len(got) if got else None), note


# --- the registry ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Kind:
    fields: tuple                  # raw columns every row must have (non-null)
    normalize: Callable            # raw row -> prepared item without its id (raises ValueError)
    metric: str                    # the metrics JSON's name for the value
    score: Callable                # (row, item, ratings) -> completes the row: parsed, gold, correct|score
    value: Callable                # scored rows -> (value, note or None)
    texts: Callable                # item -> the texts training data must not overlap
    prompt: Callable | None = None  # (item, template, context) -> (user message, row extras); None: multi-turn
    id_field: str = "id"           # the raw column that names a row
    truncates_context: bool = False  # the prompt's `context` is cut to fit (benchmarks.<b>.context_tokens)
    judged: bool = False           # scored from judge ratings (none without a judge model)


KINDS = {
    "mcqa": Kind(fields=("question", "options", "solution"), normalize=norm_mcqa, metric="accuracy",
                 score=score_mcqa, value=value_mcqa, texts=lambda it: [it["question"]], prompt=prompt_mcqa),
    "longqa": Kind(fields=("context", "question", "answer"), normalize=norm_longqa, metric="f1",
                   score=score_longqa, value=value_longqa, texts=lambda it: [it["context"], it["question"]],
                   prompt=prompt_longqa, truncates_context=True),
    "mtbench": Kind(fields=("turns",), normalize=norm_mtbench, metric="judge_score", score=score_mtbench,
                    value=value_mtbench, texts=lambda it: list(it["turns"]), id_field="question_id",
                    judged=True),
}


def kind_of(name, spec):
    """The Kind of benchmark `name`'s config entry, or a one-line ValueError naming the key."""
    kind = (spec or {}).get("kind")
    if kind not in KINDS:
        raise ValueError(f"benchmarks.{name}.kind: expected one of {sorted(KINDS)}, got {kind!r}")
    return KINDS[kind]
