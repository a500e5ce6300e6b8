"""Norms-only post-SFT of a W4A16 compressed-tensors checkpoint: only the norm tensors change."""
import json

import pytest
import torch
from conftest import assert_one_line_error, run_main, run_training_stage, training_argv
from safetensors import safe_open

from workflow_scripts.stages import post_sft
from workflow_scripts.stages.training import chat_sets, val_loss

RECIPE = dict(learning_rate=3e-2, max_steps=8, batch_size=8, max_seq_length=128)


def run_post_sft(model, data, out, recipe=RECIPE):
    return run_training_stage("stages.post_sft", model, data, out, recipe)


def post_sft_error(model, data, out, recipe=RECIPE):
    """The CLI in-process: an error path needs no interpreter of its own."""
    return run_main("stages.post_sft", *training_argv(model, data, out, recipe))


def tensors(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            out.update({k: st.get_tensor(k) for k in st.keys()})
    return out


@pytest.fixture(scope="module")
def quantized_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model quantized to W4A16 (int4 packed in int32, group 128) by llmcompressor;
    weight-only min-max needs no calibration data."""
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("quant") / "base.w4a16"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    oneshot(model=model, output_dir=str(out),
            recipe=QuantizationModifier(targets="Linear", scheme="W4A16", ignore=["lm_head"]))
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def post_out(quantized_dir, tiny_data_dir):
    out = quantized_dir.parent / "base.w4a16.postsft"
    r = run_post_sft(quantized_dir, tiny_data_dir, out)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_val_loss_falls(post_out):
    m = json.loads((post_out / "post_sft_metrics.json").read_text())
    assert m["val_loss_after"] < m["val_loss_before"] - 0.05
    assert m["steps"] == RECIPE["max_steps"]
    # 4 layers x (q_norm, k_norm, post-attention, post-feedforward) + the final norm.
    assert m["norm_tensors"] == 17


def test_stays_quantized_and_only_norms_change(post_out, quantized_dir):
    assert json.loads((post_out / "config.json").read_text()) == \
        json.loads((quantized_dir / "config.json").read_text())
    before, after = tensors(quantized_dir), tensors(post_out)
    assert set(after) == set(before)
    packed = [k for k in before if k.endswith("weight_packed")]
    assert packed and all(before[k].dtype == torch.int32 for k in packed)
    norms = {k for k in before if k.endswith("norm.weight")}
    assert len(norms) == 17
    for k in before:
        assert after[k].dtype == before[k].dtype and after[k].shape == before[k].shape, k
        if k in norms:
            assert not torch.equal(after[k], before[k]), f"{k} was not trained"
        else:
            assert torch.equal(after[k], before[k]), f"{k} changed but is not a norm"


def test_reloads_with_the_recorded_val_loss(post_out, tiny_data_dir):
    model, tok = post_sft.load_dequantized(post_out)
    _, val_ds = chat_sets(tok, tiny_data_dir / "sft_train.jsonl", tiny_data_dir / "sft_val.jsonl", 128)
    recorded = json.loads((post_out / "post_sft_metrics.json").read_text())["val_loss_after"]
    assert val_loss(model, tok, val_ds) == pytest.approx(recorded, abs=2e-3)


def test_full_precision_input_is_refused(tmp_path, tiny_model_dir, tiny_data_dir):
    r = post_sft_error(tiny_model_dir, tiny_data_dir, tmp_path / "out")
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "not quantized")
    assert not (tmp_path / "out").exists()


def test_missing_model_is_one_line_exit_2(tmp_path, tiny_data_dir):
    r = post_sft_error(tmp_path / "nope", tiny_data_dir, tmp_path / "out")
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "nope")


def test_corrupt_weights_are_one_line_exit_2(tmp_path, quantized_dir, tiny_data_dir):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in quantized_dir.iterdir():
        data = f.read_bytes()
        (bad / f.name).write_bytes(data[:1000] if f.suffix == ".safetensors" else data)
    r = post_sft_error(bad, tiny_data_dir, tmp_path / "out")
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "cannot be loaded")
