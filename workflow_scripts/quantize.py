"""Quantization with llmcompressor `oneshot`: one stage for every quantize recipe.

Schemes (compressed-tensors presets): W4A16 and W8A16 (GPTQ, grouped weights), W8A8 (int8
weights + dynamic per-token int8 activations, by GPTQ or by plain min-max observers),
FP8_DYNAMIC (no calibration) and FP8 (static activation scales from calibration).
lm_head (tied to the embeddings on EXAONE) is never quantized. The result is saved
compressed, with the tokenizer and a small quantize.json, into --out; it is written to a
temporary folder beside --out and renamed at the end, so a crash never leaves half an --out.

    python -m workflow_scripts.quantize --model DIR --calib results/data/calib.jsonl \
        --recipe '{"scheme": "W4A16", "method": "gptq", "group_size": 128, ...}' --out DIR
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from workflow_scripts.common import (
    StageError,
    chat_text,
    check_model_dir,
    device_and_dtype,
    limit_threads,
    load_model,
    read_jsonl,
    run_cli,
    set_seed,
    write_json,
)

SCHEMES = ["W4A16", "W8A16", "W8A8", "FP8", "FP8_DYNAMIC"]
METHODS = ["gptq", "minmax"]
IGNORE = ["lm_head"]  # tied to embed_tokens on EXAONE; vLLM expects it in full precision
NEEDS_CALIBRATION = {"W4A16", "W8A16", "W8A8", "FP8"}  # FP8_DYNAMIC is data-free
DEFAULT_SAMPLES = 256
DEFAULT_SEQ_LEN = 1024


def parse_args(argv):
    p = argparse.ArgumentParser(prog="workflow_scripts.quantize", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="input model folder (Hugging Face format)")
    p.add_argument("--calib", required=True, help="calibration conversations (prepared JSONL)")
    p.add_argument("--recipe", required=True, help="recipe parameters as JSON (lanes.yaml minus `step`)")
    p.add_argument("--out", required=True, help="output model folder")
    return p.parse_args(argv)


def parse_recipe(text) -> dict:
    try:
        recipe = json.loads(text)
    except json.JSONDecodeError as e:
        raise StageError(f"--recipe is not valid JSON ({e})") from None
    if recipe.get("scheme") not in SCHEMES:
        raise StageError(f"recipe scheme {recipe.get('scheme')!r} is not one of {SCHEMES}")
    if recipe.get("method", "gptq") not in METHODS:
        raise StageError(f"recipe method {recipe.get('method')!r} is not one of {METHODS}")
    if recipe["scheme"] in ("W4A16", "W8A16") and recipe.get("method", "gptq") != "gptq":
        raise StageError(f"recipe scheme {recipe['scheme']} is quantized by GPTQ only (method: gptq)")
    return recipe


def quant_scheme(recipe):
    """The compressed-tensors preset for the recipe's scheme, with its group size applied."""
    from compressed_tensors.quantization import QuantizationScheme
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES

    preset = {k: v.model_copy(deep=True) for k, v in PRESET_SCHEMES[recipe["scheme"]].items()}
    weights = preset["weights"]
    if weights.strategy == "group" and recipe.get("group_size"):
        weights.group_size = int(recipe["group_size"])
    return QuantizationScheme(targets=["Linear"], **preset)


def make_modifier(recipe, scheme):
    """GPTQ for method gptq; plain observers (QuantizationModifier) for minmax."""
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    groups = {"group_0": scheme}
    if recipe.get("method", "gptq") == "gptq" and recipe["scheme"] != "FP8_DYNAMIC":
        return GPTQModifier(config_groups=groups, ignore=IGNORE,
                            dampening_frac=float(recipe.get("dampening_frac", 0.01)))
    return QuantizationModifier(config_groups=groups, ignore=IGNORE)


def check_quantizable(model_dir, model, scheme):
    """Grouped weights need every quantized Linear's input dim to be a multiple of the group."""
    import torch

    group = scheme.weights.group_size if scheme.weights.strategy == "group" else None
    if not group:
        return
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.split(".")[-1] not in IGNORE \
                and mod.in_features % group:
            raise StageError(
                f"model {model_dir}: layer {name} has dims {mod.out_features}x{mod.in_features} "
                f"(out x in); in {mod.in_features} is not divisible by group size {group}")


def calibration_dataset(calib_path, tokenizer, n, max_len):
    """The first n calibration conversations, chat-templated and tokenized (truncated)."""
    from datasets import Dataset

    rows = read_jsonl(calib_path)[:n]
    if not rows:
        raise StageError(f"{calib_path}: no calibration conversations")
    texts = [chat_text(tokenizer, r["messages"]) for r in rows]
    # The chat template already carries the special tokens the model was trained with.
    enc = tokenizer(texts, max_length=max_len, truncation=True, add_special_tokens=False)
    return Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})


def quantize(model_dir, calib_path, recipe, out):
    """Quantize `model_dir` by `recipe` into `out` (atomically). Returns the quantize.json dict."""
    model_dir, out = Path(model_dir), Path(out)
    if "quantization_config" in check_model_dir(model_dir):
        raise StageError(f"model {model_dir}: is already quantized (config.json has quantization_config)")
    from llmcompressor import oneshot  # slow import: only once the input looks right

    set_seed()
    _, dtype = device_and_dtype()
    # Loaded on CPU: llmcompressor's sequential pipeline moves one layer at a time to the GPU.
    model, tok = load_model(model_dir, dtype=dtype, device="cpu")
    scheme = quant_scheme(recipe)
    check_quantizable(model_dir, model, scheme)

    calibrated = recipe["scheme"] in NEEDS_CALIBRATION
    n = int(recipe.get("num_calibration_samples", DEFAULT_SAMPLES))
    max_len = int(recipe.get("max_seq_length", DEFAULT_SEQ_LEN))
    ds = calibration_dataset(calib_path, tok, n, max_len) if calibrated else None

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.time()
    try:
        kwargs = dict(dataset=ds, num_calibration_samples=len(ds), max_seq_length=max_len) if ds else {}
        model = oneshot(model=model, recipe=make_modifier(recipe, scheme), **kwargs)
        model.save_pretrained(tmp, save_compressed=True)
        tok.save_pretrained(tmp)
        info = {
            "model": str(model_dir),
            "recipe": recipe,
            "scheme": recipe["scheme"],
            "method": recipe.get("method", "gptq"),
            "calibration_samples": len(ds) if ds else 0,
            "max_seq_length": max_len if ds else None,
            "seconds": round(time.time() - t0, 2),
            "size_bytes": sum(f.stat().st_size for f in tmp.glob("*.safetensors")),
        }
        write_json(tmp / "quantize.json", info)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def main(argv) -> int:
    args = parse_args(argv)
    limit_threads()
    recipe = parse_recipe(args.recipe)
    info = quantize(args.model, args.calib, recipe, args.out)
    print(f"quantized {args.model} -> {args.out}: {info['scheme']} ({info['method']}), "
          f"{info['calibration_samples']} calibration samples, {info['seconds']} s, "
          f"{info['size_bytes'] / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    run_cli(main)
