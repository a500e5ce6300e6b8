"""Answer parsing and scoring for the benchmarks: MCQA option letters, token-overlap F1 with
Korean-aware normalization, and judge ratings. Stdlib only (used by evaluation in the serve env
and by the tests in either env).

    python -m workflow_scripts.evaluation.answers --explain results/metrics/<lane>.items.jsonl

prints how each response of a lane was parsed (which rule decided), to audit an accuracy.
"""
from __future__ import annotations

import argparse
import json
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

# A number followed by a unit is a quantity, not an option number: "4개", "10%", "2가지". Only
# 번 (option), a copula or a particle that ends the word may follow one: "3번", "3입니다", "3이 정답".
_UNIT = (r"\s*[%°$€£¥]|(?!번|입니|이다|이에|예요|(?:이|가|은|는|을|를|도|와|과|로|으로|의|에)(?![가-힣]))"
         r"[가-힣]")
# An option as models write it: a letter A-J or a 1-2 digit number, maybe in brackets, maybe
# followed by 번 ("option 3" in Korean). The letter/number must not run into a longer word or
# number ("Because" is not B, "1990" is not 1).
_OPT = (r"[\(\[]?\s*(?P<opt>[A-Ja-j]|\d{1,2}(?!" + _UNIT + r"))(?![A-Za-z0-9])"
        r"\s*(?P<close>[\)\]])?\s*(?:번)?")
_OPT_AT = re.compile(_OPT, re.IGNORECASE)
# An answer marker, up to where the answer starts: "정답: ", "정답은 ", "최종 답변: ", "Answer: ",
# "The answer is ", "**Final answer:** ". 답 and 답변 count only as words of their own: 오답 (a
# wrong answer), 대답, 해답 are other words, and so are 답변하기, 답하기, 정답률 (a syllable follows).
_MARKER = re.compile(
    r"(?:(?<![A-Za-z])(?:final\s+answer|correct\s+answer|answer)"
    r"|정답|(?:(?<![가-힣])|(?<=최종))(?:답변|답))"
    r"(?:\s*(?:은|는|이|가|is|would\s+be|will\s+be))?(?![가-힣])"
    r"[\s:=*\-–>\"'“”]*(?:(?:option|choice|보기)\s*)?",
    re.IGNORECASE,
)
# "C가 정답입니다", "3번이 정답", "B is the answer", "(B) is correct".
_MARKER_AFTER = re.compile(
    r"(?<![A-Za-z0-9])" + _OPT +
    r"\s*(?:이|가|is|was)\s*(?:the\s+)?(?:정답|답|correct|right|answer)",
    re.IGNORECASE,
)
# A marker whose answer comes on a later line: "정답은 아래와 같습니다.", "정답:", "The answer is as follows:".
_INTRO = re.compile(r"^[\s:*\-–.]*$|(?:아래|다음)(?:과|와|입니|이다|에)|as\s+follows|below|following",
                    re.IGNORECASE)
# A line that is one option: "C", "(C)", "c.", "3번", "C입니다", "**B**".
_BARE = re.compile(
    r"^[\s*\"'`]*" + _OPT + r"[\s.:*\"'`]*(?:입니다|이다|예요|이에요)?[\s.!]*$", re.IGNORECASE,
)
# A response that starts with an option and goes on: "C. 서울", "B) because ...", "**D** 귤은 ...",
# "D입니다. 귤은 ...".
_LEADING = re.compile(r"^[\s*\-•]*[\(\[]?(?P<opt>[A-J])"
                      r"(?:\*+|\**[\)\].:]|\s*\n|\s*(?:입니다|이다|예요|이에요)(?![가-힣]))")
# What may follow an option's text for it to be the whole answer ("사과입니다.") or the start of
# one ("사과가 맞습니다"): nothing more of the word, so "4" is not the start of "4개".
_COPULA_END = re.compile(r"(?:입니다|이다|예요|이에요)?[\s.!]*$")
_WORD_END = re.compile(r"$|[^\w]|(?:입니다|이다|예요|이에요|이|가|은|는|을|를|요|라고)(?!\w)")

