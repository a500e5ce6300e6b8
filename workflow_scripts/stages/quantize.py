"""Quantization with llmcompressor `oneshot`: one stage for every quantize recipe.

Schemes (compressed-tensors presets): W4A16 and W8A16 (GPTQ, grouped weights), W8A8 (int8
weights + dynamic per-token int8 activations, by GPTQ or by plain min-max observers),
FP8_DYNAMIC (no calibration) and FP8 (static activation scales from calibration).
lm_head (tied to the embeddings on EXAONE) is never quantized. Mixed precision: the recipe's
`keep_unquantized` (layer indices, or {most_sensitive: K} resolved from --sensitivity, the file of
workflow_scripts.stages.sensitivity) puts those decoder layers' Linear modules into the ignore list, so
they stay in full precision in the same compressed-tensors checkpoint. The result is saved
compressed, with the parent's tokenizer files (unchanged) and a small quantize.json (with the kept
layers), into --out (atomically: see common.staged_output).

    python -m workflow_scripts.stages.quantize --model DIR --calib results/data/calib.jsonl [more files] \
        --recipe '{"scheme": "W4A16", "method": "gptq", "group_size": 128, ...}' --out DIR \
        [--sensitivity results/analysis/base.gptq_w4a16.sensitivity.json]
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from workflow_scripts.common import (
    SEED,
    StageError,
    check_full_precision,
    copy_tokenizer,
    device_and_dtype,
    limit_threads,
    load_model,
    run_cli,
    set_seed,
    stage_args,
    staged_output,
    write_json,
)
from workflow_scripts.planning.families import family_of
from workflow_scripts.planning.steps import STEPS, load_recipe, with_defaults
from workflow_scripts.stages.chat_data import calibration_set

SCHEMES = STEPS["quantize"]["scheme"].choices
IGNORE = ["lm_head"]  # tied to embed_tokens on EXAONE; vLLM expects it in full precision
NEEDS_CALIBRATION = {"W4A16", "W8A16", "W8A8", "FP8"}  # FP8_DYNAMIC is data-free


def parse_args(argv):
    return stage_args(argv, "workflow_scripts.stages.quantize", __doc__, many=("calib",),
                      optional={"sensitivity": "per-layer sensitivity JSON (for keep_unquantized.most_sensitive)"},
                      model="input model folder (Hugging Face format)",
                      calib="calibration files (prepared calib.jsonl, plus the recipe's calibration_mix sources)")


def check_recipe(text) -> dict:
    """The recipe with its defaults (planning/steps.py), and a scheme its method can quantize."""
    recipe = load_recipe(text, "quantize")
    if recipe["scheme"] in ("W4A16", "W8A16") and recipe["method"] != "gptq":
        raise StageError(f"recipe scheme {recipe['scheme']} is quantized by GPTQ only (method: gptq)")
    return recipe


def quant_scheme(recipe):
    """The compressed-tensors preset for the recipe's scheme, with its group size applied."""
    from compressed_tensors.quantization import QuantizationScheme
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES

    preset = {k: v.model_copy(deep=True) for k, v in PRESET_SCHEMES[recipe["scheme"]].items()}
    weights = preset["weights"]
    if weights.strategy == "group" and recipe["group_size"]:
        weights.group_size = int(recipe["group_size"])
    return QuantizationScheme(targets=["Linear"], **preset)


def make_modifier(recipe, scheme, ignore=IGNORE):
    """GPTQ for method gptq; plain observers (QuantizationModifier) for minmax."""
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    groups = {"group_0": scheme}
    if recipe["method"] == "gptq" and recipe["scheme"] != "FP8_DYNAMIC":
        return GPTQModifier(config_groups=groups, ignore=list(ignore),
                            dampening_frac=float(recipe["dampening_frac"]))
    return QuantizationModifier(config_groups=groups, ignore=list(ignore))


def calibration_kwargs(model_dir, ds, max_len) -> dict:
    """oneshot's calibration arguments: the data, and the family's decoder layer as the unit the
    sequential pipeline calibrates one at a time (none for a data-free scheme)."""
    if not ds:
        return {}
    return dict(dataset=ds, num_calibration_samples=len(ds), max_seq_length=max_len,
                sequential_targets=[family_of(model_dir).decoder_layer])


LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")  # model.layers.<i>.self_attn.q_proj


