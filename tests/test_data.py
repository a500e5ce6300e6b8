"""Data preparation: the demo generator, the prepared-data schema (docs/data.md), local-file
overrides and one-line errors for bad inputs."""
import copy
import json
from pathlib import Path

import pytest
import yaml
from conftest import assert_one_line_error, run_main

from workflow_scripts import REPO
from workflow_scripts.common import StageError
from workflow_scripts.demo import data as demo_data
from workflow_scripts.evaluation import prompts
from workflow_scripts.stages import data

DEMO = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def demo_spec(raw_dir):
    """demo.yaml's data/benchmarks with every local file moved into raw_dir."""
    spec = {"data": copy.deepcopy(DEMO["data"]), "benchmarks": copy.deepcopy(DEMO["benchmarks"]), "seed": 42}
    spec["data"]["sft"]["local_file"] = str(raw_dir / "sft.jsonl")
    for cfg in spec["benchmarks"].values():
        cfg["local_file"] = str(raw_dir / Path(cfg["local_file"]).name)
    return spec


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    spec = demo_spec(root / "out" / "demo_raw")
    data.prepare(spec, root / "out")
    return spec, root / "out"


def test_generator_is_deterministic(tmp_path):
    demo_data.generate(tmp_path / "a", seed=42)
    demo_data.generate(tmp_path / "b", seed=42)
    demo_data.generate(tmp_path / "c", seed=7)
    for name in demo_data.FILES.values():
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "mcqa.jsonl").read_bytes() != (tmp_path / "c" / "mcqa.jsonl").read_bytes()


def test_generator_writes_the_raw_layout_of_the_real_sets(prepared):
    _, out = prepared
    raw = out / "demo_raw"
    sft = read_jsonl(raw / "sft.jsonl")
    assert all({m["role"] for m in r["conversations"]} <= {"system", "user", "assistant"} for r in sft)
    mcqa = read_jsonl(raw / "mcqa.jsonl")
    assert all(isinstance(r["solution"], str) and len(r["options"]) == 4 for r in mcqa)
    assert {r["solution"] for r in mcqa} == {"1", "2", "3", "4"}
    longqa = read_jsonl(raw / "longqa.jsonl")
    assert all(r["answer"] in r["context"] and r["titles"][0] in r["context"] and r["prompt"] for r in longqa)
    mt = read_jsonl(raw / "mtbench.jsonl")
    assert all(len(r["turns"]) == 2 and len(r["reference"]) in (0, 2) for r in mt)
    assert all(prompts.own_longqa_prompt(r["prompt"]) for r in longqa)  # placeholders, as Ko-LongRAG's
    corpus = (raw / "corpus.txt").read_text(encoding="utf-8").splitlines()
    assert any("입니다" in d for d in corpus) and any(" is " in d for d in corpus)


def _check_messages(row):
    assert isinstance(row["id"], str)
    assert row["messages"] and all(set(m) == {"role", "content"} for m in row["messages"])
    assert any(m["role"] == "assistant" for m in row["messages"])


