"""Teacher-generated training data: a recipe's `data` (data_mix), which jobs need the teacher file,
the summary's before/after column, and a real teacher run with vLLM on the tiny model."""
import json
import os
import re
import subprocess

import pytest
import yaml
from conftest import DEMO_RESULTS, SERVE_PY, needs_serve, serve_device

from workflow_scripts import REPO
from workflow_scripts.planning.config import ConfigError, load_plan
from workflow_scripts.planning.schema import section_defaults
from workflow_scripts.scoring import report
from workflow_scripts.stages import data_mix


def demo_config():
    return yaml.safe_load((REPO / "config" / "demo.yaml").read_text())


# --- recipe data -------------------------------------------------------------------------------

@pytest.mark.parametrize("data, needle", [
    ("teachr", "expected one of ['sft', 'teacher']"),
    ([], "non-empty list"),
    ([{"source": "teacher"}], "[0]: expected {source"),
    ([{"source": "web", "weight": 1}], "[0].source: expected one of"),
    ([{"source": "sft", "weight": 0}], "[0].weight: expected a number > 0"),
    ([{"source": "sft", "weight": 1}, {"source": "sft", "weight": 2}], "appears twice"),
])
def test_bad_recipe_data_is_one_config_line(data, needle):
    cfg = demo_config()
    cfg["recipe_overrides"]["tsft"]["data"] = data
    with pytest.raises(ConfigError) as err:
        load_plan(cfg, "demo.yaml")
    assert "recipes.tsft.data" in str(err.value) and needle in str(err.value), str(err.value)


def test_data_on_a_quantize_recipe_and_a_missing_teacher_are_config_errors():
    cfg = demo_config()
    cfg["recipe_overrides"]["gptq_w8a8"]["data"] = "teacher"
    with pytest.raises(ConfigError, match=r"recipes\.gptq_w8a8\.data: unknown key for a quantize step"):
        load_plan(cfg, "demo.yaml")
    cfg = demo_config()
    del cfg["teacher"]
    with pytest.raises(ConfigError, match=r"demo\.yaml: teacher: required: recipe 'tsft' trains on teacher data"):
        load_plan(cfg, "demo.yaml")
    cfg["lanes"] = ["w4a16", "sft"]  # no lane uses the teacher: none needed
    load_plan(cfg, "demo.yaml")


def test_train_file_routes_each_recipe():
    assert data_mix.train_file("sft", {"step": "sft"}, "base") == "sft_train.jsonl"
    assert data_mix.train_file("tsft", {"data": "teacher"}, "Qwen/Qwen2.5-7B-Instruct") == \
        "teacher/Qwen--Qwen2.5-7B-Instruct.jsonl"
    mix = {"data": [{"source": "sft", "weight": 1}, {"source": "teacher", "weight": 1}]}
    assert data_mix.train_file("msft", mix, "base") == "mix/msft.jsonl"


def test_mix_weights_multiply_row_counts():
    rows = {"sft": [{"id": f"s{i}"} for i in range(10)], "teacher": [{"id": f"t{i}"} for i in range(4)]}
    out = data_mix.mix(rows, [("sft", 0.5), ("teacher", 2.0)], seed=42)
    ids = [r["id"] for r in out]
    assert len([i for i in ids if i.startswith("s")]) == 5 and len(ids) == 5 + 8
    assert ids[5:] == ["t0", "t1", "t2", "t3", "t0~1", "t1~1", "t2~1", "t3~1"]
    assert len(set(ids)) == len(ids)
    assert data_mix.mix(rows, [("sft", 0.5)], 42) == data_mix.mix(rows, [("sft", 0.5)], 42)  # seeded
    assert data_mix.mix(rows, [("sft", 0.5)], 42) != data_mix.mix(rows, [("sft", 0.5)], 7)


def test_only_teacher_recipes_depend_on_the_teacher_file(demo_plan):
    """Through a Snakemake dry run of the demo: the teacher file is an input of exactly the
    sft/kd jobs of tsft and tkd, and nothing else reads it."""
    jobs = re.findall(r"rule (\w+):\n    input: (.*)\n    output: (.*)\n", demo_plan)
    readers = sorted(out for _, inp, out in jobs if f"{DEMO_RESULTS}/data/teacher/base.jsonl" in inp)
    assert readers == [f"{DEMO_RESULTS}/models/base.prune28.tkd", f"{DEMO_RESULTS}/models/base.tsft"]
    (teacher,) = [(inp, out) for rule, inp, out in jobs if rule == "teacher_data"]
    assert teacher[1] == f"{DEMO_RESULTS}/data/teacher/base.jsonl, {DEMO_RESULTS}/data/teacher/base.report.json"
    assert f"{DEMO_RESULTS}/models/base" in teacher[0] and f"{DEMO_RESULTS}/data/corpus.txt" in teacher[0]


