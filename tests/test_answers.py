"""Answer parsing and scoring (workflow_scripts/answers.py): fast, stdlib only."""
import pytest

from workflow_scripts.answers import (
    f1_score, judge_prompt, normalize_tokens, parse_mcqa, parse_rating, strip_thinking,
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


def test_judge_prompt_turns():
    qs, ans = ["질문1", "질문2"], ["답1", "답2"]
    p1 = judge_prompt(qs, ans, 1)
    assert "질문1" in p1 and "답1" in p1 and "질문2" not in p1 and "[[" in p1
    p2 = judge_prompt(qs, ans, 2, reference=["참조1", "참조2"])
    assert all(s in p2 for s in ["질문1", "답1", "질문2", "답2", "참조2"]) and "참조1" not in p2