def test_prepared_files_follow_the_schema(prepared):
    spec, out = prepared
    train, val, calib = (read_jsonl(out / f) for f in ("sft_train.jsonl", "sft_val.jsonl", "calib.jsonl"))
    for row in train + val + calib:
        _check_messages(row)
    n = min(len(read_jsonl(out / "demo_raw" / "sft.jsonl")), spec["data"]["sft"]["max_samples"])
    assert len(train) + len(val) == n
    assert len(val) == round(n * spec["data"]["sft"]["val_fraction"])
    assert len(calib) == spec["data"]["calibration"]["num_samples"]
    assert {r["id"] for r in calib} <= {r["id"] for r in train}
    assert not {r["id"] for r in val} & {r["id"] for r in train}
    assert (out / "corpus.txt").read_text(encoding="utf-8").strip()

    for name, cfg in spec["benchmarks"].items():
        items = read_jsonl(out / "bench" / f"{name}.jsonl")
        raw = read_jsonl(cfg["local_file"])
        assert len(items) == min(cfg["max_samples"], len(raw)) and len({i["id"] for i in items}) == len(items)
        for it in items:
            if cfg["kind"] == "mcqa":
                assert set(it) == {"id", "question", "options", "answer"}
                assert isinstance(it["answer"], int) and 1 <= it["answer"] <= len(it["options"])
            elif cfg["kind"] == "longqa":
                assert set(it) == {"id", "context", "question", "answer", "titles", "prompt"}
                assert it["answer"] and isinstance(it["titles"], list)
                assert prompts.longqa_prompt(it) == prompts.longqa_prompt({**it, "prompt": None})  # demo: same text
            else:
                assert set(it) == {"id", "category", "turns", "reference"}
                assert len(it["turns"]) == 2 and (it["reference"] is None or len(it["reference"]) == 2)
    report = json.loads((out / data.REPORT).read_text())
    assert report["decontamination"]["action"] == "report" and report["decontamination"]["dropped"] == 0
    assert report["longqa_prompts"] == {"demo_longqa": {"row": spec["benchmarks"]["demo_longqa"]["max_samples"],
                                                        "template": 0}}


def _parse_mcqa_chat(messages):
    """(question, options, 1-based answer) of an MCQA-format training chat."""
    lines = messages[0]["content"].split("\n")
    question = next(l for l in lines if l.startswith("질문: "))[len("질문: "):]
    options = [l[3:] for l in lines if l[:3] in {"A. ", "B. ", "C. ", "D. "}]
    return question, options, "ABCD".index(messages[-1]["content"][-1]) + 1


def test_demo_mcqa_is_taught_in_the_eval_format_but_not_copied(prepared):
    """Training holds MCQA chats in the evaluation prompt format ('정답: C') about every test
    fact, with the test item's options and answer but other question wordings: the tiny model
    learns the facts' answers, never a test question."""
    _, out = prepared
    train = read_jsonl(out / "sft_train.jsonl")
    header = prompts.TEMPLATES["mcqa_ko"].split("{question}")[0]
    chats = [r["messages"] for r in train if r["messages"][0]["content"].startswith(header)]
    assert len(chats) > len(train) // 4
    assert all(m[-1]["content"] in {"정답: A", "정답: B", "정답: C", "정답: D"} for m in chats)
    by_options = {}
    for m in chats:  # the chat is exactly what the evaluation would prompt
        q, opts, ans = _parse_mcqa_chat(m)
        assert m[0]["content"] == prompts.mcqa_prompt({"question": q, "options": opts})
        by_options.setdefault(tuple(opts), []).append((q, ans))
    test = read_jsonl(out / "bench" / "demo_mcqa.jsonl")
    for it in test:
        taught = by_options.get(tuple(it["options"]), [])
        assert taught, it["id"]
        assert it["answer"] in {a for _, a in taught}  # (two facts may share an option list)
        assert it["question"] not in {q for q, _ in taught}

def _tiny_sft(path):
    rows = [{"conversations": [{"role": "user", "content": f"질문 {i}"},
                               {"role": "assistant", "content": f"답 {i}"}]} for i in range(20)]
    rows.append({"conversations": [{"role": "user", "content": "답이 없는 대화"}]})  # skipped
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _local_spec(tmp_path, bench_rows, kind="mcqa", suffix=".json"):
    _tiny_sft(tmp_path / "manta.jsonl")
    bench = tmp_path / f"kmmlu{suffix}"
    bench.write_text(json.dumps(bench_rows, ensure_ascii=False), encoding="utf-8")
    return {"seed": 42,
            "data": {"generate_demo": False, "calibration": {"num_samples": 5},
                     "decontamination": {"action": "drop", "ngram": 13},
                     "sft": {"dataset": "LGAI-EXAONE/MANTA-1M", "split": "train", "local_file": str(tmp_path / "manta.jsonl"),
                             "field": "conversations", "max_samples": None, "val_fraction": 0.2}},
            "benchmarks": {"kmmlu_redux": {"kind": kind, "dataset": "LGAI-EXAONE/KMMLU-Redux", "split": "test",
                                           "local_file": str(bench), "max_samples": None}}}


