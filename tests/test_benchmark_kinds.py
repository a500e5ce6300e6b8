"""The benchmark registry (benchmark_kinds.KINDS): the schema's kind enum, each kind's normalizer on
rows in the sets' own schemas (docs/data.md), the long-QA prompt (the row's own instruction or the
template, its context truncated) and decontamination's n-gram index. Stdlib + a fake tokenizer."""
import pytest
import yaml

from workflow_scripts import REPO
from workflow_scripts.demo import data as demo_data
from workflow_scripts.evaluation import answers, benchmark_scoring, eval_worker, prompts
from workflow_scripts.evaluation.benchmark_kinds import KINDS, kind_of
from workflow_scripts.stages import decontamination

pytestmark = pytest.mark.unit

# Rows written in the schemas of the sets' cards (not copied from the sets).
KMMLU_PRO = {"question": "다음 중 민법상 미성년자의 법률행위에 관한 설명으로 옳은 것은?",
             "options": ["가", "나", "다", "라", "마"], "solution": "5", "license_name": "변호사", "subject": "민법"}
KMMLU_REDUX = {"question": "물의 끓는점은 1기압에서 몇 도인가?", "options": ["0도", "50도", "100도", "150도"],
               "solution": "3", "license_name": "기사", "subject": "화학", "category": "STEM"}
LONGRAG_PROMPT = ("다음 문서의 제목은 {titles}입니다.\n\n{context}\n\n위 문서를 바탕으로 질문에 답하세요. "
                  "답이 없으면 '답 없음'이라고 쓰세요. 형식: {{\"answer\": ...}}\n질문: {question}")
LONGRAG = {"id": "klr-0001", "titles": ["첫째 문서", "둘째 문서"], "context": "첫째 문서 내용. " * 200,
           "question": "첫째 문서의 주제는?", "answer": "내용", "prompt": LONGRAG_PROMPT, "task": "multidocQA"}
KOMT = {"question_id": 81, "category": "math", "turns": ["1+1은?", "2+2는?"], "reference": ["2", ""]}


def test_schema_kind_enum_is_the_registry():
    schema = yaml.safe_load((REPO / "config" / "schemas" / "config.schema.yaml").read_text())
    assert sorted(schema["definitions"]["benchmark"]["properties"]["kind"]["enum"]) == sorted(KINDS)
    assert set(KINDS) <= set(demo_data.FILES)  # every kind has demo items
    assert set(benchmark_scoring.METRIC_OF_KIND) == set(KINDS)


def test_unknown_kind_is_one_line_naming_the_key():
    with pytest.raises(ValueError, match=r"^benchmarks\.x\.kind: expected one of \['longqa', 'mcqa', 'mtbench'\]"):
        kind_of("x", {"kind": "mmlu"})


@pytest.mark.parametrize("row, answer, n", [(KMMLU_PRO, 5, 5), (KMMLU_REDUX, 3, 4),
                                            ({**KMMLU_REDUX, "solution": " 1 "}, 1, 4),
                                            ({**KMMLU_PRO, "options": [str(i) for i in range(10)], "solution": "10"}, 10, 10)])
def test_mcqa_solution_is_a_1_based_string(row, answer, n):
    item = KINDS["mcqa"].normalize(row)
    assert item == {"question": row["question"], "options": row["options"], "answer": answer}
    assert len(item["options"]) == n
    lines = prompts.mcqa_prompt(item).split("\n")
    assert lines[-n:] == [f"{prompts.LETTERS[k]}. {opt}" for k, opt in enumerate(row["options"])]


@pytest.mark.parametrize("solution", ["0", "6", "E", ""])
def test_mcqa_bad_solution_names_the_field(solution):
    with pytest.raises(ValueError, match="'solution'"):
        KINDS["mcqa"].normalize({**KMMLU_PRO, "solution": solution})


@pytest.mark.parametrize("reference, expected", [
    ([], None), (None, None), (["2", ""], ["2", None]), (["2", "4"], ["2", "4"]),
    (["", ""], None), (["  ", "4"], [None, "4"]),
])
def test_komt_reference_empty_turn_is_no_reference(reference, expected):
    item = KINDS["mtbench"].normalize({**KOMT, "reference": reference})
    assert item == {"category": "math", "turns": KOMT["turns"], "reference": expected}
    for turn in (1, 2):  # the judge is shown a reference only for a turn that has one
        shown = "[The Start of Reference Answer]" in answers.judge_prompt(KOMT["turns"], ["a", "b"], turn,
                                                                          item["reference"])
        assert shown == bool(expected and expected[turn - 1])


@pytest.mark.parametrize("turns", [["only one"], ["a", ""], "a b", ["a", "b", "c"]])
def test_komt_needs_two_turns(turns):
    with pytest.raises(ValueError, match="'turns'"):
        KINDS["mtbench"].normalize({**KOMT, "turns": turns})


def test_longrag_row_prompt_is_used_with_its_titles():
    item = KINDS["longqa"].normalize(LONGRAG)
    assert item["prompt"] == LONGRAG_PROMPT and item["titles"] == LONGRAG["titles"]
    text, extra = KINDS["longqa"].prompt(item, "longqa_ko", "짧은 문맥")
    assert extra == {"prompt_source": "row"}
    assert text.startswith("다음 문서의 제목은 첫째 문서, 둘째 문서입니다.\n\n짧은 문맥\n\n")
    assert text.endswith("질문: 첫째 문서의 주제는?") and '{{"answer": ...}}' in text  # other braces stay
    assert "{context}" not in text and "{titles}" not in text


