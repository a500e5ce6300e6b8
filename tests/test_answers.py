"""Answer parsing and scoring (workflow_scripts/evaluation/answers.py): fast, stdlib only."""
import json

import pytest

from workflow_scripts.evaluation import answers, prompts
from workflow_scripts.evaluation.answers import (
    RULES,
    explain_mcqa,
    explain_rating,
    f1_score,
    judge_prompt,
    normalize_tokens,
    parse_mcqa,
    parse_rating,
    strip_thinking,
)

FOUR = ["서울", "부산", "대구", "인천"]

# (response, options or option count, expected 1-based option or None)
MCQA_CASES = [
    # bare answers
    ("C", FOUR, 3),
    ("c", FOUR, 3),
    ("(C)", FOUR, 3),
    ("C.", FOUR, 3),
    ("**B**", FOUR, 2),
    ("  D  \n", FOUR, 4),
    ("3", FOUR, 3),
    ("3번", FOUR, 3),
    ("C입니다.", FOUR, 3),
    ("③", FOUR, 3),                        # circled digit (NFKC)
    ("Ｃ", FOUR, 3),                        # full-width letter
    ("（Ｂ）", FOUR, 2),                     # full-width brackets
    # answer markers, Korean and English
    ("정답: C", FOUR, 3),
    ("정답：Ｃ", FOUR, 3),
    ("정답은 (C)입니다", FOUR, 3),
    ("정답은 C입니다.", FOUR, 3),
    ("정답이 B입니다.", FOUR, 2),
    ("답: 3", FOUR, 3),
    ("정답은 2번입니다.", FOUR, 2),
    ("Answer: C", FOUR, 3),
    ("answer: c", FOUR, 3),
    ("The answer is (B).", FOUR, 2),
    ("The answer is C because Seoul is the capital.", FOUR, 3),
    ("**Final answer:** D", FOUR, 4),
    ("Answer:\nA", FOUR, 1),
    ("C가 정답입니다.", FOUR, 3),
    ("3번이 정답입니다.", FOUR, 3),
    ("B is the correct answer.", FOUR, 2),
    # reasoning first: the final stated answer wins
    ("A는 틀렸습니다. 서울은 수도이므로 정답: C", FOUR, 3),
    ("처음에는 정답: A라고 생각했지만 다시 보면 정답은 D입니다.", FOUR, 4),
    ("Let me think. Option A is wrong, B too.\nAnswer: C", FOUR, 3),
    ("C. 서울이 수도입니다.", FOUR, 3),
    ("B) because the others are wrong", FOUR, 2),
    # <think> blocks: their content is ignored
    ("<think>정답: A 인가? 아니다.</think>정답: B", FOUR, 2),
    ("<think>Maybe A</think>\n\nC", FOUR, 3),
    ("reasoning without an opening tag</think> D", FOUR, 4),
    # up to 10 options (KMMLU-Pro)
    ("정답: J", 10, 10),
    ("답: 10", 10, 10),
    ("Answer: (H)", 10, 8),
    # the option's own text
    ("부산", FOUR, 2),
    ("  대구. ", FOUR, 3),
    # no answer
    ("", FOUR, None),
    ("   ", FOUR, None),
    ("모르겠습니다.", FOUR, None),
    ("I don't know.", FOUR, None),
    ("<think>정답: C</think>", FOUR, None),          # only reasoning
    ("<think>정답은 아마 C", FOUR, None),            # ran out of tokens while thinking
    ("정답: E", FOUR, None),                        # not one of the 4 options
    ("답: 5", FOUR, None),
    ("답: 0", FOUR, None),
    ("A, B", FOUR, None),                            # two answers
    ("A 또는 B", FOUR, None),
    ("ABCD", FOUR, None),
    ("Because it is so.", FOUR, None),               # 'B' of a word is not an option
    ("the answer is a mystery", FOUR, None),         # the article 'a' is not option A
    ("Answer: I think so", FOUR, None),              # the pronoun 'I'
    ("답변을 드리기 어렵습니다.", FOUR, None),         # 답변 is not a marker
    ("The answer is 1990.", FOUR, None),             # a year is not option 1
    ("서울특별시", FOUR, None),                       # not exactly an option's text
]


