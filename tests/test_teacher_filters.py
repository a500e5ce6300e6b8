"""Teacher-data filters (workflow_scripts/stages/teacher_filters.py): hand-made rows that each filter
must drop or keep, and counts that add up."""
import pytest

from workflow_scripts.planning.schema import section_defaults
from workflow_scripts.stages.teacher_filters import (
    REASONS,
    filter_candidates,
    hangul_ratio,
    normalize,
    parse_qa,
    response_problem,
)

CFG = section_defaults("teacher", "filters")  # what validation fills in
KO_PROMPT = "서울의 상징색은 무엇인가요?"


def chat(response, prompt=KO_PROMPT, finish="stop", **extra):
    return {"kind": "chat", "prompt": prompt, "messages": [{"role": "user", "content": prompt}],
            "response": response, "finish_reason": finish, **extra}


def qa(response, passage="서울은 대한민국의 수도입니다. 서울의 상징색은 빨강입니다."):
    return {"kind": "qa", "prompt": passage, "messages": [], "response": response, "finish_reason": "stop"}


@pytest.mark.parametrize("response, finish, reason", [
    ("", "stop", "empty"),
    ("   \n ", "stop", "empty"),
    ("서울의 상징색은 빨강이고 그 이유는", "length", "truncated"),
    ("네, 알겠습니다. " * 12, "stop", "repetition"),               # a sentence loop
    (" ".join(["좋아요 정말 좋아요"] * 10), "stop", "repetition"),  # few distinct word 3-grams
    ("The color of Seoul is red.", "stop", "language"),          # English answer to a Korean prompt
    ("빨", "stop", "too_short"),
    ("".join(f"{i}번째 문장입니다. " for i in range(400)), "stop", "too_long"),
])
def test_each_response_filter_drops_its_case(response, finish, reason):
    assert response_problem(KO_PROMPT, response, finish, CFG) == reason


@pytest.mark.parametrize("prompt, response", [
    (KO_PROMPT, "서울의 상징색은 빨강입니다."),
    (KO_PROMPT, "정답: A"),                                      # short, mixed letters, still Korean enough
    ("What is the color of Seoul?", "The color of Seoul is red."),  # English prompt: no Hangul required
    (KO_PROMPT, "첫째, 서울은 수도입니다. 둘째, 상징색은 빨강입니다. 셋째, 인구가 많습니다. "
                "넷째, 한강이 흐릅니다. 다섯째, 궁궐이 있습니다. 여섯째, 지하철이 깁니다."),  # varied, long enough to be checked
])
def test_good_responses_are_kept(prompt, response):
    assert response_problem(prompt, response, "stop", CFG) is None


def test_truncated_rows_are_kept_when_asked():
    assert response_problem(KO_PROMPT, "서울의 상징색은 빨강입니다", "length", {**CFG, "drop_truncated": False}) is None


def test_hangul_ratio():
    assert hangul_ratio("서울 Seoul") == pytest.approx(2 / 7)
    assert hangul_ratio("1234 !?") == 0.0 and hangul_ratio("한글") == 1.0


def test_parse_qa():
    assert parse_qa("질문: 서울의 상징색은?\n답변: 빨강입니다.") == ("서울의 상징색은?", "빨강입니다.")
    assert parse_qa("Question: Which city?\nAnswer: Seoul") == ("Which city?", "Seoul")
    assert parse_qa("질문: 서울의 상징색은?") is None          # no answer
    assert parse_qa("서울의 상징색은 빨강입니다.") is None
    assert parse_qa("질문: \n답변: 빨강") is None               # empty question


def test_normalize_ignores_case_spacing_and_punctuation():
    assert normalize("서울의  상징색은 빨강!") == normalize("서울의 상징색은, 빨강.") == "서울의상징색은빨강"
    assert normalize("Ｓｅｏｕｌ") == "seoul"  # NFKC folds full-width letters


def test_filter_candidates_buckets_every_row_once():
    cands = [
        chat("서울의 상징색은 빨강입니다."),                 # kept
        chat("서울의 상징색은 빨강입니다."),                 # exact duplicate of the first
        chat("서울의 상징색은, 빨강입니다!"),                # near duplicate (punctuation only)
        chat("부산의 상징색은 파랑입니다.", prompt="부산의 상징색은 무엇인가요?"),  # kept: another prompt
        chat(""),                                            # empty
        chat("서울의 상징색은", finish="length"),              # truncated
        chat("This is English.", prompt="부산을 소개해 주세요."),  # language
        {**chat("unused"), "skipped": "prompt of 900 tokens leaves no room"},  # prompt too long
        qa("질문: 서울의 상징색은?\n답변: 빨강입니다."),      # kept, as a user/assistant pair
        qa("서울은 수도입니다. 상징색은 빨강입니다."),        # qa without the format
    ]
    kept, counts = filter_candidates(cands, CFG)
    assert set(counts) == set(REASONS)
    assert len(kept) + sum(counts.values()) == len(cands)
    assert {k: v for k, v in counts.items() if v} == {
        "exact_duplicate": 1, "near_duplicate": 1, "empty": 1, "truncated": 1, "language": 1,
        "prompt_too_long": 1, "qa_unparsed": 1}
    assert [k["messages"][-1]["content"] for k in kept] == ["서울의 상징색은 빨강입니다.", "부산의 상징색은 파랑입니다.", "빨강입니다."]
    assert kept[2]["messages"] == [{"role": "user", "content": "서울의 상징색은?"},
                                   {"role": "assistant", "content": "빨강입니다."}]
    assert kept[0]["messages"][0] == {"role": "user", "content": KO_PROMPT}


def test_same_response_to_different_prompts_is_not_a_duplicate():
    kept, counts = filter_candidates([chat("빨강입니다.", prompt="서울의 색은?"), chat("빨강입니다.", prompt="대구의 색은?")], CFG)
    assert len(kept) == 2 and sum(counts.values()) == 0


def test_rows_overlapping_a_benchmark_are_dropped():
    from workflow_scripts.stages.decontamination import BenchmarkIndex

    context = ("라모 시의 시장은 지난 봄 새로운 도서관을 열었고 그 도서관에는 오래된 지도와 희귀한 책이 "
               "많이 모여 있어서 방문객이 끊이지 않았다")
    index = BenchmarkIndex({"lq": [{"context": context, "question": "누가 열었나?"}]}, {"lq": "longqa"})
    cands = [chat(f"요약하면 {context}"), chat("서울의 상징색은 빨강입니다.")]
    kept, counts = filter_candidates(cands, CFG, benchmarks=index)
    assert counts["benchmark_overlap"] == 1 and len(kept) == 1
    assert filter_candidates(cands, CFG)[1]["benchmark_overlap"] == 0  # no index: nothing compared