@pytest.mark.parametrize("own", [None, "", "질문에 답하세요.", "{context} 만 있는 지시문"])
def test_longrag_without_a_usable_prompt_falls_back_to_the_template(own):
    item = KINDS["longqa"].normalize({**LONGRAG, "prompt": own})
    assert "prompt" not in item
    text, extra = KINDS["longqa"].prompt(item, "longqa_en", "CTX")
    assert extra == {"prompt_source": "template"}
    assert text == prompts.TEMPLATES["longqa_en"].format(context="CTX", question=LONGRAG["question"])


def test_longrag_context_is_a_placeholder_value_not_a_template():
    """A context holding '{question}' is text: it is not filled in a second time."""
    item = KINDS["longqa"].normalize({**LONGRAG, "context": "본문 {question} 본문"})
    assert prompts.longqa_prompt(item).count("첫째 문서의 주제는?") == 1


class CharTokenizer:
    """One token per character; the chat template wraps the user turn."""

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(map(chr, ids))


@pytest.mark.parametrize("own_prompt", [True, False])
def test_bench_prompts_truncate_the_context_to_fit(own_prompt):
    item = {"id": "x", **KINDS["longqa"].normalize({**LONGRAG, "prompt": LONGRAG_PROMPT if own_prompt else None})}
    spec = {"kind": "longqa", "prompt_template": "longqa_ko", "max_new_tokens": 50, "context_tokens": 10_000}
    max_len = 1200
    (ps, extras) = eval_worker.bench_prompts(CharTokenizer(), spec, [item], max_len)
    text, ids = ps[0]
    assert extras[0]["prompt_source"] == ("row" if own_prompt else "template")
    assert len(ids) <= max_len - spec["max_new_tokens"]
    kept = extras[0]["context_tokens"]
    assert 0 < kept < len(item["context"])
    assert item["context"][:kept] in text and item["question"] in text  # the start is kept
    assert ("첫째 문서, 둘째 문서" in text) == own_prompt
    # A budget below the room: context_tokens rules.
    (ps, extras) = eval_worker.bench_prompts(CharTokenizer(), {**spec, "context_tokens": 100}, [item], max_len)
    assert extras[0]["context_tokens"] == 100


# --- decontamination -------------------------------------------------------------------------

PASSAGE = ("지난 봄 라모 시의 시장은 새로운 도서관을 열었고 그 도서관에는 오래된 지도와 "
           "희귀한 책이 많이 모여 있어서 방문객이 끊이지 않았다")  # 17 words


def _index(n=13, **extra):
    items = {"lq": [{"context": PASSAGE, "question": "도서관을 연 사람은?"}],
             "mc": [{"question": "다음 중 라모 시의 시장이 봄에 새로 연 건물로 옳은 것은 무엇인가?"}],  # 9 words
             **extra}
    kinds = {"lq": "longqa", "mc": "mcqa", "mt": "mtbench"}
    return decontamination.BenchmarkIndex(items, kinds, n)


def test_words_normalize_case_width_and_punctuation():
    assert decontamination.words("Ｈｅｌｌｏ,  World!  서울은… 크다") == ["hello", "world", "서울은", "크다"]


@pytest.mark.parametrize("text, hit", [
    (PASSAGE, "lq"),
    ("앞말 " + " ".join(PASSAGE.split()[2:15]) + " 뒷말", "lq"),       # 13 consecutive words inside
    ("앞말 " + " ".join(PASSAGE.split()[2:14]) + " 뒷말", None),       # 12: no 13-gram
    (PASSAGE.upper().replace(" ", "  ,"), "lq"),                         # punctuation and spacing differ
    ("질문: 다음 중 라모 시의 시장이 봄에 새로 연 건물로 옳은 것은 무엇인가? 답: A", "mc"),  # a short text whole
    ("도서관을 연 사람은?", None),                                       # under MIN_WORDS: not indexed
    ("전혀 다른 이야기를 하는 평범한 대화 문장입니다", None),
])
def test_index_matches_13_grams_and_whole_short_texts(text, hit):
    assert _index().match(text) == hit


def test_index_n_is_the_config_ngram():
    text = " ".join(PASSAGE.split()[:8])
    assert _index(13).match(text) is None and _index(8).match(text) == "lq"


def test_mtbench_turns_are_indexed():
    turn = "당신이 유명한 요리사라고 생각하고 오늘 저녁 메뉴를 세 가지 추천하고 그 이유를 자세히 설명해 주세요"
    index = _index(mt=[{"turns": [turn, "짧은 둘째 질문"]}])
    assert index.match(f"사용자: {turn}") == "mt"


@pytest.mark.parametrize("action, kept_ids, dropped", [("drop", ["b"], 2), ("report", ["a", "b", "c"], 0)])
def test_check_rows_drops_or_reports(action, kept_ids, dropped):
    rows = [{"id": "a", "messages": [{"role": "user", "content": "요약해 줘"}, {"role": "assistant", "content": PASSAGE}]},
            {"id": "b", "messages": [{"role": "user", "content": "안녕"}, {"role": "assistant", "content": "안녕하세요"}]},
            {"id": "c", "messages": [{"role": "user", "content": PASSAGE}, {"role": "assistant", "content": "네"}]}]
    kept, report = decontamination.check_rows(rows, _index(), action)
    assert [r["id"] for r in kept] == kept_ids
    assert report == {"ngram": 13, "action": action, "checked": 3, "overlapping": 2, "dropped": dropped,
                      "by_benchmark": {"lq": 2}, "example_ids": ["a", "c"]}
    with pytest.raises(ValueError, match="expected one of"):
        decontamination.check_rows(rows, _index(), "warn")
