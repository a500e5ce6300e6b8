"""Decontamination: word n-gram overlap between training text and the benchmark items (their
questions, contexts and turns; benchmark_kinds.Kind.texts), as evaluation harnesses check it
(13-grams by default, GPT-3 / lm-evaluation-harness style). Stdlib only: the data stage checks the
SFT rows with it, and the teacher filters can check teacher outputs with the same index.

    index = BenchmarkIndex({"kmmlu_pro": items, ...}, kinds={"kmmlu_pro": "mcqa", ...}, n=13)
    index.match(text)  # the first benchmark sharing an n-gram with text, or None
"""
from __future__ import annotations

import unicodedata

from workflow_scripts.evaluation.benchmark_kinds import KINDS

NGRAM = 13
# A benchmark text shorter than n words is matched as a whole word sequence, if it has at least
# this many words (shorter ones, "1+1은?", would match ordinary chat text by chance).
MIN_WORDS = 8
ACTIONS = ("drop", "report")


def words(text: str) -> list:
    """Normalized words: NFKC, case-folded, punctuation and symbols as spaces."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(c if c.isalnum() or c.isspace() else " " for c in text).split()


def _grams(ws, n):
    return {hash(tuple(ws[i:i + n])) for i in range(len(ws) - n + 1)}


class BenchmarkIndex:
    """The n-grams of every benchmark's texts (hashed: Ko-LongRAG's contexts hold millions)."""

    def __init__(self, items_by_bench: dict, kinds: dict, n: int = NGRAM):
        self.n = n
        self.grams = {}   # bench -> hashes of its n-grams
        self.short = {}   # bench -> {length: hashes of whole texts shorter than n words}
        for name, items in sorted(items_by_bench.items()):
            grams, short = set(), {}
            for item in items:
                for text in KINDS[kinds[name]].texts(item):
                    ws = words(text)
                    if len(ws) >= n:
                        grams |= _grams(ws, n)
                    elif len(ws) >= MIN_WORDS:
                        short.setdefault(len(ws), set()).add(hash(tuple(ws)))
            self.grams[name], self.short[name] = grams, short

    def match(self, text: str):
        """The first benchmark (by name) that shares an n-gram (or a whole short text) with
        `text`, or None."""
        ws = words(text)
        mine = _grams(ws, self.n)
        lengths = {k for short in self.short.values() for k in short}
        mine_short = {k: _grams(ws, k) for k in lengths}
        for name in self.grams:
            if mine & self.grams[name] or any(mine_short[k] & h for k, h in self.short[name].items()):
                return name
        return None


def check_rows(rows, index: BenchmarkIndex, action: str):
    """(rows kept, report) for SFT-style rows ({"id", "messages"}): a row overlaps when one of its
    messages does. action 'drop' leaves overlapping rows out; 'report' keeps them and counts."""
    if action not in ACTIONS:
        raise ValueError(f"decontamination action {action!r}: expected one of {list(ACTIONS)}")
    kept, by_bench, ids = [], {}, []
    for row in rows:
        hit = next((b for m in row["messages"] if (b := index.match(m["content"]))), None)
        if hit:
            by_bench[hit] = by_bench.get(hit, 0) + 1
            ids.append(row["id"])
        if not hit or action == "report":
            kept.append(row)
    report = {"ngram": index.n, "action": action, "checked": len(rows), "overlapping": len(ids),
              "dropped": len(ids) if action == "drop" else 0, "by_benchmark": dict(sorted(by_bench.items())),
              "example_ids": ids[:10]}
    return kept, report