RULES = {
    "marker": "an answer marker, then an option: 정답: C",
    "marker_text": "an answer marker, then an option's text: 정답: 4개",
    "marker_next_line": "a marker announcing the answer, the option on a later line",
    "marker_after": "an option, then a marker: C가 정답입니다",
    "bare": "the (first line of the) response is an option: C, **D**, C입니다",
    "leading": "the response starts with an option: C. 서울, D입니다. ...",
    "option_text": "the response is one option's text",
    "out_of_range": "the option stated is not one of the item's",
    "echo": "the response only restates the options",
    "empty": "nothing after the reasoning",
    "none": "no answer found",
}


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


def _option_by_text(segment: str, options, tail: re.Pattern):
    """The option whose text `segment` starts with, followed by what `tail` allows (the longest
    such option when texts nest: 사과 / 사과나무); None with only an option count."""
    if isinstance(options, int):
        return None
    said, best = _normalize_text(segment).lstrip("([{"), None
    for k, opt in enumerate(options, 1):
        o = _normalize_text(str(opt))
        if o and said.startswith(o) and tail.match(said, len(o)) and (best is None or len(o) > best[1]):
            best = (k, len(o))
    return best[0] if best else None


def _without_echo(text: str, options):
    """The text without restated option lists, and whether there was one: two or more options in
    a row with their labels and texts ("(A) 사과 (B) 배", "A. 사과\\nB. 배") echo the prompt and
    choose nothing (a broken model echoing its prompt would otherwise get every A-item right)."""
    if isinstance(options, int):
        return text, False
    items = [rf"(?<![A-Za-z0-9])\**[\(\[]?\s*(?:{LETTERS[i]}|{i + 1})\s*[\)\].:]?\**\s*"
             + r"\s+".join(map(re.escape, unicodedata.normalize("NFKC", str(opt)).split()))
             + r"(?=[\s,;/.]|$)"
             for i, opt in enumerate(options) if str(opt).strip()]
    if len(items) < 2:
        return text, False
    item = "(?:" + "|".join(items) + ")"
    cleaned, n = re.subn(rf"{item}(?:[\s,;/*\-•]*{item})+", "\n", text, flags=re.IGNORECASE)
    return cleaned.strip(), n > 0


def _as_option(text: str, options, n_options: int):
    """(option, rule) when the text's first line is one option (what follows explains it), the
    text starts with one, or the text is one option's text; else None."""
    first_line = text.split("\n", 1)[0]
    for rule, m in (("bare", _BARE.match(first_line)), ("leading", _LEADING.match(text))):
        if m:
            return _option_number(m.group("opt"), n_options), rule
    k = _option_by_text(text, options, _COPULA_END)
    return (k, "option_text") if k else None


def _after_marker(text: str, pos: int, options, n_options: int):
    """(position, option, rule) of the answer a marker ending at `pos` introduces, or None."""
    line_end = text.find("\n", pos)
    line_end = len(text) if line_end < 0 else line_end
    # An option's text first: "정답: 4개" is the option 4개, and with options 2, 4, 6, 8 "정답: 4"
    # is the option whose text is 4 rather than the fourth.
    k = _option_by_text(text[pos:line_end], options, _WORD_END)
    if k:
        return pos, k, "marker_text"
    m = _OPT_AT.match(text, pos)
    if m and _letter_is_plausible(text, m):
        return m.start("opt"), _option_number(m.group("opt"), n_options), "marker"
    if line_end < len(text) and _INTRO.search(text[pos:line_end]):
        start = len(text) - len(text[line_end:].lstrip())
        found = _as_option(text[start:].split("\n", 1)[0], options, n_options)
        if found:
            return start, found[0], "marker_next_line"
    return None


def _stated(text: str, options, n_options: int):
    """(option, rule) of the last answer the text states with a marker, or None."""
    found = [a for m in _MARKER.finditer(text) if (a := _after_marker(text, m.end(), options, n_options))]
    found += [(m.start("opt"), _option_number(m.group("opt"), n_options), "marker_after")
              for m in _MARKER_AFTER.finditer(text) if _letter_is_plausible(text, m)]
    if not found:
        return None
    _, k, rule = max(found, key=lambda a: a[0])
    return k, rule


