"""Answer parsing and scoring for the benchmarks: MCQA option letters, token-overlap F1 with
Korean-aware normalization, and judge ratings. Stdlib only (used by evaluation in the serve env
and by the tests in either env)."""
from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter

LETTERS = "ABCDEFGHIJ"  # up to 10 options (KMMLU-Pro)


# --- reasoning blocks -------------------------------------------------------------------------

def strip_thinking(text: str) -> str:
    """The part of a response after its reasoning: text after the last </think>; a <think> that
    never closes (the model ran out of tokens while thinking) leaves only what came before it."""
    if "</think>" in text:
        return text.rsplit("</think>", 1)[1]
    if "<think>" in text:
        return text.split("<think>", 1)[0]
    return text


# --- MCQA -------------------------------------------------------------------------------------

# An option as models write it: a letter A-J or a 1-2 digit number, maybe in brackets, maybe
# followed by 번 ("option 3" in Korean). The letter/number must not run into a longer word or
# number ("Because" is not B, "1990" is not 1).
_OPT = r"[\(\[]?\s*(?P<opt>[A-Ja-j]|\d{1,2})(?![A-Za-z0-9])\s*(?P<close>[\)\]])?\s*(?:번)?"
# "정답: C", "정답은 (C)입니다", "Answer: C", "The answer is B", "답: 3", "**Final answer:** C".
_MARKER = re.compile(
    r"(?:final\s+answer|correct\s+answer|answer|정답|답)"
    r"(?:\s*(?:은|는|이|가|is|would\s+be|will\s+be))?"
    r"[\s:=*\-–>\"'“”]*(?:option|choice|보기)?\s*" + _OPT,
    re.IGNORECASE,
)
# "C가 정답입니다", "3번이 정답", "B is the answer", "(B) is correct".
_MARKER_AFTER = re.compile(
    r"(?<![A-Za-z0-9])" + _OPT +
    r"\s*(?:이|가|is|was)\s*(?:the\s+)?(?:정답|답|correct|right|answer)",
    re.IGNORECASE,
)
# The whole response is one option: "C", "(C)", "c.", "3번", "C입니다", "**B**".
_BARE = re.compile(
    r"^[\s*\"'`]*" + _OPT + r"[\s.:*\"'`]*(?:입니다|이다|예요|이에요)?[\s.!]*$", re.IGNORECASE,
)
# A response that starts with an option and goes on: "C. 서울", "B) because ...", "C\n설명".
_LEADING = re.compile(r"^[\s*]*[\(\[]?(?P<opt>[A-J])(?:[\)\].:]|\s*\n)")


def _option_number(token: str, n_options: int):
    """'C' -> 3, 'c' -> 3, '3' -> 3; None when outside the n options."""
    if token.isdigit():
        k = int(token)
    else:
        k = LETTERS.index(token.upper()) + 1
    return k if 1 <= k <= n_options else None


def _letter_is_plausible(text: str, m: re.Match) -> bool:
    """A lowercase letter, or the pronoun-like "I", counts only when bracketed or when no English
    word follows it: "the answer is a car" and "Answer: I think B" do not choose A or I, while
    "정답: c" chooses C and "The answer is C because ..." chooses C."""
    tok = m.group("opt")
    if tok.isdigit() or m.group("close") or (tok.isupper() and tok != "I"):
        return True
    rest = text[m.end():].lstrip()
    return not rest or not rest[0].isascii() or not rest[0].isalpha()