KMMLU_ROWS = [{"question": "1+1은?", "options": ["1", "3", "2", "4"], "solution": "3", "category": "math"},
              {"question": "하늘의 색은?", "options": ["파랑", "빨강", "초록", "검정"], "solution": "1"}]


def test_local_file_overrides_the_hub(tmp_path):
    spec = _local_spec(tmp_path, KMMLU_ROWS)
    counts = data.prepare(spec, tmp_path / "out")
    items = read_jsonl(tmp_path / "out" / "bench" / "kmmlu_redux.jsonl")
    assert [i["answer"] for i in items] == [3, 1]
    assert items[0]["options"] == ["1", "3", "2", "4"] and items[0]["question"] == "1+1은?"
    # 20 usable conversations (one without an answer is skipped): 4 val, 16 train, 5 calib.
    assert (counts["sft_train"], counts["sft_val"], counts["calib"]) == (16, 4, 5)
    assert (tmp_path / "out" / "corpus.txt").read_text() == ""


@pytest.mark.parametrize("rows, field", [
    ([{"question": "q", "options": ["a", "b"]}], "solution"),
    ([{"question": "q", "options": ["a", "b"], "solution": "5"}], "solution"),
    ([{"question": "q", "options": "a b", "solution": "1"}], "options"),
])
def test_bad_benchmark_rows_name_the_set_and_field(tmp_path, rows, field):
    spec = _local_spec(tmp_path, rows)
    with pytest.raises(StageError) as err:
        data.prepare(spec, tmp_path / "out")
    msg = str(err.value)
    assert "kmmlu_redux" in msg and field in msg and "kmmlu.json" in msg and "\n" not in msg
    assert not (tmp_path / "out" / "sft_train.jsonl").exists()  # nothing half written


def test_bad_sources_name_the_set_and_what_is_wrong(tmp_path):
    spec = _local_spec(tmp_path, KMMLU_ROWS)
    spec["data"]["sft"]["field"] = "dialogue"
    with pytest.raises(StageError, match=r"data\.sft .*manta\.jsonl.*'dialogue'"):
        data.prepare(spec, tmp_path / "out")
    spec = _local_spec(tmp_path, KMMLU_ROWS)
    spec["benchmarks"]["kmmlu_redux"]["local_file"] = str(tmp_path / "missing.jsonl")
    with pytest.raises(StageError, match=r"kmmlu_redux .*missing\.jsonl.*does not exist"):
        data.prepare(spec, tmp_path / "out")
    spec = _local_spec(tmp_path, [{"context": "c", "question": "q"}], kind="longqa")
    with pytest.raises(StageError, match=r"kmmlu_redux.*'answer'"):
        data.prepare(spec, tmp_path / "out")


def test_split_sizes():
    rows = [{"id": str(i)} for i in range(100)]
    train, val, calib = data.split_sft(rows, 0.1, 32)
    assert (len(train), len(val), len(calib)) == (90, 10, 32)
    assert calib == train[:32]
    train, val, calib = data.split_sft(rows[:3], 0.01, 10)
    assert (len(train), len(val), len(calib)) == (2, 1, 2)


