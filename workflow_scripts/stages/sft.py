"""LoRA SFT: adapters on the attention and MLP projections, trained on the chat-formatted
train set (loss on assistant tokens only), then merged into full weights.

    python -m workflow_scripts.stages.sft --model DIR --train sft_train.jsonl --val sft_val.jsonl \
        --recipe JSON --out DIR

Recipe: lora_r, lora_alpha, lora_dropout, target_modules (default: the family's projections), learning_rate, epochs, max_steps,
batch_size, grad_accum, max_seq_length (optional: gradient_checkpointing).
Writes the merged model (safetensors + tokenizer, in the parent's dtype) and sft_metrics.json
(validation loss before/after, train seconds, steps, trainable parameters) to --out.
A quantized input is refused: norms-only training of a quantized model is post_sft's job.
"""
from __future__ import annotations

from workflow_scripts.common import (
    SEED,
    StageError,
    check_full_precision,
    limit_threads,
    load_model,
    run_cli,
    save_model,
    set_seed,
    stage_args,
)
from workflow_scripts.planning.families import family_of
from workflow_scripts.planning.steps import load_recipe
from workflow_scripts.stages.training import train_with_val_loss


def parse_args(argv):
    return stage_args(argv, "workflow_scripts.stages.sft", __doc__,
                      model="parent model folder (full precision)",
                      train="sft_train.jsonl", val="sft_val.jsonl")


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
        lora_dropout=float(recipe["lora_dropout"]),
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
    recipe = load_recipe(args.recipe, "sft")
    config = check_full_precision(args.model, "LoRA SFT needs full-precision weights "
                                               "(post_sft trains the norms of a quantized model)")
    set_seed(recipe.get("seed", SEED))
    limit_threads()

    # No target_modules in the recipe: the family's projections (planning/families.py).
    recipe["target_modules"] = list(recipe["target_modules"] or family_of(args.model).lora_targets)
    model, tok = load_model(args.model)
    check_targets(model, recipe["target_modules"], args.model)
    # The LoRA B matrices start at zero, so the val loss before training is the parent's own.
    model = add_lora(model, recipe)
    trained = train_with_val_loss(model, tok, recipe, args.train, args.val,
                                  f"LoRA r={recipe['lora_r']} on {', '.join(recipe['target_modules'])}")

    merged = model.merge_and_unload().to(parent_dtype(config))
    merged.config.use_cache = True  # the Trainer turns the KV cache off for training
    metrics = {"stage": "sft", "parent": str(args.model), "recipe": recipe, **trained}
    save_model(merged, args.model, args.out, {"sft_metrics.json": metrics})
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