def layer_linears(model) -> dict:
    """{decoder layer index: [names of its Linear modules]}, the units of keep_unquantized."""
    import torch

    layers = {}
    for name, mod in model.named_modules():
        m = LAYER.search(name)
        if m and isinstance(mod, torch.nn.Linear):
            layers.setdefault(int(m.group(1)), []).append(name)
    return layers


def most_sensitive(path, k) -> list:
    """The k layers with the largest KL in a sensitivity file, sorted by index."""
    try:
        ranking = json.loads(Path(path).read_text())["ranking"]
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise StageError(f"{path}: not a sensitivity file ({e})") from None
    if k > len(ranking):
        raise StageError(f"{path}: {k} most sensitive layers asked, the file ranks {len(ranking)}")
    return sorted(ranking[:k])


def kept_layers(recipe, sensitivity_path, n_layers):
    """(sorted layer indices the recipe keeps in full precision, why those)."""
    keep = recipe.get("keep_unquantized") or []
    if isinstance(keep, list):
        layers, why = sorted(keep), "listed in the recipe"
    elif not sensitivity_path:
        raise StageError("recipe keep_unquantized.most_sensitive needs --sensitivity FILE")
    else:
        k = int(keep["most_sensitive"])
        layers, why = most_sensitive(sensitivity_path, k), f"the {k} largest KL in {sensitivity_path}"
    if any(i >= n_layers for i in layers):
        raise StageError(f"recipe keep_unquantized: layer {max(layers)} does not exist (the model has {n_layers})")
    return layers, why


def check_quantizable(model_dir, model, scheme, ignore=IGNORE):
    """Grouped weights need every quantized Linear's input dim to be a multiple of the group."""
    import torch

    group = scheme.weights.group_size if scheme.weights.strategy == "group" else None
    if not group:
        return
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name not in ignore and name.split(".")[-1] not in IGNORE \
                and mod.in_features % group:
            raise StageError(
                f"model {model_dir}: layer {name} has dims {mod.out_features}x{mod.in_features} "
                f"(out x in); in {mod.in_features} is not divisible by group size {group}")


def quantize(model_dir, calib_path, recipe, out, sensitivity=None):
    """Quantize `model_dir` by `recipe` into `out` (atomically). Returns the quantize.json dict.
    `calib_path`: calib.jsonl or a list of prepared files (the recipe's calibration_mix)."""
    recipe = with_defaults("quantize", recipe)
    model_dir = Path(model_dir)
    check_full_precision(model_dir, "quantization needs full-precision weights")
    set_seed(recipe.get("seed", SEED))
    _, dtype = device_and_dtype()
    # Loaded on CPU: llmcompressor's sequential pipeline moves one layer at a time to the GPU.
    model, tok = load_model(model_dir, dtype=dtype, device="cpu")
    scheme = quant_scheme(recipe)
    linears = layer_linears(model)
    kept, kept_why = kept_layers(recipe, sensitivity, len(linears))
    ignore = IGNORE + [name for i in kept for name in linears[i]]
    check_quantizable(model_dir, model, scheme, ignore)
    from llmcompressor import oneshot  # slow import: only once the model is known to fit the recipe

    calibrated = recipe["scheme"] in NEEDS_CALIBRATION
    n, max_len = int(recipe["num_calibration_samples"]), int(recipe["max_seq_length"])
    ds = calibration_set(tok, calib_path, n, max_len, recipe["calibration_mix"]) if calibrated else None

    with staged_output(out) as tmp:
        t0 = time.time()
        model = oneshot(model=model, recipe=make_modifier(recipe, scheme, ignore),
                        **calibration_kwargs(model_dir, ds, max_len))
        model.save_pretrained(tmp, save_compressed=True)
        copy_tokenizer(model_dir, tmp)
        info = {
            "model": str(model_dir),
            "recipe": recipe,
            "scheme": recipe["scheme"],
            "method": recipe["method"],
            "calibration_samples": len(ds) if ds else 0,
            "calibration_mix": recipe["calibration_mix"],
            "kept_layers": kept,  # decoder layers left in full precision
            "kept_by": kept_why if kept else None,
            "ignore": ignore,
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
    info = quantize(args.model, args.calib, recipe, args.out, args.sensitivity)
    kept = f", layers {info['kept_layers']} kept unquantized" if info["kept_layers"] else ""
    print(f"quantized {args.model} -> {args.out}: {info['scheme']} ({info['method']}), "
          f"{info['calibration_samples']} calibration samples, {info['seconds']} s, "
          f"{info['size_bytes'] / 1e6:.2f} MB{kept}")
    return 0


if __name__ == "__main__":
    run_cli(main)
