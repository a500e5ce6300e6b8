"""Data preparation: the demo generator, the prepared-data schema (docs/data.md), local-file
overrides and one-line errors for bad inputs."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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
    assert all(len(r["turns"]) == 2 and (r["reference"] is None or len(r["reference"]) == 2) for r in mt)
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
                assert set(it) == {"id", "context", "question", "answer", "titles"}
                assert it["answer"] and isinstance(it["titles"], list)
            else:
                assert set(it) == {"id", "category", "turns", "reference"}
                assert len(it["turns"]) == 2


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
                     "sft": {"dataset": "MANTA-1M", "split": "train", "local_file": str(tmp_path / "manta.jsonl"),
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
    proc = subprocess.run([sys.executable, "-m", "workflow_scripts.stages.data", "--spec", json.dumps(spec),
                           "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: benchmark kmmlu_redux") and "'solution'" in last