@pytest.mark.parametrize("response,options,expected", MCQA_CASES)
def test_parse_mcqa(response, options, expected):
    assert parse_mcqa(response, options) == expected


FRUIT = ["사과", "배", "감", "귤"]
COUNTS = ["2개", "4개", "6개", "8개"]

# Held-out defect classes (issue 10): (response, options, expected option or None)
DEFECT_CASES = [
    # 3. restated options choose nothing; an answer after them still counts
    ("(A) 사과 (B) 배 (C) 감 (D) 귤", FRUIT, None),
    ("A. 사과\nB. 배\nC. 감\nD. 귤", FRUIT, None),
    ("A) 사과, B) 배, C) 감, D) 귤\n\nI don't know.", FRUIT, None),
    ("질문: 가장 작은 과일은?\nA. 사과\nB. 배\nC. 감\nD. 귤\n\n잘 모르겠습니다.", FRUIT, None),
    (prompts.mcqa_prompt({"question": "가장 작은 과일은?", "options": FRUIT}), FRUIT, None),
    ("A. 사과\nB. 배\nC. 감\nD. 귤\n\n정답: C", FRUIT, 3),
    ("B. 배", FRUIT, 2),                                  # one option with its text is an answer
    ("A. 사과는 크고 B. 배는 더 큽니다. 정답: D", FRUIT, 4),
    # 4. words containing 답 are not markers; 답변 and 최종 답변 are
    ("정답: D\n흔한 오답: A", FRUIT, 4),
    ("정답은 B입니다. 오답은 A입니다.", FRUIT, 2),
    ("C가 정답이고 A는 오답입니다.", FRUIT, 3),
    ("흔한 오답은 A입니다.", FRUIT, None),
    ("그 질문에는 대답하기 어렵습니다. A 또는 B", FRUIT, None),
    ("답변하기 어려운 질문입니다.", FRUIT, None),
    ("정답률이 낮은 문제입니다.", FRUIT, None),
    ("답변: C", FRUIT, 3),
    ("최종 답변: (B)", FRUIT, 2),
    ("**최종 답변**: D", FRUIT, 4),
    # 5. a number with a unit is a quantity: the option whose text it is, not an option number
    ("정답: 4개", COUNTS, 2),
    ("정답은 6개입니다.", COUNTS, 3),
    ("답: 8개", COUNTS, 4),
    ("4개", COUNTS, 2),
    ("정답은 2번입니다.", COUNTS, 2),                      # 번 is the option number
    ("정답: 20%", ["10%", "20%", "30%", "40%"], 2),
    ("정답: 4", ["2", "4", "6", "8"], 2),                   # the value that is an option's text
    ("정답: 3개", FOUR, None),                              # a quantity that is no option
    ("정답은 2가지입니다.", 4, None),
    # 6. an answer on a later line, a bold letter or a letter with a copula before an explanation
    ("정답은 아래와 같습니다.\n\nD. 귤", FRUIT, 4),
    ("정답은 다음과 같습니다:\n\n**C. 감**\n\n감은 가을에 익습니다.", FRUIT, 3),
    ("The answer is as follows:\nB) 배", FRUIT, 2),
    ("**D**\n\n귤은 껍질을 손으로 깔 수 있습니다.", FRUIT, 4),
    ("**D** 귤은 껍질을 손으로 깔 수 있습니다.", FRUIT, 4),
    ("D입니다. 귤은 껍질을 손으로 깔 수 있습니다.", FRUIT, 4),
    ("B입니다\n배는 수분이 많습니다.", FRUIT, 2),
    ("정답은 모르겠습니다.\n\nA. 사과는 빨갛습니다.", FRUIT, None),  # no announced answer below
]


@pytest.mark.parametrize("response,options,expected", DEFECT_CASES)
def test_parse_mcqa_defect_classes(response, options, expected):
    assert parse_mcqa(response, options) == expected


