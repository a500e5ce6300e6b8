"""The quantize stage on the tiny model: every scheme's saved tensors and config, reload and
generation with transformers, and the one-line errors. Calibration is kept tiny (4 x 64 tokens)."""
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, TINY_ARCH, assert_same_tokenizer, run_main
from safetensors import safe_open

from workflow_scripts.demo import model as demo_model
from workflow_scripts.planning.steps import with_defaults
from workflow_scripts.stages.quantize import quantize

CALIB = {"num_calibration_samples": 4, "max_seq_length": 64}
RECIPES = {
    "w4a16": {"scheme": "W4A16", "method": "gptq", "group_size": 128, "dampening_frac": 0.01, **CALIB},
    "w8a16": {"scheme": "W8A16", "method": "gptq", "dampening_frac": 0.1, **CALIB},
    "w8a8_gptq": {"scheme": "W8A8", "method": "gptq", "dampening_frac": 0.01, **CALIB},
    "w8a8_minmax": {"scheme": "W8A8", "method": "minmax", **CALIB},
    "fp8_dynamic": {"scheme": "FP8_DYNAMIC", "method": "minmax"},
    "fp8_static": {"scheme": "FP8", "method": "minmax", **CALIB},
}
# What each scheme must save: the weight tensor's name suffix and dtype, how many values one
# stored element holds along `in`, and the quantization_config weight / activation args.
INT4 = dict(key="weight_packed", dtype=torch.int32, per_elem=8, num_bits=4, type="int",
            strategy="group", group_size=128, fmt="pack-quantized", act=None)
EXPECT = {
    "w4a16": INT4,
    # compressed-tensors 0.13's W8A16 preset is channel-wise and packs 4 int8 into an int32.
    "w8a16": dict(INT4, per_elem=4, num_bits=8, strategy="channel", group_size=None),
    "w8a8_gptq": dict(key="weight", dtype=torch.int8, per_elem=1, num_bits=8, type="int",
                      strategy="channel", group_size=None, fmt="int-quantized",
                      act=dict(num_bits=8, type="int", dynamic=True, strategy="token")),
    "fp8_dynamic": dict(key="weight", dtype=torch.float8_e4m3fn, per_elem=1, num_bits=8,
                        type="float", strategy="channel", group_size=None, fmt="float-quantized",
                        act=dict(num_bits=8, type="float", dynamic=True, strategy="token")),
    "fp8_static": dict(key="weight", dtype=torch.float8_e4m3fn, per_elem=1, num_bits=8,
                       type="float", strategy="tensor", group_size=None, fmt="float-quantized",
                       act=dict(num_bits=8, type="float", dynamic=False, strategy="tensor")),
}
EXPECT["w8a8_minmax"] = EXPECT["w8a8_gptq"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "workflow_scripts.stages.quantize", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, tiny_model_dir, tiny_data_dir):
    """name -> output folder; each recipe is quantized once, on first use. W4A16 goes through
    the CLI (exit code, summary line); the others call quantize() in-process to save imports."""
    root, done = tmp_path_factory.mktemp("quantized"), {}

    def get(name):
        if name not in done:
            out = root / f"base.{name}"
            calib = tiny_data_dir / "calib.jsonl"
            if name == "w4a16":
                r = run_cli("--model", tiny_model_dir, "--calib", calib,
                            "--recipe", json.dumps(RECIPES[name]), "--out", out)
                assert r.returncode == 0, r.stderr[-2000:]
                assert f"-> {out}: W4A16 (gptq)" in r.stdout
            else:
                quantize(tiny_model_dir, calib, RECIPES[name], out)
            done[name] = out
        return done[name]

    return get