def _normalize_text(s: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", s).lower().split()).strip(" .")


def parse_mcqa(response: str, options) -> int | None:
    """The 1-based option a response chooses, or None when it states no (valid) option.

    `options` is the item's option list (or their count). Order of evidence: the last answer
    marker in the text (the final stated answer wins over earlier reasoning), a response that is
    just an option, a response that starts with an option, a response equal to one option's text.
    Reasoning inside <think>...</think> is ignored; full-width and circled characters are
    normalized (NFKC)."""
    n_options = options if isinstance(options, int) else len(options)
    text = unicodedata.normalize("NFKC", strip_thinking(response)).strip()
    if not text:
        return None

    stated = [m for rx in (_MARKER, _MARKER_AFTER) for m in rx.finditer(text)
              if _letter_is_plausible(text, m)]
    if stated:
        last = max(stated, key=lambda m: m.start("opt"))
        return _option_number(last.group("opt"), n_options)

    for rx in (_BARE, _LEADING):
        m = rx.match(text)
        if m:
            return _option_number(m.group("opt"), n_options)

    if not isinstance(options, int):
        said = _normalize_text(text)
        hits = [i + 1 for i, opt in enumerate(options) if _normalize_text(str(opt)) == said]
        if len(hits) == 1:
            return hits[0]
    return None


# --- token-overlap F1 -------------------------------------------------------------------------

# Particles (josa) and copula endings dropped from the end of a word when something is left,
# longest first, so that "서울은" and "서울입니다" both compare as "서울".
JOSA = sorted(["은", "는", "이", "가", "을", "를", "의", "에", "에서", "로", "으로", "와", "과", "도",
               "만", "에게", "까지", "부터", "입니다", "이다"], key=len, reverse=True)
# A topic/additive particle may sit on a case particle ("서울에서는", "부산으로도"): then one
# more is dropped, from this list only, so "나이는" stays "나이".
STACKING, UNDER = {"은", "는", "도", "만"}, ["에서", "으로", "에게", "까지", "부터", "에", "로", "와", "과"]
_ARTICLES = {"a", "an", "the"}
_PUNCT = set(string.punctuation)


def _strip_suffix(word: str, suffixes):
    for s in suffixes:
        if word.endswith(s) and len(word) > len(s):
            return word[: -len(s)], s
    return word, None


def _strip_josa(word: str) -> str:
    word, dropped = _strip_suffix(word, JOSA)
    if dropped in STACKING:
        word, _ = _strip_suffix(word, UNDER)
    return word


def normalize_tokens(text: str) -> list:
    """SQuAD-style answer normalization, Korean-aware: NFKC, lowercase, punctuation removed,
    English articles dropped, particles stripped from word ends; whitespace tokens."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if (ch in _PUNCT or unicodedata.category(ch).startswith("P")) else ch
                   for ch in text)
    words = [w for w in text.split() if w not in _ARTICLES]
    return [_strip_josa(w) for w in words]


def f1_score(prediction: str, gold) -> float:
    """Token-overlap F1 of a prediction against a gold answer (max over a list of golds)."""
    if isinstance(gold, (list, tuple)):
        return max((f1_score(prediction, g) for g in gold), default=0.0)
    pred, ref = normalize_tokens(prediction), normalize_tokens(str(gold))
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def answer_text(response: str) -> str:
    """The answer part of a free-text response: reasoning removed, whitespace trimmed."""
    return strip_thinking(response).strip()


# --- judge ------------------------------------------------------------------------------------

JUDGE_INSTRUCTION = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Consider helpfulness, relevance, accuracy, "
    "depth, creativity and level of detail. A question asked in Korean should be answered in "
    "Korean.{reference_note} Begin with a short explanation, then rate the response on a scale of "
    "1 to 10 in exactly this format: \"[[rating]]\", for example \"Rating: [[5]]\"."
)
_REFERENCE_NOTE = " Compare the assistant's answer with the reference answer; identify and correct any mistakes."


def judge_prompt(questions, answers, turn: int, reference=None) -> str:
    """The judge's user message rating turn `turn` (1 or 2) of a two-turn conversation; turn 2
    shows the whole conversation and asks about the second answer."""
    ref = reference[turn - 1] if reference else None
    parts = [JUDGE_INSTRUCTION.format(reference_note=_REFERENCE_NOTE if ref else "")]
    if ref:
        parts.append(f"[The Start of Reference Answer]\n{ref}\n[The End of Reference Answer]")
    if turn == 1:
        parts.append(f"[Question]\n{questions[0]}")
        parts.append(f"[The Start of Assistant's Answer]\n{answers[0]}\n[The End of Assistant's Answer]")
    else:
        parts.append(
            "[The Start of Conversation]\n"
            f"### User:\n{questions[0]}\n\n### Assistant:\n{answers[0]}\n\n"
            f"### User:\n{questions[1]}\n\n### Assistant:\n{answers[1]}\n"
            "[The End of Conversation]\n"
            "Rate only the assistant's answer to the second user question."
        )
    return "\n\n".join(parts)


_RATING_BRACKETS = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_RATING_LABEL = re.compile(r"(?:rating|score|평점|점수)\s*[:：]?\s*(\d+(?:\.\d+)?)(?:\s*/\s*10)?",
                           re.IGNORECASE)


def parse_rating(text: str) -> float | None:
    """A judge's 1-10 rating: the last "[[8]]", else the last "Rating: 8"; None otherwise."""
    text = strip_thinking(text)
    for rx in (_RATING_BRACKETS, _RATING_LABEL):
        found = rx.findall(text)
        if found:
            value = float(found[-1])
            return value if 1 <= value <= 10 else None
    return None