# One response per rule: explain_mcqa names the rule that decided.
RULE_CASES = [
    ("정답: C", FOUR, 3, "marker"),
    ("정답: 4개", COUNTS, 2, "marker_text"),
    ("정답은 아래와 같습니다.\n\nD. 귤", FRUIT, 4, "marker_next_line"),
    ("C가 정답입니다.", FOUR, 3, "marker_after"),
    ("**B**", FOUR, 2, "bare"),
    ("C. 서울이 수도입니다.", FOUR, 3, "leading"),
    ("부산입니다.", FOUR, 2, "option_text"),
    ("정답: E", FOUR, None, "out_of_range"),
    ("(A) 서울 (B) 부산 (C) 대구 (D) 인천", FOUR, None, "echo"),
    ("<think>정답: C</think>", FOUR, None, "empty"),
    ("모르겠습니다.", FOUR, None, "none"),
]


def test_explain_mcqa_names_every_rule():
    assert sorted(rule for *_, rule in RULE_CASES) == sorted(RULES)
    for response, options, option, rule in RULE_CASES:
        assert explain_mcqa(response, options) == (option, rule), response


def test_parse_mcqa_count_only_skips_text_match():
    assert parse_mcqa("부산", 4) is None
    assert parse_mcqa("B", 4) == 2


def test_strip_thinking():
    assert strip_thinking("<think>x</think>y") == "y"
    assert strip_thinking("a<think>b</think>c<think>d</think>e") == "e"
    assert strip_thinking("before<think>never closed") == "before"
    assert strip_thinking("plain") == "plain"


# --- F1 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("pred,gold,expected", [
    ("서울", "서울", 1.0),
    ("서울입니다.", "서울", 1.0),                         # copula
    ("서울은", "서울", 1.0),                              # particles: 은 는 이 가 을 를 의 에 ...
    ("서울에서는", "서울", 1.0),                          # two stacked particles
    ("서울로", "서울", 1.0),
    ("부산과 대구", "부산, 대구", 1.0),                    # punctuation and 과
    ("빨강을 좋아한다", "빨강", 2 * (1 / 2) * 1 / (1 / 2 + 1)),
    ("The color is red.", "red", 0.5),                   # SQuAD: P=1/3, R=1
    ("the Red", "red", 1.0),                             # lowercase, article dropped
    ("ＲＥＤ", "red", 1.0),                               # full-width (NFKC)
    ("파랑", "빨강", 0.0),
    ("", "빨강", 0.0),
    ("", "", 1.0),
    ("파랑", ["빨강", "파랑입니다"], 1.0),                  # max over golds
    ("파랑", [], 0.0),
])
def test_f1(pred, gold, expected):
    assert f1_score(pred, gold) == pytest.approx(expected)


@pytest.mark.parametrize("pred,gold,expected", [
    # 1. a noun that ends like a particle keeps its last syllable, in gold and prediction alike
    ("요가입니다.", "요가", 1.0),
    ("오이가 싱싱합니다", "오이", 2 / 3),
    ("포도예요", "포도", 1.0),
    ("도로로", "도로", 1.0),
    ("결과는", "결과", 1.0),
    ("고양이입니다.", "고양이", 1.0),
    ("서울이에요", "서울", 1.0),
    ("사과", "사도", 0.0),                                 # no common stem 사
    # 2. numbers stay whole: thousands separators dropped, decimal points kept
    ("25,000원", "25000원", 1.0),
    ("1,234,567명입니다.", "1234567명", 1.0),
    ("약 3,000", "3000", 2 / 3),
    ("3.5%입니다", "3.5%", 1.0),
    ("3", "3.5", 0.0),
    ("1,2,3", "1 2 3", 1.0),                               # not digit groups: still split
])
def test_f1_defect_classes(pred, gold, expected):
    assert f1_score(pred, gold) == pytest.approx(expected)


@pytest.mark.parametrize("noun", ["요가", "오이", "포도", "사과", "도로", "기와", "자만", "보은", "고양이", "서울"])
def test_noun_and_noun_with_particles_normalize_alike(noun):
    base = normalize_tokens(noun)
    assert len(base) == 1 and len(base[0]) >= min(2, len(noun))
    for suffix in ["입니다", "이다", "예요", "는", "가", "도", "로", "에서는", "만"]:
        assert normalize_tokens(noun + suffix) == base, noun + suffix


def test_two_syllable_nouns_are_not_particles():
    assert normalize_tokens("요가 오이 포도 사과 도로 기와 치과 자만 보은") == \
        ["요가", "오이", "포도", "사과", "도로", "기와", "치과", "자만", "보은"]