def tensors(folder):
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.mark.parametrize("name", list(RECIPES))
def test_saved_tensors_and_config(quantized, tiny_model_dir, name):
    out, exp, recipe = quantized(name), EXPECT[name], RECIPES[name]
    t = tensors(out)
    base_t = tensors(tiny_model_dir)

    # Every Linear of the decoder is stored quantized, with its scales.
    linears = [k[: -len(".weight")] for k in base_t if ".layers." in k and k.endswith("proj.weight")]
    assert len(linears) == 4 * 7
    for lin in linears:
        w, w0 = t[f"{lin}.{exp['key']}"], base_t[f"{lin}.weight"]
        assert w.dtype == exp["dtype"], lin
        assert tuple(w.shape) == (w0.shape[0], w0.shape[1] // exp["per_elem"]), lin
        scale = t[f"{lin}.weight_scale"]
        if exp["strategy"] == "group":
            assert tuple(scale.shape) == (w0.shape[0], w0.shape[1] // exp["group_size"])
        elif exp["strategy"] == "channel":
            assert tuple(scale.shape) == (w0.shape[0], 1)
        assert (f"{lin}.input_scale" in t) == (exp["act"] is not None and not exp["act"]["dynamic"])

    # lm_head (tied to the embeddings) stays full precision and unchanged.
    assert not any(k.startswith("lm_head.") for k in t if k != "lm_head.weight")
    assert torch.equal(t["model.embed_tokens.weight"], base_t["model.embed_tokens.weight"])

    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["format"] == exp["fmt"] and qc["quant_method"] == "compressed-tensors"
    assert "lm_head" in qc["ignore"]
    (group,) = qc["config_groups"].values()
    wargs = group["weights"]
    assert (wargs["num_bits"], wargs["type"], wargs["strategy"], wargs["group_size"]) == \
        (exp["num_bits"], exp["type"], exp["strategy"], exp["group_size"])
    act = group["input_activations"]
    assert (act is None) == (exp["act"] is None)
    if act:
        assert {k: act[k] for k in exp["act"]} == exp["act"]

    info = json.loads((out / "quantize.json").read_text())
    assert info["recipe"] == with_defaults("quantize", recipe) and info["scheme"] == recipe["scheme"]
    assert info["method"] == recipe["method"] and info["seconds"] > 0
    assert info["calibration_samples"] == (0 if name == "fp8_dynamic" else 4)
    assert info["size_bytes"] < (tiny_model_dir / "model.safetensors").stat().st_size
    assert_same_tokenizer(tiny_model_dir, out)
    assert not list(out.parent.glob(f".{out.name}.tmp*"))


@pytest.mark.parametrize("name", list(RECIPES))
def test_reloads_and_generates(quantized, tiny_model_dir, name):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = quantized(name)
    # Without a dtype transformers 4.57 loads compressed-tensors checkpoints in fp16.
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert torch.equal(model.lm_head.weight, ref.lm_head.weight)
    assert getattr(model.lm_head, "quantization_scheme", None) is None

    ids = tok.apply_chat_template([{"role": "user", "content": "서울의 상징색은?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=4, do_sample=False)
        logits, ref_logits = model(ids["input_ids"]).logits, ref(ids["input_ids"]).logits
    assert gen.shape[1] == ids["input_ids"].shape[1] + 4
    # Quantized, so not identical to the base model, but close to it (loaded right).
    rel = ((logits - ref_logits).norm() / ref_logits.norm()).item()
    assert 0 < rel < 0.5, rel


def assert_one_line_error(r, *needles):
    """The CLI's failure (run in-process: run_main) is exit 2 and one `error:` line."""
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    for needle in needles:
        assert str(needle) in errors[0]


def test_missing_model_dir(tmp_path, tiny_data_dir):
    missing, out = tmp_path / "nope", tmp_path / "nope.gptq_w4a16"
    r = run_main("stages.quantize", "--model", missing, "--calib", tiny_data_dir / "calib.jsonl",
                 "--recipe", json.dumps(RECIPES["w4a16"]), "--out", out)
    assert_one_line_error(r, missing, "does not exist")
    assert not out.exists()


def test_dims_not_divisible_by_group(tmp_path, tiny_model_dir, tiny_data_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    model_dir, out = tmp_path / "h96", tmp_path / "h96.gptq_w4a16"
    demo_model.save(demo_model.build_model(tok, dict(TINY_ARCH, hidden_size=96)), tok, model_dir)
    r = run_main("stages.quantize", "--model", model_dir, "--calib", tiny_data_dir / "calib.jsonl",
                 "--recipe", json.dumps(RECIPES["w4a16"]), "--out", out)
    assert_one_line_error(r, model_dir, "model.layers.0.self_attn.q_proj", "96", "group size 128")
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))


def test_already_quantized(tmp_path, quantized, tiny_data_dir):
    src, out = quantized("w4a16"), tmp_path / "twice"
    r = run_main("stages.quantize", "--model", src, "--calib", tiny_data_dir / "calib.jsonl",
                 "--recipe", json.dumps(RECIPES["w8a8_gptq"]), "--out", out)
    assert_one_line_error(r, src, "already quantized")
    assert not out.exists()
