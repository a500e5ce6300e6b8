"""Quantization with llmcompressor `oneshot`: one stage for every quantize recipe.

Schemes (compressed-tensors presets): W4A16 and W8A16 (GPTQ, grouped weights), W8A8 (int8
weights + dynamic per-token int8 activations, by GPTQ or by plain min-max observers),
FP8_DYNAMIC (no calibration) and FP8 (static activation scales from calibration).
lm_head (tied to the embeddings on EXAONE) is never quantized. The result is saved
compressed, with the parent's tokenizer files (unchanged) and a small quantize.json, into --out (atomically: see
common.staged_output).

    python -m workflow_scripts.quantize --model DIR --calib results/data/calib.jsonl \
        --recipe '{"scheme": "W4A16", "method": "gptq", "group_size": 128, ...}' --out DIR
"""
from __future__ import annotations

import time
from pathlib import Path

from workflow_scripts.chat_data import calibration_set
from workflow_scripts.common import (
    StageError,
    check_full_precision,
    copy_tokenizer,
    device_and_dtype,
    limit_threads,
    load_model,
    parse_recipe,
    run_cli,
    set_seed,
    stage_args,
    staged_output,
    write_json,
)

SCHEMES = ["W4A16", "W8A16", "W8A8", "FP8", "FP8_DYNAMIC"]
METHODS = ["gptq", "minmax"]
IGNORE = ["lm_head"]  # tied to embed_tokens on EXAONE; vLLM expects it in full precision
NEEDS_CALIBRATION = {"W4A16", "W8A16", "W8A8", "FP8"}  # FP8_DYNAMIC is data-free
DEFAULT_SAMPLES = 256
DEFAULT_SEQ_LEN = 1024


def parse_args(argv):
    return stage_args(argv, "workflow_scripts.quantize", __doc__,
                      model="input model folder (Hugging Face format)",
                      calib="calibration conversations (prepared JSONL)")


def check_recipe(text) -> dict:
    recipe = parse_recipe(text, ["scheme"], "quantize")
    if recipe["scheme"] not in SCHEMES:
        raise StageError(f"recipe scheme {recipe['scheme']!r} is not one of {SCHEMES}")
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


def quantize(model_dir, calib_path, recipe, out):
    """Quantize `model_dir` by `recipe` into `out` (atomically). Returns the quantize.json dict."""
    model_dir = Path(model_dir)
    check_full_precision(model_dir, "quantization needs full-precision weights")
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
    ds = calibration_set(tok, calib_path, n, max_len) if calibrated else None

    with staged_output(out) as tmp:
        t0 = time.time()
        kwargs = dict(dataset=ds, num_calibration_samples=len(ds), max_seq_length=max_len) if ds else {}
        model = oneshot(model=model, recipe=make_modifier(recipe, scheme), **kwargs)
        model.save_pretrained(tmp, save_compressed=True)
        copy_tokenizer(model_dir, tmp)
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
    return info


def main(argv) -> int:
    args = parse_args(argv)
    limit_threads()
    recipe = check_recipe(args.recipe)
    info = quantize(args.model, args.calib, recipe, args.out)
    print(f"quantized {args.model} -> {args.out}: {info['scheme']} ({info['method']}), "
          f"{info['calibration_samples']} calibration samples, {info['seconds']} s, "
          f"{info['size_bytes'] / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    run_cli(main)
