"""Real-shape smoke run (opt-in, SMOKE_REAL_SHAPE=1; ~20 min and ~10 GB on 2 cores): an
EXAONE-4.0-1.2B-shaped model with random weights (config/smoke_real_shape.yaml) through GPTQ W4A16
and W8A8, pruning 30 -> 26 and evaluation on the CPU. It checks the shapes a tiny model cannot
(the tied 102400-row embedding, 30-layer re-indexing) and prints each stage's wall time and peak
memory from Snakemake's benchmark files (docs/smoke.md)."""
import csv
import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, TARGET_PY
from safetensors import safe_open

from workflow_scripts.planning.config import read_config

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(os.environ.get("SMOKE_REAL_SHAPE") != "1",
                                                   reason="opt-in: SMOKE_REAL_SHAPE=1 (about 20 minutes)")]
CONFIG = REPO / "config" / "smoke_real_shape.yaml"
RESULTS = yaml.safe_load(CONFIG.read_text())["results"]
LANES = ["base", "w4a16", "w8a8_gptq"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("smoke")
    targets = [f"{RESULTS}/metrics/{lane}{suffix}" for lane in LANES for suffix in (".json", ".target.json")]
    targets.append(f"{RESULTS}/models/base.prune26")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                           "--directory", str(work), "--configfile", str(CONFIG), "--resources", "gpu=1",
                           "--cores", "2", *targets], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work / RESULTS


def tensors(model_dir):
    """{name: (dtype, shape)} of a model folder's safetensors."""
    out = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            for k in f.keys():
                t = f.get_slice(k)
                out[k] = (t.get_dtype(), tuple(t.get_shape()))
    return out


def test_base_has_the_published_shape(work):
    cfg = json.loads((work / "models" / "base" / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"]) == (30, 2048, 4096)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]) == (32, 8, 102400)
    t = tensors(work / "models" / "base")
    assert t["model.embed_tokens.weight"][1] == (102400, 2048)
    assert cfg["tie_word_embeddings"] and "lm_head.weight" not in t  # stored once


@pytest.mark.parametrize("lane, key, dtype, per_elem", [("w4a16", "weight_packed", "I32", 8),
                                                         ("w8a8_gptq", "weight", "I8", 1)])
def test_quantized_weights_at_real_shape(work, lane, key, dtype, per_elem):
    folder = work / "models" / ("base.gptq_w4a16" if lane == "w4a16" else "base.gptq_w8a8")
    t = tensors(folder)
    for layer in (0, 29):
        for proj, (out_dim, in_dim) in {"self_attn.q_proj": (2048, 2048), "self_attn.k_proj": (512, 2048),
                                        "mlp.down_proj": (2048, 4096)}.items():
            assert t[f"model.layers.{layer}.{proj}.{key}"] == (dtype, (out_dim, in_dim // per_elem))
    assert t["model.embed_tokens.weight"][1] == (102400, 2048)  # the tied embedding stays full precision
    assert not any(k.startswith("lm_head.") for k in t)


def test_pruned_to_26_layers_reindexed_and_loadable_in_the_target(work):
    folder = work / "models" / "base.prune26"
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 26 and len(cfg["layer_types"]) == 26
    layers = {int(k.split(".")[2]) for k in tensors(folder) if k.startswith("model.layers.")}
    assert layers == set(range(26))
    r = subprocess.run([str(TARGET_PY), "-m", "workflow_scripts.shipping.target_check", "--model", str(folder),
                        "--target", json.dumps(read_config(CONFIG)["target"])],
                       capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[-1])["ok"], r.stdout[-2000:] + r.stderr[-2000:]


@pytest.mark.parametrize("lane", LANES)
def test_evaluated_and_shippable(work, lane):
    m = json.loads((work / "metrics" / f"{lane}.json").read_text())
    assert m["status"] == "ok" and m["speed"]["generated_tokens"] > 0, m.get("reason")
    assert json.loads((work / "metrics" / f"{lane}.target.json").read_text())["ok"]


def test_print_stage_figures(work):
    """Wall time and peak RSS of every job (Snakemake benchmark files), for docs/smoke.md."""
    rows = []
    for tsv in sorted((work / "benchmarks").rglob("*.tsv")):
        with open(tsv) as f:
            rec = next(csv.DictReader(f, delimiter="\t"))
        rows.append((str(tsv.relative_to(work / "benchmarks")), float(rec["s"]), float(rec["max_rss"])))
    for name, seconds, rss in rows:
        print(f"{name:45s} {seconds:8.1f} s {rss / 1024:8.2f} GB peak RSS")
    assert rows