def explain_mcqa(response: str, options):
    """(option, rule): the 1-based option a response chooses, None when it states no (valid)
    option, and the name of the rule that decided (RULES).

    `options` is the item's option list (or their count: then neither option texts nor echoed
    option lists can be recognized). Order of evidence: the last answer marker in the text (the
    final stated answer wins over earlier reasoning), a response whose first line is an option,
    one that starts with an option, one equal to one option's text. Reasoning inside
    <think>...</think> and restated option lists are ignored; full-width and circled characters
    are normalized (NFKC)."""
    n_options = options if isinstance(options, int) else len(options)
    text = unicodedata.normalize("NFKC", strip_thinking(response)).strip()
    if not text:
        return None, "empty"
    text, echoed = _without_echo(text, options)
    found = _stated(text, options, n_options) or _as_option(text, options, n_options)
    if found:
        return found if found[0] else (None, "out_of_range")
    return None, "echo" if echoed else "none"


def parse_mcqa(response: str, options) -> int | None:
    """The 1-based option a response chooses, or None (explain_mcqa says why)."""
    return explain_mcqa(response, options)[0]


# --- token-overlap F1 -------------------------------------------------------------------------

# Copula and particles of two or more syllables: dropped from a word's end when a syllable is left
# ("서울입니다", "물입니다", "부산으로" -> 서울, 물, 부산).
ENDINGS = ["입니다", "이에요", "예요", "이다", "에서", "으로", "에게", "까지", "부터"]
# One-syllable particles end many nouns too (요가, 오이, 포도, 사과, 도로), so one is dropped only
# when two syllables are left: a noun is not a particle ("요가" stays whole, "요가는" is 요가).
# A one-syllable noun keeps its particle ("책을"): alone it cannot be told from 요가.
PARTICLES = ["은", "는", "이", "가", "을", "를", "의", "에", "로", "와", "과", "도", "만", "요"]
# Words that carry no answer: English articles, and a copula split off by punctuation (3.5%입니다).
_FILLERS = {"a", "an", "the", "입니다", "이다", "예요", "이에요"}
_PUNCT = set(string.punctuation)
# A comma between digit groups is a thousands separator: 25,000원 is 25000원, not "25 000원".
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def _strip_josa(word: str) -> str:
    """The word without the particles and copula at its end, dropped one by one while a word is
    left (서울에서는 -> 서울에서 -> 서울); gold and prediction go through the same steps, so X and
    X followed by particles normalize alike (요가입니다 -> 요가, 고양이는 and 고양이 -> 고양)."""
    while True:
        for suffix in ENDINGS + PARTICLES:  # longest first
            keep = 1 if len(suffix) > 1 else 2
            if word.endswith(suffix) and len(word) - len(suffix) >= keep:
                word = word[: -len(suffix)]
                break
        else:
            return word


def _is_separator(text: str, i: int) -> bool:
    """Punctuation splits words, except a decimal point between digits (3.5 stays one number)."""
    ch = text[i]
    if not (ch in _PUNCT or unicodedata.category(ch).startswith("P")):
        return False
    return not (ch == "." and text[i - 1: i].isdigit() and text[i + 1: i + 2].isdigit())


def normalize_tokens(text: str) -> list:
    """SQuAD-style answer normalization, Korean-aware: NFKC, lowercase, punctuation split off
    (numbers kept whole: thousands separators dropped, decimal points kept), English articles
    and a lone copula dropped, particles stripped from word ends; whitespace tokens."""
    text = _THOUSANDS.sub("", unicodedata.normalize("NFKC", text).lower())
    text = "".join(" " if _is_separator(text, i) else ch for i, ch in enumerate(text))
    words = [w for w in text.split() if w not in _FILLERS]
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


