"""The families run (tests/configs/families.yaml, `make test-families`): the workflow on a tiny base
of each other family, its reduced lane set evaluated in the serve env's vLLM and checked by the
serve target, then every model read back. Tier: families (slow, about 4 minutes a family)."""
import csv
import json
import subprocess
import sys
import time

import pytest
from conftest import needs_serve

from workflow_scripts import REPO
from workflow_scripts.planning.families import family

FAMILIES = ["qwen2", "qwen3", "llama", "mistral"]  # exaone4: the demo and the e2e tier
CONFIG = REPO / "tests" / "configs" / "families.yaml"
pytestmark = [pytest.mark.families, needs_serve]


def tensor_dtypes(folder):
    """{tensor name: safetensors dtype} of a model folder, from the files' headers."""
    from safetensors import safe_open

    out = {}
    for f in folder.glob("*.safetensors"):
        with safe_open(f, "pt") as st:
            out.update({k: st.get_slice(k).get_dtype() for k in st.keys()})
    return out


@pytest.fixture(scope="module", params=FAMILIES)
def run(request, tmp_path_factory):
    """One family's whole run in a working directory of its own: (results folder, seconds)."""
    fam, work = request.param, tmp_path_factory.mktemp(request.param)
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
         "--configfile", str(CONFIG), "--cores", "2", "--resources", "gpu=1",
         "--config", f"base={{demo: {{model_type: {fam}}}}}", f"results=results/families/{fam}"],
        cwd=REPO, capture_output=True, text=True)
    seconds = time.time() - start
    print(f"families run {fam}: {seconds:.0f} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return fam, work / "results" / "families" / fam, seconds


def test_every_lane_evaluates_and_passes_the_serve_target(run):
    fam, results, _ = run
    with open(results / "summary.csv") as f:
        rows = {r["lane"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"base", "w4a16", "w8a8_gptq", "sft_w4a16", "prune28_kd_w4a16", "w4a16_mixed",
                         "w4a16_postsft"}
    for lane, row in rows.items():
        assert row["status"] == "ok" and row["target"] == "ok", (fam, lane, row)
        # Evaluated: each benchmark has a value. (The brief base may score 0, and then no lane has
        # a Score: the run proves the lanes work for the family, not accuracy.)
        assert row["demo_mcqa"] != "" and row["demo_longqa"] != "", (fam, lane, row)
    base = json.loads((results / "models" / "base" / "config.json").read_text())
    assert base["model_type"] == fam


def test_quantized_weights_are_packed_and_the_head_is_not(run):
    fam, results, _ = run
    model = results / "models" / "base.gptq_w4a16"
    dtypes = tensor_dtypes(model)
    assert dtypes["model.layers.0.self_attn.q_proj.weight_packed"] == "I32"  # eight int4 per int32
    assert "model.layers.0.self_attn.q_proj.weight" not in dtypes
    assert not any(k.startswith("lm_head.weight_") for k in dtypes)
    if family(fam).qkv_bias:
        assert dtypes["model.layers.0.self_attn.q_proj.bias"] in ("F32", "BF16")
    w8a8 = tensor_dtypes(results / "models" / "base.gptq_w8a8")
    assert w8a8["model.layers.0.mlp.down_proj.weight"] == "I8"


def test_pruned_model_is_reindexed_with_its_config_rewritten(run):
    fam, results, _ = run
    pruned = results / "models" / "base.prune28"
    cfg = json.loads((pruned / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 3
    layers = {int(k.split(".")[2]) for k in tensor_dtypes(pruned) if k.startswith("model.layers.")}
    assert layers == {0, 1, 2}
    for key in family(fam).per_layer_config:
        assert len(cfg[key]) == 3, key
    if family(fam).window_layers:
        assert cfg[family(fam).window_layers] <= 3
    kd = json.loads((results / "models" / "base.prune28.kd.gptq_w4a16" / "config.json").read_text())
    assert kd["num_hidden_layers"] == 3


def test_mixed_precision_keeps_its_measured_layer_in_the_ignore_list(run):
    fam, results, _ = run
    model = results / "models" / "base.gptq_w4a16_mixed"
    kept = json.loads((model / "quantize.json").read_text())["kept_layers"]
    sensitivity = results / "analysis" / "base.gptq_w4a16.sensitivity.json"
    assert kept == sorted(json.loads(sensitivity.read_text())["ranking"][:2])  # most_sensitive: 2
    ignore = json.loads((model / "config.json").read_text())["quantization_config"]["ignore"]
    dtypes = tensor_dtypes(model)
    assert "lm_head" in ignore
    for layer in kept:
        assert f"model.layers.{layer}.self_attn.q_proj" in ignore
        assert f"model.layers.{layer}.self_attn.q_proj.weight" in dtypes  # full precision
    quantized = next(i for i in range(4) if i not in kept)
    assert f"model.layers.{quantized}.self_attn.q_proj.weight_packed" in dtypes


def test_post_sft_trained_the_family_norms(run):
    fam, results, _ = run
    metrics = json.loads((results / "models" / "base.gptq_w4a16.postsft" / "post_sft_metrics.json").read_text())
    # Per layer: input and post-attention norms (+ q/k norms on QK-norm families), and the final norm.
    per_layer = 4 if fam == "qwen3" else 2
    assert metrics["norm_tensors"] == 4 * per_layer + 1
