"""What the training stages (sft, post_sft, kd) share: the chat data sets, the Trainer setup,
evaluation batches and the validation loss.

    metrics = train_with_val_loss(model, tok, recipe, train_path, val_path, "LoRA r=16")
    # ... which is made of:
    train_ds, val_ds = chat_sets(tok, train_path, val_path, max_len)
    loss = val_loss(model, tok, val_ds, batch_size)          # mean assistant-token loss
    stats = fit(model, tok, train_ds, recipe)                # {"train_seconds", "steps", "train_loss"}
    for batch in eval_batches(model, tok, val_ds, batch_size, "val"): ...   # no grad, eval mode
"""
from __future__ import annotations

import tempfile
import time

from workflow_scripts.common import SEED, StageError, read_jsonl
from workflow_scripts.stages.chat_data import IGNORE, chat_dataset, collate


def chat_sets(tok, train_path, val_path, max_len):
    """Train and validation sets: chat-formatted, labels on assistant tokens only."""
    sets = []
    for path in (train_path, val_path):
        ds = chat_dataset(tok, read_jsonl(path), max_len)
        if len(ds) == 0:
            raise StageError(f"{path}: no conversation with an assistant turn")
        sets.append(ds)
    return tuple(sets)


def eval_batches(model, tok, dataset, batch_size, desc):
    """Collated batches of `dataset` on the model's device, with a progress bar. While the loop
    runs, the model is in eval mode and gradients are off (grad mode is per thread, so it holds
    in the caller's loop body too); the model's train/eval mode is restored at the end."""
    import torch
    from tqdm.auto import tqdm

    fn = collate(tok)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in tqdm(range(0, len(dataset), batch_size), desc=desc, leave=False):
                batch = fn([dataset[j] for j in range(i, min(i + batch_size, len(dataset)))])
                yield {k: v.to(model.device) for k, v in batch.items()}
    finally:
        model.train(was_training)


def val_loss(model, tok, dataset, batch_size=8) -> float:
    """Mean loss per assistant token over `dataset` (token-weighted, not batch-weighted)."""
    total, count = 0.0, 0
    for batch in eval_batches(model, tok, dataset, batch_size, "val loss"):
        # The model shifts labels by one: the tokens scored are labels[:, 1:].
        n = int((batch["labels"][:, 1:] != IGNORE).sum())
        total += float(model(**batch).loss) * n
        count += n
    return total / max(count, 1)


def training_arguments(workdir, recipe, **overrides):
    """TrainingArguments every stage uses: the recipe's keys (defaults filled by
    planning/steps.load_recipe; its seed from the rule, else SEED), a progress bar and logs, no
    checkpoints, no tracker, bf16 autocast on CUDA and fp32 on CPU. max_steps (when > 0) wins over
    epochs, as in transformers."""
    import torch
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    steps, seed = int(recipe["max_steps"] or -1), int(recipe.get("seed", SEED))
    kwargs = dict(
        output_dir=str(workdir),
        seed=seed,
        data_seed=seed,
        learning_rate=float(recipe["learning_rate"]),
        num_train_epochs=float(recipe["epochs"]),
        max_steps=steps,
        per_device_train_batch_size=int(recipe["batch_size"]),
        gradient_accumulation_steps=int(recipe["grad_accum"]),
        gradient_checkpointing=bool(recipe["gradient_checkpointing"]),
        gradient_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=max(1, steps // 10) if steps > 0 else 10,
        logging_first_step=True,
        save_strategy="no",
        report_to="none",
        disable_tqdm=False,
        bf16=cuda,
        use_cpu=not cuda,
        remove_unused_columns=False,  # the collator needs labels; peft hides the signature
        dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def fit(model, tok, train_ds, recipe, trainer_cls=None, **trainer_kwargs) -> dict:
    """Train `model` with a transformers Trainer (or `trainer_cls`, e.g. a KD subclass).
    Returns {"train_seconds", "steps", "train_loss"}."""
    from transformers import Trainer

    with tempfile.TemporaryDirectory(prefix="trainer-") as workdir:
        trainer = (trainer_cls or Trainer)(
            model=model,
            args=training_arguments(workdir, recipe),
            train_dataset=train_ds,
            data_collator=collate(tok),
            **trainer_kwargs,
        )
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
    model.eval()
    return {"train_seconds": round(seconds, 2), "steps": trainer.state.global_step,
            "train_loss": round(result.training_loss, 4)}


def trainable_params(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_with_val_loss(model, tok, recipe, train_path, val_path, what) -> dict:
    """Train `model`'s trainable parameters (`what` names them in the log) on the train set,
    with the validation loss before and after. Returns the metrics the stages record:
    val_loss_before/after, train_seconds, steps, train_loss, trainable_params, *_examples."""
    max_len, batch = int(recipe["max_seq_length"]), int(recipe["batch_size"])
    train_ds, val_ds = chat_sets(tok, train_path, val_path, max_len)

    before = val_loss(model, tok, val_ds, batch)
    n_trainable = trainable_params(model)
    print(f"{what}: {n_trainable:,} trainable parameters; val loss before {before:.4f}", flush=True)
    stats = fit(model, tok, train_ds, recipe)
    after = val_loss(model, tok, val_ds, batch)
    print(f"val loss {before:.4f} -> {after:.4f} in {stats['steps']} steps "
          f"({stats['train_seconds']:.1f} s)", flush=True)
    return {
        "val_loss_before": round(before, 4),
        "val_loss_after": round(after, 4),
        **stats,
        "trainable_params": n_trainable,
        "train_examples": len(train_ds),
        "val_examples": len(val_ds),
    }