# Rating formats, in the order they are trusted: "[[8]]" as the judge is asked; "Rating: 8",
# "평점: 4/10", "Rating: [7]"; a lone "[7]" (FastChat's MT-Bench parser takes it when [[ ]] is missing).
RATING_RULES = (
    ("double_brackets", re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")),
    ("label", re.compile(r"(?:rating|score|평점|점수)\s*[:：]?\s*\[?\s*(\d+(?:\.\d+)?)(?:\s*/\s*10)?",
                         re.IGNORECASE)),
    ("single_brackets", re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*\]")),
)


def explain_rating(text: str):
    """(rating, rule): a judge's 1-10 rating, the last one in the first format of RATING_RULES that
    occurs (None when out of range), and that format's name; (None, "none") when none occurs."""
    text = strip_thinking(text)
    for rule, rx in RATING_RULES:
        found = rx.findall(text)
        if found:
            value = float(found[-1])
            return (value, rule) if 1 <= value <= 10 else (None, "out_of_range")
    return None, "none"


def parse_rating(text: str) -> float | None:
    """A judge's 1-10 rating, or None (explain_rating says why)."""
    return explain_rating(text)[0]


# --- parse rate and audit ---------------------------------------------------------------------

def parse_rate(rows):
    """Share of per-item rows in which an answer was found (`parsed` neither None nor empty);
    None without rows. A lane's drop against the base points to an answer format the parser
    misses, which its accuracy would otherwise pass off as lost knowledge."""
    if not rows:
        return None
    return sum(r.get("parsed") not in (None, "") for r in rows) / len(rows)


def explain_row(row: dict):
    """(parsed, rule) for one row of a lane's items.jsonl, parsed again: an MCQA response against
    its options, a judge response for its rating, a long-QA response for its answer text."""
    if "options" in row:
        return explain_mcqa(row["response"], row["options"])
    if "correct" in row:  # an MCQA row written before rows carried their options
        return row.get("parsed"), "stored"
    if "turn" in row:
        return explain_rating(row["judge_response"]) if "judge_response" in row else (None, "no_judge")
    text = answer_text(row["response"])
    return text, "text" if text else "empty"


def _shorten(text: str, head: int = 70, tail: int = 40) -> str:
    """One line: newlines shown as ⏎, the middle of a long text left out."""
    text = " ".join(re.sub(r"\s*\n\s*", " ⏎ ", text.strip()).split())
    if len(text) <= head + tail + 3:
        return text
    return f"{text[:head]} … {text[len(text) - tail:]}"


def _shown(value, is_mcqa: bool) -> str:
    """A gold or parsed value in a line: an MCQA option as its letter, '-' for none."""
    if value is None or value == "":
        return "-"
    if is_mcqa and isinstance(value, int) and 1 <= value <= len(LETTERS):
        return LETTERS[value - 1]
    return _shorten(str(value), 30, 0)


def explain(rows) -> list:
    """Lines auditing a lane's per-item rows: id, benchmark, gold, parsed, rule, response (tab
    separated), then per benchmark its parse rate and how often each rule decided."""
    lines, by_bench = [], {}
    for row in rows:
        parsed, rule = explain_row(row)
        is_mcqa = "options" in row or "correct" in row
        item = f"{row['id']}/{row['turn']}" if "turn" in row else str(row["id"])
        shown = row.get("judge_response", "") if "turn" in row else row["response"]  # what was parsed
        # Parsed otherwise when scored (by an older parser): the metrics followed the stored parse.
        scored = f" (scored {_shown(row['parsed'], is_mcqa)})" if row.get("parsed", parsed) != parsed else ""
        lines.append("\t".join([item, row["benchmark"], _shown(row.get("gold"), is_mcqa),
                                _shown(parsed, is_mcqa), rule + scored, _shorten(shown)]))
        by_bench.setdefault(row["benchmark"], []).append({"parsed": parsed, "rule": rule})
    for bench, got in by_bench.items():
        found = sum(g["parsed"] not in (None, "") for g in got)
        rules = Counter(g["rule"] for g in got).most_common()
        lines.append(f"# {bench}: parse rate {parse_rate(got):.1%} ({found}/{len(got)}); "
                     + ", ".join(f"{rule} {k}" for rule, k in rules))
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Answer parsing and scoring; --explain audits a lane's parses.")
    ap.add_argument("--explain", metavar="FILE.items.jsonl", required=True,
                    help="print how each response of a lane's per-item rows was parsed (which rule matched)")
    args = ap.parse_args(argv)
    with open(args.explain, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    print("\t".join(["id", "benchmark", "gold", "parsed", "rule", "response"]))
    print("\n".join(explain(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
