"""Post-quantization SFT of the RMSNorm weights only, on a compressed-tensors checkpoint.

    python -m workflow_scripts.stages.post_sft --model QUANTIZED_DIR --train sft_train.jsonl \
        --val sft_val.jsonl --recipe JSON --out DIR

Recipe: learning_rate, max_steps, batch_size, max_seq_length.
The quantized model is loaded dequantized (its weights are exactly the quantized values), every
parameter is frozen except the norm weights, and those are trained on the chat-formatted train
set (loss on assistant tokens only) so that they compensate for the quantization error.
The output is the input folder with only the norm tensors rewritten inside its safetensors
files: packed weights, scales and config stay byte for byte, so the model stays quantized and
loads wherever the input did. post_sft_metrics.json (val loss before/after, ...) goes beside it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from workflow_scripts.common import (
    SEED,
    StageError,
    check_model_dir,
    limit_threads,
    load_model,
    run_cli,
    set_seed,
    stage_args,
    staged_output,
    write_json,
)
from workflow_scripts.planning.families import family
from workflow_scripts.planning.steps import load_recipe
from workflow_scripts.stages.training import train_with_val_loss


def parse_args(argv):
    return stage_args(argv, "workflow_scripts.stages.post_sft", __doc__,
                      model="quantized model folder (compressed-tensors)",
                      train="sft_train.jsonl", val="sft_val.jsonl")


def check_quantized(model_dir) -> list:
    """The checkpoint's safetensors files, after checking it is a compressed-tensors model."""
    config = check_model_dir(model_dir)
    qc = config.get("quantization_config")
    if not qc:
        raise StageError(f"model {model_dir}: not quantized (no quantization_config in config.json); "
                         f"post_sft trains the norms of a quantized model, use sft for full precision")
    if qc.get("quant_method") != "compressed-tensors":
        raise StageError(f"model {model_dir}: quant_method {qc.get('quant_method')!r} is not compressed-tensors")
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise StageError(f"model {model_dir}: no .safetensors files")
    return files


def load_dequantized(model_dir):
    """The quantized model with its weights dequantized for the forward pass. Loaded in fp32
    even on CUDA (bf16 autocast there): small norm updates vanish in bf16 parameters."""
    import warnings

    import torch
    from transformers import CompressedTensorsConfig

    # Expected here: the checkpoint's own quantization config is kept, only `dequantize` is ours.
    warnings.filterwarnings("ignore", message="You passed `quantization_config`")
    return load_model(model_dir, dtype=torch.float32,
                      quantization_config=CompressedTensorsConfig(dequantize=True))


def norms_only(model) -> list:
    """Freeze everything but the family's RMSNorm weights (QK-norms included); return their names."""
    norm = family(model.config.model_type).norm
    for p in model.parameters():
        p.requires_grad_(False)
    names = []
    for mod_name, module in model.named_modules():
        if type(module).__name__ == norm and getattr(module, "weight", None) is not None:
            module.weight.requires_grad_(True)
            names.append(f"{mod_name}.weight")
    return names


def checkpoint_keys(files) -> set:
    """The tensor names stored in the checkpoint's safetensors files."""
    from safetensors import safe_open

    keys = set()
    for f in files:
        with safe_open(f, "pt") as st:
            keys.update(st.keys())
    return keys


def rewrite_tensors(files, new: dict):
    """Replace the tensors named in `new` inside `files`, keeping every other tensor, each
    tensor's dtype and the file metadata. Each file is swapped in with one rename."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    for f in files:
        with safe_open(f, "pt") as st:
            keys, metadata = set(st.keys()), st.metadata()
        if not keys & new.keys():
            continue
        tensors = load_file(f)
        for k in keys & new.keys():
            tensors[k] = new[k].detach().to("cpu", tensors[k].dtype).contiguous()
        tmp = f.with_name(f.name + ".tmp")
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, f)


def main(argv) -> int:
    args = parse_args(argv)
    recipe = load_recipe(args.recipe, "post_sft")
    files = check_quantized(args.model)
    set_seed(recipe.get("seed", SEED))
    limit_threads()

    model, tok = load_dequantized(args.model)
    names = norms_only(model)
    stored = checkpoint_keys(files)
    missing = [n for n in names if n not in stored]
    if not names or missing:
        raise StageError(f"model {args.model}: norm weights {missing or '(none found)'} "
                         f"are not in its safetensors files")
    trained = train_with_val_loss(model, tok, recipe, args.train, args.val, f"{len(names)} norm weights")

    params = dict(model.named_parameters())
    metrics = {"stage": "post_sft", "parent": str(args.model), "recipe": recipe, **trained,
               "norm_tensors": len(names)}
    with staged_output(args.out) as tmp:
        shutil.copytree(args.model, tmp, dirs_exist_ok=True)
        rewrite_tensors(sorted(tmp.glob("*.safetensors")), {n: params[n] for n in names})
        write_json(tmp / "post_sft_metrics.json", metrics)
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
