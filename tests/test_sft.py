"""LoRA SFT stage on the tiny model: the CLI trains, merges and saves full weights."""
import json
import shutil

import pytest
import torch
from conftest import assert_one_line_error, assert_same_tokenizer, run_main, run_training_stage, training_argv
from safetensors.torch import load_file

from workflow_scripts.common import StageError
from workflow_scripts.stages import sft
from workflow_scripts.stages.training import chat_sets, val_loss

PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RECIPE = dict(lora_r=8, lora_alpha=16, lora_dropout=0.0, target_modules=PROJ, learning_rate=3e-3,
              epochs=1, max_steps=10, batch_size=8, grad_accum=1, max_seq_length=128)


def run_sft(model, data, out, recipe=RECIPE):
    return run_training_stage("stages.sft", model, data, out, recipe)


def sft_error(model, data, out, recipe=RECIPE):
    """The CLI in-process: an error path needs no interpreter of its own."""
    return run_main("stages.sft", *training_argv(model, data, out, recipe))


@pytest.fixture(scope="module")
def sft_out(tiny_model_dir, tiny_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "base.sft"
    r = run_sft(tiny_model_dir, tiny_data_dir, out)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_val_loss_falls_and_metrics_recorded(sft_out):
    m = json.loads((sft_out / "sft_metrics.json").read_text())
    assert m["val_loss_after"] < m["val_loss_before"] - 0.1
    assert m["steps"] == RECIPE["max_steps"]
    assert m["train_seconds"] > 0
    # r * (in + out) per adapted projection: far fewer than the model's parameters.
    assert 0 < m["trainable_params"] < 200_000
    assert not (sft_out.parent / ".base.sft.tmp").exists()


def test_merged_weights_are_plain_and_differ_from_parent(sft_out, tiny_model_dir):
    parent = load_file(tiny_model_dir / "model.safetensors")
    merged = load_file(sft_out / "model.safetensors")
    assert set(merged) == set(parent), "merged checkpoint has other tensor names (peft keys?)"
    assert not any("lora" in k or "base_model" in k for k in merged)
    changed = {k for k in parent if not torch.equal(parent[k], merged[k])}
    assert changed and all(k.split(".")[-2] in PROJ for k in changed)
    assert all(merged[k].dtype == parent[k].dtype for k in parent)
    cfg = json.loads((sft_out / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["use_cache"] is True
    assert_same_tokenizer(tiny_model_dir, sft_out)


def test_reloads_with_the_recorded_val_loss_and_generates(sft_out, tiny_data_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(sft_out)
    model = AutoModelForCausalLM.from_pretrained(sft_out, dtype=torch.float32)
    assert not any("lora" in n for n, _ in model.named_modules())
    # The merge kept what was trained: the reloaded model scores the recorded loss.
    _, val_ds = chat_sets(tok, tiny_data_dir / "sft_train.jsonl", tiny_data_dir / "sft_val.jsonl", 128)
    recorded = json.loads((sft_out / "sft_metrics.json").read_text())["val_loss_after"]
    assert val_loss(model, tok, val_ds) == pytest.approx(recorded, abs=2e-3)
    prompt = tok.apply_chat_template([{"role": "user", "content": "서울의 상징색은?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]


def test_missing_model_is_one_line_exit_2(tmp_path, tiny_data_dir):
    r = sft_error(tmp_path / "nope", tiny_data_dir, tmp_path / "out")
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "nope")
    assert not (tmp_path / "out").exists()


def test_corrupt_weights_are_one_line_exit_2(tmp_path, tiny_model_dir, tiny_data_dir):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    (bad / "model.safetensors").write_bytes((tiny_model_dir / "model.safetensors").read_bytes()[:1000])
    r = sft_error(bad, tiny_data_dir, tmp_path / "out")
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "cannot be loaded")


def test_quantized_model_is_refused(tmp_path, tiny_model_dir, tiny_data_dir):
    quantized = tmp_path / "quantized"
    shutil.copytree(tiny_model_dir, quantized)
    cfg = json.loads((quantized / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "compressed-tensors", "format": "pack-quantized"}
    (quantized / "config.json").write_text(json.dumps(cfg))
    r = sft_error(quantized, tiny_data_dir, tmp_path / "out")
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "quantized")


def test_unmatched_target_module_is_refused(tmp_path, tiny_model_dir, tiny_data_dir):
    recipe = {**RECIPE, "target_modules": ["q_proj", "w_in"]}
    argv = ["--model", str(tiny_model_dir), "--train", str(tiny_data_dir / "sft_train.jsonl"),
            "--val", str(tiny_data_dir / "sft_val.jsonl"), "--recipe", json.dumps(recipe),
            "--out", str(tmp_path / "out")]
    with pytest.raises(StageError, match="w_in") as e:
        sft.main(argv)
    assert "\n" not in str(e.value) and "q_proj" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_recipe_missing_key_is_refused(tmp_path, tiny_model_dir, tiny_data_dir):
    recipe = {k: v for k, v in RECIPE.items() if k != "lora_r"}
    r = sft_error(tiny_model_dir, tiny_data_dir, tmp_path / "out", recipe)
    assert r.returncode == 2 and "lora_r" in r.stderr
