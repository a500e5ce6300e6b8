"""LoRA SFT: adapters on the attention and MLP projections, trained on the chat-formatted
train set (loss on assistant tokens only), then merged into full weights.

    python -m workflow_scripts.sft --model DIR --train sft_train.jsonl --val sft_val.jsonl \
        --recipe JSON --out DIR

Recipe: lora_r, lora_alpha, lora_dropout, target_modules, learning_rate, epochs, max_steps,
batch_size, grad_accum, max_seq_length (optional: gradient_checkpointing).
Writes the merged model (safetensors + tokenizer, in the parent's dtype) and sft_metrics.json
(validation loss before/after, train seconds, steps, trainable parameters) to --out.
A quantized input is refused: norms-only training of a quantized model is post_sft's job.
"""
from __future__ import annotations

import argparse

from workflow_scripts.common import (
    StageError, check_model_dir, limit_threads, load_model, run_cli, set_seed, write_json,
)
from workflow_scripts.training import (
    chat_sets, fit, parse_recipe, staged_output, trainable_params, val_loss,
)

REQUIRED = ["lora_r", "lora_alpha", "target_modules", "learning_rate", "max_steps"]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m workflow_scripts.sft", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="parent model folder (full precision)")
    p.add_argument("--train", required=True, help="sft_train.jsonl")
    p.add_argument("--val", required=True, help="sft_val.jsonl")
    p.add_argument("--recipe", required=True, help="recipe parameters as JSON")
    p.add_argument("--out", required=True, help="output model folder")
    return p.parse_args(argv)


def check_targets(model, targets, model_dir):
    """Every target module name must match at least one Linear layer (peft only complains
    when none of them match, and would silently train fewer layers than asked)."""
    import torch

    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in linear)]
    if unmatched:
        raise StageError(f"model {model_dir}: target module(s) {', '.join(unmatched)} match no Linear layer")


def add_lora(model, recipe):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=int(recipe["lora_r"]),
        lora_alpha=recipe["lora_alpha"],
        lora_dropout=float(recipe.get("lora_dropout", 0.0)),
        target_modules=list(recipe["target_modules"]),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def parent_dtype(config: dict):
    """The dtype the parent is stored in, so that SFT does not change the checkpoint's size."""
    import torch

    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return getattr(torch, str(name).replace("torch.", ""), torch.float32)


def main(argv) -> int:
    args = parse_args(argv)
    recipe = parse_recipe(args.recipe, REQUIRED, "sft")
    config = check_model_dir(args.model)
    if "quantization_config" in config:
        method = config["quantization_config"].get("quant_method", "unknown")
        raise StageError(f"model {args.model}: already quantized ({method}); LoRA SFT needs "
                         f"full-precision weights (post_sft trains the norms of a quantized model)")
    set_seed()
    limit_threads()

    model, tok = load_model(args.model)
    check_targets(model, recipe["target_modules"], args.model)
    max_len = int(recipe.get("max_seq_length", 2048))
    batch = int(recipe.get("batch_size", 8))
    train_ds, val_ds = chat_sets(tok, args.train, args.val, max_len)

    before = val_loss(model, tok, val_ds, batch)
    model = add_lora(model, recipe)
    n_trainable = trainable_params(model)
    print(f"LoRA r={recipe['lora_r']} on {', '.join(recipe['target_modules'])}: "
          f"{n_trainable:,} trainable parameters; val loss before {before:.4f}", flush=True)
    stats = fit(model, tok, train_ds, recipe)
    after = val_loss(model, tok, val_ds, batch)
    print(f"val loss {before:.4f} -> {after:.4f} in {stats['steps']} steps "
          f"({stats['train_seconds']:.1f} s)", flush=True)

    merged = model.merge_and_unload().to(parent_dtype(config))
    merged.config.use_cache = True  # the Trainer turns the KV cache off for training
    metrics = {
        "stage": "sft",
        "parent": str(args.model),
        "recipe": recipe,
        "val_loss_before": round(before, 4),
        "val_loss_after": round(after, 4),
        **stats,
        "trainable_params": n_trainable,
        "train_examples": len(train_ds),
        "val_examples": len(val_ds),
    }
    with staged_output(args.out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        write_json(tmp / "sft_metrics.json", metrics)
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
