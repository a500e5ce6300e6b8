"""What the training stages (sft, post_sft, kd) share: recipe parsing, the chat data sets,
the Trainer setup, the validation loss, and writing an output folder all at once.

    recipe = parse_recipe(text, required=["learning_rate", "max_steps"], where="sft")
    train_ds, val_ds = chat_sets(tok, train_path, val_path, max_len)
    loss = val_loss(model, tok, val_ds, batch_size)          # mean assistant-token loss
    stats = fit(model, tok, train_ds, recipe)                # {"train_seconds", "steps", "train_loss"}
    with staged_output(out) as tmp: ...                      # tmp is renamed to out on success
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from workflow_scripts.chat_data import IGNORE, chat_dataset, collate
from workflow_scripts.common import SEED, StageError, read_jsonl


def parse_recipe(text, required, where) -> dict:
    """The recipe JSON passed by the rule, with the keys `required` checked."""
    try:
        recipe = json.loads(text)
    except json.JSONDecodeError as e:
        raise StageError(f"{where} recipe: not valid JSON ({e})") from None
    if not isinstance(recipe, dict):
        raise StageError(f"{where} recipe: expected a JSON object, got {type(recipe).__name__}")
    missing = [k for k in required if k not in recipe]
    if missing:
        raise StageError(f"{where} recipe: missing key(s) {', '.join(missing)}")
    return recipe


def chat_sets(tok, train_path, val_path, max_len):
    """Train and validation sets: chat-formatted, labels on assistant tokens only."""
    sets = []
    for path in (train_path, val_path):
        ds = chat_dataset(tok, read_jsonl(path), max_len)
        if len(ds) == 0:
            raise StageError(f"{path}: no conversation with an assistant turn")
        sets.append(ds)
    return tuple(sets)


def val_loss(model, tok, dataset, batch_size=8) -> float:
    """Mean loss per assistant token over `dataset` (token-weighted, not batch-weighted)."""
    import torch
    from tqdm.auto import tqdm

    fn = collate(tok)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in tqdm(range(0, len(dataset), batch_size), desc="val loss", leave=False):
            batch = fn([dataset[j] for j in range(i, min(i + batch_size, len(dataset)))])
            batch = {k: v.to(model.device) for k, v in batch.items()}
            # The model shifts labels by one: the tokens scored are labels[:, 1:].
            n = int((batch["labels"][:, 1:] != IGNORE).sum())
            total += float(model(**batch).loss) * n
            count += n
    model.train(was_training)
    return total / max(count, 1)


def training_arguments(workdir, recipe, **overrides):
    """TrainingArguments every stage uses: seed 42, a progress bar and logs, no checkpoints,
    no tracker, bf16 autocast on CUDA and fp32 on CPU. max_steps (when > 0) wins over epochs,
    as in transformers."""
    import torch
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    steps = int(recipe.get("max_steps", -1) or -1)
    kwargs = dict(
        output_dir=str(workdir),
        seed=SEED,
        data_seed=SEED,
        learning_rate=float(recipe["learning_rate"]),
        num_train_epochs=float(recipe.get("epochs", 1)),
        max_steps=steps,
        per_device_train_batch_size=int(recipe.get("batch_size", 8)),
        gradient_accumulation_steps=int(recipe.get("grad_accum", 1)),
        gradient_checkpointing=bool(recipe.get("gradient_checkpointing", False)),
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


@contextmanager
def staged_output(out):
    """Yield a temp folder beside `out`; on success it replaces `out` in one rename, so a
    crashed run never leaves a half-written model where the next stage would read it."""
    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
