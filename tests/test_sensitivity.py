"""Per-layer sensitivity (workflow_scripts/stages/sensitivity.py) and the mixed-precision quantize it
feeds (keep_unquantized), on the tiny 4-layer model: a layer whose weights are scaled up ranks
first; most_sensitive keeps exactly the top-K layers of the file, in full precision, and the
checkpoint still loads in the target runtime."""
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, needs_target
from safetensors.torch import load_file, save_file

from workflow_scripts.stages.quantize import quantize

SCALED = 2  # the layer made sensitive
CALIB = {"num_calibration_samples": 4, "max_seq_length": 64}
W4A16 = {"scheme": "W4A16", "method": "gptq", "group_size": 128, "dampening_frac": 0.01, **CALIB}
MEASURE = {"num_calibration_samples": 4, "num_eval_samples": 4, "max_seq_length": 64}
PROJ = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


@pytest.fixture(scope="module")
def scaled_model(tmp_path_factory, tiny_model_dir):
    """The tiny model with two input columns of layer SCALED's down_proj scaled up to 1000. The
    unquantized model computes the same function (the gate rows feeding those columns are zeroed),
    but each row's 4-bit group scale follows the huge weight, so quantizing that layer rounds the
    rest of its MLP output away. (Scaling a whole layer would not do: EXAONE-4 normalizes every
    sublayer's output, and quantization error is relative to the weights' scale.)"""
    out = tmp_path_factory.mktemp("scaled") / "base"
    shutil.copytree(tiny_model_dir, out)
    path = out / "model.safetensors"
    t = load_file(path)
    for column in (0, 128):  # one per group of 128 inputs
        t[f"model.layers.{SCALED}.mlp.gate_proj.weight"][column] = 0
        t[f"model.layers.{SCALED}.mlp.down_proj.weight"][:, column] = 1000
    save_file(t, path, metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def sensitivity(tmp_path_factory, scaled_model, tiny_data_dir):
    out = tmp_path_factory.mktemp("analysis") / "base.gptq_w4a16.sensitivity.json"
    r = subprocess.run(
        [sys.executable, "-m", "workflow_scripts.stages.sensitivity", "--model", str(scaled_model),
         "--calib", str(tiny_data_dir / "calib.jsonl"), "--heldout", str(tiny_data_dir / "sft_val.jsonl"),
         "--recipe", json.dumps({"recipe": W4A16, "measure": MEASURE}), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    return out, json.loads(out.read_text())


def test_scaled_layer_is_the_most_sensitive(sensitivity):
    out, result = sensitivity
    assert out.with_suffix(".png").stat().st_size > 1000
    assert [r["layer"] for r in result["layers"]] == [0, 1, 2, 3]
    assert result["ranking"][0] == SCALED
    kl = {r["layer"]: r["kl"] for r in result["layers"]}
    assert all(v > 0 for v in kl.values())
    assert kl[SCALED] > 5 * max(v for layer, v in kl.items() if layer != SCALED), kl
    assert sorted(result["ranking"], key=lambda layer: -kl[layer]) == result["ranking"]
    # GPTQ reports its own error for each of the layer's 7 Linear modules.
    assert all(r["modules"] == 7 and r["quant_error"] is not None and r["quant_error"] > 0
               for r in result["layers"])
    assert result["eval_sequences"] == 4 and result["calibration_samples"] == 4


def linears_of(layers):
    return sorted(f"model.layers.{i}.{p}" for i in layers for p in PROJ)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, scaled_model, tiny_data_dir, sensitivity):
    out = tmp_path_factory.mktemp("mixed") / "base.gptq_w4a16_mixed"
    recipe = {**W4A16, "keep_unquantized": {"most_sensitive": 2, "sensitivity": "gptq_w4a16"}}
    quantize(scaled_model, [tiny_data_dir / "calib.jsonl"], recipe, out, sensitivity=sensitivity[0])
    return out


def test_most_sensitive_keeps_the_top_k_layers_unquantized(mixed, sensitivity):
    _, result = sensitivity
    top2 = sorted(sorted(result["layers"], key=lambda r: -r["kl"])[:2], key=lambda r: r["layer"])
    info = json.loads((mixed / "quantize.json").read_text())
    assert info["kept_layers"] == [r["layer"] for r in top2] and SCALED in info["kept_layers"]
    assert "largest KL" in info["kept_by"]

    qc = json.loads((mixed / "config.json").read_text())["quantization_config"]
    assert sorted(qc["ignore"]) == sorted(["lm_head", *linears_of(info["kept_layers"])])
    tensors = load_file(mixed / "model.safetensors")
    for lin in linears_of(range(4)):
        kept = int(lin.split(".")[2]) in info["kept_layers"]
        assert (f"{lin}.weight" in tensors) == kept, lin
        assert (f"{lin}.weight_packed" in tensors) == (not kept), lin


def test_explicit_layer_list_and_missing_sensitivity(tmp_path, tiny_model_dir, tiny_data_dir):
    from workflow_scripts.common import StageError

    out = tmp_path / "explicit"
    info = quantize(tiny_model_dir, tiny_data_dir / "calib.jsonl", {**W4A16, "keep_unquantized": [3, 0]}, out)
    assert info["kept_layers"] == [0, 3] and info["kept_by"] == "listed in the recipe"
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert sorted(qc["ignore"]) == sorted(["lm_head", *linears_of([0, 3])])
    with pytest.raises(StageError, match="needs --sensitivity"):
        quantize(tiny_model_dir, tiny_data_dir / "calib.jsonl",
                 {**W4A16, "keep_unquantized": {"most_sensitive": 1}}, tmp_path / "no_file")


@needs_target
def test_mixed_checkpoint_passes_the_target_check(mixed):
    from test_target_check import target_check

    r, verdicts = target_check(mixed)
    assert r.returncode == 0, r.stderr[-2000:]
    (verdict,) = verdicts
    assert verdict["ok"], verdict
    assert set(verdict["checks"].values()) == {"ok"}


def test_calibration_mix_draws_each_source_by_weight(tmp_path, tiny_model_dir, tiny_data_dir):
    from transformers import AutoTokenizer

    from workflow_scripts.stages.chat_data import calibration_set

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"plain document {i} about the sea" for i in range(20)) + "\n")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    calib = tiny_data_dir / "calib.jsonl"
    ds = calibration_set(tok, [calib, corpus], 8, 64, {"calib": 0.25, "corpus": 0.75})
    texts = [tok.decode(ids) for ids in ds["input_ids"]]
    plain = [t for t in texts if "plain document" in t]
    assert len(ds) == 8 and len(plain) == 6, texts
    assert texts != sorted(texts, key=lambda t: "plain document" in t)  # interleaved, not blocks
    # Without a mix: the first n conversations of the one file, as before.
    assert len(calibration_set(tok, calib, 5, 64)) == 5
    from workflow_scripts.common import StageError
    with pytest.raises(StageError, match="needs corpus.txt"):
        calibration_set(tok, [calib], 8, 64, {"calib": 1, "corpus": 1})