def test_cli_error_is_one_line(tmp_path):
    spec = _local_spec(tmp_path, [{"question": "q", "options": ["a", "b"]}])
    proc = run_main("stages.data", "--spec", json.dumps(spec), "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, "error: benchmark kmmlu_redux")
    assert "'solution'" in proc.stderr


# --- the real sets, in the schemas of their cards (docs/data.md); rows written here ---------

LONGRAG_PROMPT = "문서 제목: {titles}\n\n{context}\n\n위 문서만 보고 답하세요.\n질문: {question}"
LEAK = ("라모 시의 시장은 지난 봄 새로운 도서관을 열었고 그 도서관에는 오래된 지도와 희귀한 책이 "
        "많이 모여 있어서 방문객이 끊이지 않았다")  # 17 words of a benchmark context


def _card_rows(n_options_pro=5):
    pro = [{"question": f"전문 자격 문제 {i}번의 정답은?", "options": [f"보기 {k}" for k in range(n_options_pro)],
            "solution": str(1 + i % n_options_pro), "license_name": "변리사", "subject": "특허법"} for i in range(6)]
    redux = [{"question": f"기초 문제 {i}번의 정답은?", "options": ["가", "나", "다", "라"], "solution": str(1 + i % 4),
              "license_name": "기사", "subject": "전기", "category": "STEM"} for i in range(4)]
    longrag = [{"id": f"klr-{i}", "titles": [f"문서 {i}", f"문서 {i + 1}"], "context": f"{LEAK} 문서 {i}의 본문.",
                "question": f"문서 {i}의 본문은?", "answer": f"본문 {i}", "prompt": LONGRAG_PROMPT if i else "",
                "task": "singledocQA" if i % 2 else "multidocQA"} for i in range(3)]
    komt = [{"question_id": 1, "category": "writing", "turns": ["글을 써 주세요.", "줄여 주세요."], "reference": []},
            {"question_id": 2, "category": "math", "turns": ["1+2는?", "곱하면?"], "reference": ["3", ""]},
            {"question_id": 3, "category": "math", "turns": ["2+2는?", "곱하면?"], "reference": ["4", "4"]}]
    manta = [{"conversations": [{"role": "user", "content": f"질문 {i}"},
                                {"role": "assistant", "content": f"답 {i}" if i else f"요약: {LEAK}"}]}
             for i in range(12)]
    return {"kmmlu_pro": pro, "kmmlu_redux": redux, "ko_longrag": longrag, "komt_bench": komt, "manta": manta}


def _write(path, rows):
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _card_spec(tmp_path, suffix, action="drop", n_options_pro=5):
    rows = _card_rows(n_options_pro)
    for name, r in rows.items():
        _write(tmp_path / f"{name}{suffix}", r)
    kinds = {"kmmlu_pro": "mcqa", "kmmlu_redux": "mcqa", "ko_longrag": "longqa", "komt_bench": "mtbench"}
    real = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    bench = {name: {**real["benchmarks"][name], "local_file": str(tmp_path / f"{name}{suffix}")} for name in kinds}
    assert {n: b["kind"] for n, b in bench.items()} == kinds
    sft = {**real["data"]["sft"], "local_file": str(tmp_path / f"manta{suffix}"), "max_samples": None}
    return {"seed": 42, "benchmarks": bench,
            "data": {**real["data"], "sft": sft, "calibration": {"num_samples": 4},
                     "decontamination": {**real["data"]["decontamination"], "action": action}}}


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_real_set_schemas_are_prepared(tmp_path, suffix):
    spec = _card_spec(tmp_path, suffix)
    counts = data.prepare(spec, tmp_path / "out")
    bench = {n: read_jsonl(tmp_path / "out" / "bench" / f"{n}.jsonl") for n in spec["benchmarks"]}
    raw = _card_rows()
    assert [it["answer"] for it in bench["kmmlu_pro"]] == [int(r["solution"]) for r in raw["kmmlu_pro"]]
    assert all(len(it["options"]) == 5 for it in bench["kmmlu_pro"])
    assert [it["answer"] for it in bench["kmmlu_redux"]] == [1, 2, 3, 4]
    lq = bench["ko_longrag"]
    assert [it["id"] for it in lq] == ["klr-0", "klr-1", "klr-2"] and lq[1]["titles"] == ["문서 1", "문서 2"]
    assert "prompt" not in lq[0] and lq[1]["prompt"] == LONGRAG_PROMPT
    text = prompts.longqa_prompt(lq[1])
    assert text.startswith("문서 제목: 문서 1, 문서 2\n\n") and text.endswith("질문: 문서 1의 본문은?")
    assert prompts.longqa_prompt(lq[0], "longqa_ko").startswith(prompts.TEMPLATES["longqa_ko"][:10])
    mt = {it["id"]: it["reference"] for it in bench["komt_bench"]}
    assert mt == {"1": None, "2": ["3", None], "3": ["4", "4"]}
    # The MANTA row quoting a Ko-LongRAG context is dropped (config.yaml: action drop).
    report = json.loads((tmp_path / "out" / data.REPORT).read_text())
    found = report["decontamination"]
    assert {k: v for k, v in found.items() if k != "example_ids"} == {
        "ngram": 13, "action": "drop", "checked": 12, "overlapping": 1, "dropped": 1, "by_benchmark": {"ko_longrag": 1}}
    assert report["longqa_prompts"] == {"ko_longrag": {"row": 2, "template": 1}}
    assert counts["sft_train"] + counts["sft_val"] == 11
    sft = read_jsonl(tmp_path / "out" / "sft_train.jsonl") + read_jsonl(tmp_path / "out" / "sft_val.jsonl")
    assert not any("도서관" in m["content"] for r in sft for m in r["messages"])
    assert found["example_ids"][0] not in {r["id"] for r in sft}


def test_decontamination_report_keeps_the_rows(tmp_path):
    spec = _card_spec(tmp_path, ".jsonl", action="report")
    counts = data.prepare(spec, tmp_path / "out")
    report = json.loads((tmp_path / "out" / data.REPORT).read_text())["decontamination"]
    assert (report["overlapping"], report["dropped"], counts["sft_train"] + counts["sft_val"]) == (1, 0, 12)


def test_ten_option_sets_and_their_solutions(tmp_path):
    spec = _card_spec(tmp_path, ".jsonl", n_options_pro=10)
    data.prepare(spec, tmp_path / "out")
    items = read_jsonl(tmp_path / "out" / "bench" / "kmmlu_pro.jsonl")
    assert [it["answer"] for it in items] == [1, 2, 3, 4, 5, 6] and len(items[0]["options"]) == 10


def test_config_names_the_real_hub_ids():
    real = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert real["data"]["sft"]["dataset"] == "LGAI-EXAONE/MANTA-1M"
    assert {n: (b["dataset"], b["split"]) for n, b in real["benchmarks"].items()} == {
        "kmmlu_pro": ("LGAI-EXAONE/KMMLU-Pro", "test"), "kmmlu_redux": ("LGAI-EXAONE/KMMLU-Redux", "test"),
        "ko_longrag": ("LGAI-EXAONE/Ko-LongRAG", "test"), "komt_bench": ("LGAI-EXAONE/KoMT-Bench", "train")}


@pytest.mark.parametrize("error, gated", [
    ("Dataset 'LGAI-EXAONE/KMMLU-Pro' is a gated dataset on the Hub. You must be authenticated to access it.", True),
    ("401 Client Error: Unauthorized for url: https://huggingface.co/api/datasets/x", True),
    ("Couldn't find a dataset script at /x or any data file in the same directory.", False),
])
def test_hub_errors_are_one_line_and_say_how_to_get_a_gated_set(monkeypatch, error, gated):
    import datasets

    def fail(*args, **kwargs):
        raise RuntimeError(error + "\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", fail)
    cfg = {"kind": "mcqa", "dataset": "LGAI-EXAONE/KMMLU-Pro", "split": "test"}
    with pytest.raises(StageError) as err:
        data.Source("benchmark kmmlu_pro", cfg, Path("unused")).load()
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("benchmark kmmlu_pro (LGAI-EXAONE/KMMLU-Pro, split test)")
    hint = ["accept its terms", "https://huggingface.co/datasets/LGAI-EXAONE/KMMLU-Pro", "HF_TOKEN", "login"]
    assert all(h in msg for h in hint) == gated and any(h in msg for h in hint) == gated