def test_josa_keeps_a_word_that_is_only_a_particle():
    # 이, 가, 도 alone are words, not particles of an empty stem
    assert normalize_tokens("이 가 도") == ["이", "가", "도"]
    assert normalize_tokens("나이가 나이는 서울에서는 부산으로도") == ["나이", "나이", "서울", "부산"]
    assert normalize_tokens("A cat, the dog!") == ["cat", "dog"]


def test_f1_is_symmetric_and_bounded():
    pairs = [("서울 부산 대구", "서울 대구"), ("a b c", "c d"), ("빨강은 색이다", "빨강")]
    for a, b in pairs:
        assert f1_score(a, b) == pytest.approx(f1_score(b, a))
        assert 0.0 < f1_score(a, b) < 1.0


# --- judge ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("Good answer. Rating: [[8]]", 8.0),
    ("[[7.5]]", 7.5),
    ("First [[3]] then corrected: [[9]]", 9.0),
    ("Rating: 6", 6.0),
    ("평점: 4/10", 4.0),
    ("score: 10", 10.0),
    ("<think>[[2]]</think> Rating: [[5]]", 5.0),
    ("[[11]]", None),
    ("[[0]]", None),
    ("No rating here.", None),
    ("", None),
])
def test_parse_rating(text, expected):
    assert parse_rating(text) == expected


@pytest.mark.parametrize("text,expected", [
    # 7. single brackets, as FastChat's MT-Bench parser accepts when [[ ]] is missing
    ("Rating: [7]", (7.0, "label")),
    ("평점: [6]", (6.0, "label")),
    ("The answer is accurate and detailed. [8]", (8.0, "single_brackets")),
    ("Rating: [[9]], not [3]", (9.0, "double_brackets")),
    ("As in [2], it is right. Rating: 8", (8.0, "label")),   # a label beats a bracketed citation
    ("Rating: [11]", (None, "out_of_range")),
    ("No rating.", (None, "none")),
])
def test_explain_rating(text, expected):
    assert explain_rating(text) == expected


def test_explain_cli_prints_one_line_per_row(tmp_path, capsys):
    rows = [
        {"benchmark": "mc", "id": "q1", "response": "정답: D\n흔한 오답: A", "parsed": 1, "gold": 4,
         "correct": False, "options": FRUIT},
        {"benchmark": "mc", "id": "q2", "response": "(A) 사과 (B) 배 (C) 감 (D) 귤", "parsed": None, "gold": 1,
         "correct": False, "options": FRUIT},
        {"benchmark": "lq", "id": "l1", "response": "요가입니다.", "parsed": "요가입니다.", "gold": "요가", "score": 1.0},
        {"benchmark": "mt", "id": "t1", "turn": 1, "response": "...", "parsed": None, "gold": None, "score": None,
         "judge_response": "Good. Rating: [7]"},
    ]
    path = tmp_path / "lane.items.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    assert answers.main(["--explain", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == ["id", "benchmark", "gold", "parsed", "rule", "response"]
    assert lines[1].split("\t")[:5] == ["q1", "mc", "D", "D", "marker (scored A)"]  # re-parsed, and how it was scored
    assert lines[1].split("\t")[5] == "정답: D ⏎ 흔한 오답: A"
    assert lines[2].split("\t")[:5] == ["q2", "mc", "A", "-", "echo"]
    assert lines[3].split("\t")[:5] == ["l1", "lq", "요가", "요가입니다.", "text"]
    assert lines[4].split("\t")[:5] == ["t1/1", "mt", "-", "7.0", "label (scored -)"]
    assert lines[5] == "# mc: parse rate 50.0% (1/2); marker 1, echo 1"


def test_judge_prompt_turns():
    qs, ans = ["질문1", "질문2"], ["답1", "답2"]
    p1 = judge_prompt(qs, ans, 1)
    assert "질문1" in p1 and "답1" in p1 and "질문2" not in p1 and "[[" in p1
    p2 = judge_prompt(qs, ans, 2, reference=["참조1", "참조2"])
    assert all(s in p2 for s in ["질문1", "답1", "질문2", "답2", "참조2"]) and "참조1" not in p2
