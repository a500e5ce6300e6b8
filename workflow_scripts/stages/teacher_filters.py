"""Filters for teacher-generated training rows (workflow_scripts/stages/teacher.py). Stdlib only, pure
functions, so each rule is easy to test with hand-made rows.

Every candidate ends in exactly one bucket -- kept, or the first reason of REASONS that drops
it -- so the report's counts add up to the number of prompts:

    kept, counts = filter_candidates(candidates, cfg)
    assert len(kept) + sum(counts.values()) == len(candidates)

A candidate: {"kind": "chat" | "qa", "prompt": text whose language the response must match,
"messages": the prompt conversation (chat) or [] (qa), "response", "finish_reason",
"skipped": a reason set before generation (prompt too long), ...provenance}.
"""
from __future__ import annotations

import json
import re
import unicodedata

# In the order they are tried: a row is counted under the first that applies.
REASONS = ["prompt_too_long", "empty", "truncated", "repetition", "language", "too_short", "too_long",
           "qa_unparsed", "benchmark_overlap", "exact_duplicate", "near_duplicate"]

# A unit of 10-80 characters repeated 4+ times in a row: a decoding loop ("네, 알겠습니다. " x 20).
_LOOP = re.compile(r"(.{10,80}?)\1{3,}", re.S)
# The fewest n-grams for the distinct-share check: short answers repeat words legitimately.
MIN_NGRAMS = 16
_QA = re.compile(r"(?:질문|Question|Q)\s*[:：]\s*(?P<q>.+?)\s*(?:답변|답|Answer|A)\s*[:：]\s*(?P<a>.+)", re.S | re.I)


def hangul_ratio(text: str) -> float:
    """Share of Hangul among the letters of `text` (0 when it has no letters)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for c in letters if unicodedata.name(c, "").startswith("HANGUL")) / len(letters)


def distinct_ngram_ratio(text: str, n: int) -> float:
    """Distinct / total word n-grams (1.0 for texts with fewer than MIN_NGRAMS of them)."""
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if len(grams) < MIN_NGRAMS:
        return 1.0
    return len(set(grams)) / len(grams)


def is_loop(text: str, cfg) -> bool:
    """A repeated span, or too few distinct word n-grams."""
    if _LOOP.search(text):
        return True
    return distinct_ngram_ratio(text, cfg["ngram"]) < cfg["min_distinct_ngrams"]


def response_problem(prompt: str, response: str, finish_reason, cfg) -> str | None:
    """The first reason (of REASONS) to drop a response to `prompt`, or None to keep it."""
    text = response.strip()
    if not text:
        return "empty"
    if cfg["drop_truncated"] and finish_reason == "length":
        return "truncated"
    if is_loop(text, cfg):
        return "repetition"
    if hangul_ratio(prompt) >= cfg["korean_prompt_ratio"] and hangul_ratio(text) < cfg["min_hangul_ratio"]:
        return "language"
    if len(text) < cfg["min_chars"]:
        return "too_short"
    if len(text) > cfg["max_chars"]:
        return "too_long"
    return None


def parse_qa(text: str):
    """(question, answer) from '질문: ...\\n답변: ...' (or Question/Answer), or None."""
    m = _QA.search(text)
    if not m:
        return None
    q, a = m.group("q").strip(), m.group("a").strip()
    return (q, a) if q and a else None


def normalize(text: str) -> str:
    """Text for near-duplicate detection: NFKC, case-folded, only letters and digits kept."""
    return "".join(c for c in unicodedata.normalize("NFKC", text).casefold() if c.isalnum())


def final_messages(cand):
    """The training conversation of a candidate that passed the response checks, or None when
    a qa response does not parse into a question and an answer."""
    if cand["kind"] == "qa":
        qa = parse_qa(cand["response"])
        if qa is None:
            return None
        return [{"role": "user", "content": qa[0]}, {"role": "assistant", "content": qa[1]}]
    return [*cand["messages"], {"role": "assistant", "content": cand["response"].strip()}]


def filter_candidates(candidates, cfg, benchmarks=None):
    """(kept rows, {reason: count} for every reason of REASONS). A kept row is the candidate with
    its final `messages`; duplicates keep their first occurrence. `cfg`: config teacher.filters,
    validated (the schema holds the defaults). `benchmarks`: a decontamination.BenchmarkIndex; a
    row sharing an n-gram with a benchmark is dropped."""
    counts = dict.fromkeys(REASONS, 0)
    kept, exact, near = [], set(), set()
    for cand in candidates:
        reason = cand.get("skipped") and "prompt_too_long"
        reason = reason or response_problem(cand["prompt"], cand["response"], cand.get("finish_reason"), cfg)
        messages = None if reason else final_messages(cand)
        if not reason and messages is None:
            reason = "qa_unparsed"
        if not reason and benchmarks is not None and any(benchmarks.match(m["content"]) for m in messages):
            reason = "benchmark_overlap"
        if not reason:
            exact_key = json.dumps(messages, ensure_ascii=False, sort_keys=True)
            near_key = "\x1f".join(normalize(m["content"]) for m in messages if m["role"] != "system")
            reason = "exact_duplicate" if exact_key in exact else "near_duplicate" if near_key in near else None
            exact.add(exact_key)
            near.add(near_key)
        if reason:
            counts[reason] += 1
        else:
            kept.append({**cand, "messages": messages})
    return kept, counts