# --- summary: before/after of each training step -------------------------------------------------

def test_training_cell_shows_each_steps_before_and_after(tmp_path):
    sft = tmp_path / "base.tsft"
    sft.mkdir()
    (sft / "sft_metrics.json").write_text(json.dumps(
        {"recipe": {"data": "teacher"}, "val_loss_before": 2.5, "val_loss_after": 2.0}))
    kd = tmp_path / "base.prune28.tkd"
    kd.mkdir(parents=True)
    (kd / "kd_metrics.json").write_text(json.dumps(
        {"recipe": {"data": [{"source": "sft", "weight": 1}, {"source": "teacher", "weight": 0.5}]},
         "val_kl_before": 0.8, "val_kl_after": 0.3, "val_ce_before": 3.0, "val_ce_after": 2.75}))
    assert report.training_cell(tmp_path, ["tsft", "gptq_w8a8"]) == "tsft[teacher] val loss 2.500->2.000"
    assert report.training_cell(tmp_path, ["prune28", "tkd", "gptq_w4a16"]) == \
        "tkd[sft*1+teacher*0.5] val KL 0.800->0.300, CE 3.000->2.750"
    assert report.training_cell(tmp_path, ["gptq_w4a16"]) is None


# --- a real teacher run: vLLM on the tiny model ---------------------------------------------------

@needs_serve
def test_teacher_run_on_tiny_model(tiny_model_dir, tiny_data_dir, tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_text("서울은 대한민국의 수도입니다. 서울의 상징색은 빨강입니다.\n\n부산은 항구 도시입니다.\n")
    # The teacher section as validation fills it (the schema holds the defaults), then this test's values.
    teacher = {"model": "base", "batch_size": section_defaults("teacher")["batch_size"],
               "sft_prompts": {"max_samples": 24},
               "documents": {**section_defaults("teacher", "documents"), "max_samples": 8},
               "sampling": {**section_defaults("teacher", "sampling"), "temperature": 0.8, "max_new_tokens": 24, "seed": 7},
               "filters": {**section_defaults("teacher", "filters"), "drop_truncated": False}}
    spec = {"teacher": teacher,
            "serve": {"max_model_len": 512, "gpu_memory_utilization": 0.05, "kv_cache_space_gib": 1,
                      "enforce_eager": True, "seed": 42}}
    out, rep = tmp_path / "teacher" / "tiny.jsonl", tmp_path / "teacher" / "tiny.report.json"
    proc = subprocess.run(
        [str(SERVE_PY), "-m", "workflow_scripts.stages.teacher", "--model", str(tiny_model_dir), "--teacher-id", "tiny",
         "--prompts", str(tiny_data_dir / "sft_train.jsonl"), "--documents", str(docs), "--spec", json.dumps(spec),
         "--out", str(out), "--report", str(rep)],
        cwd=REPO, capture_output=True, text=True, timeout=400,
        env={**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    r = json.loads(rep.read_text())
    assert r["prompts"] == {"sft_prompts": 24, "documents": 2, "total": 26}  # the blank line is no passage
    assert r["kept"] + sum(r["dropped"].values()) == 26 == r["kept"] + r["dropped_total"]
    assert r["sampling"]["seed"] == 7 and r["runtime"]["device"] == serve_device() and r["generated_tokens"] > 0
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == r["kept"] > 0
    for row in rows:
        prov = row["provenance"]
        assert prov["teacher"] == "tiny" and prov["seed"] == 7 and prov["seed_scope"] == "engine"
        assert prov["sampling"] == {"temperature": 0.8, "top_p": 0.9, "max_new_tokens": 24, "repetition_penalty": 1.0}
        assert prov["source"] in ("sft_prompts", "documents") and row["id"] == f"teacher-{prov['prompt_id']}"
        assert [m["role"] for m in row["messages"]][-2:] == ["user", "assistant"]
        assert row["messages"][-1]["content"].strip() and prov["tokens"] > 0
    assert len({r["id"] for r in rows}) == len(rows)

    # The rows are training data for the sft/kd stages as they are.
    from transformers import AutoTokenizer

    from workflow_scripts.stages.chat_data import chat_dataset

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert len(chat_dataset(tok, rows, 128)) == len(rows)
