"""Knowledge distillation: a pruned student learns from its unpruned teacher.

Loss per batch = kl_weight * T^2 * KL(teacher_T || student_T) + ce_weight * CE(labels), where
_T are the softmaxes of the logits divided by the temperature T (Hinton et al. 2015; T^2 keeps
the gradient scale independent of T). Both terms are taken on the same positions: the
assistant tokens of the chat-formatted train set (chat_data labels). That is the text the
model is asked to produce when served, the same positions the CE and SFT train on, and it
lets the logits be computed for those positions only (full-vocabulary logits for every
token of a 2048-token batch would cost GBs, twice). The teacher is frozen in eval mode.

Trained by training.fit with a Trainer subclass (compute_loss overridden), seed 42, no checkpoints.
kd_metrics.json beside the weights: validation KL(teacher || student) at T=1 and the
student's CE, before and after, the teacher's CE, steps and seconds.

    python -m workflow_scripts.stages.kd --student results/models/base.prune28 \
        --teacher results/models/base --train results/data/sft_train.jsonl \
        --val results/data/sft_val.jsonl --recipe '{"temperature": 2.0, ...}' --out DIR
"""
from __future__ import annotations

from workflow_scripts.common import (
    SEED,
    StageError,
    check_full_precision,
    device_and_dtype,
    limit_threads,
    load_model,
    run_cli,
    save_model,
    set_seed,
    stage_args,
)
from workflow_scripts.planning.steps import load_recipe, with_defaults
from workflow_scripts.stages.chat_data import IGNORE
from workflow_scripts.stages.training import chat_sets, eval_batches, fit


def parse_args(argv):
    return stage_args(argv, "workflow_scripts.stages.kd", __doc__,
                      student="the pruned model folder (trained)",
                      teacher="the unpruned model folder (frozen)",
                      train="train conversations (prepared JSONL)",
                      val="validation conversations (prepared JSONL)")


def check_recipe(text) -> dict:
    recipe = load_recipe(text, "kd")
    if float(recipe["temperature"]) <= 0:
        raise StageError(f"kd recipe: temperature must be > 0, got {recipe['temperature']}")
    return recipe


def load_pair(student_dir, teacher_dir):
    """Student (fp32 master weights: it is trained; bf16 autocast on CUDA, see training_autocast)
    and frozen teacher (device dtype: bf16 on CUDA)."""
    import torch

    for d in (student_dir, teacher_dir):
        check_full_precision(d, "KD needs a full-precision student and teacher")
    student, tok = load_model(student_dir, dtype=torch.float32)
    teacher, teacher_tok = load_model(teacher_dir)
    if student.config.vocab_size != teacher.config.vocab_size or tok.get_vocab() != teacher_tok.get_vocab():
        raise StageError(f"model {student_dir}: vocabulary ({student.config.vocab_size} logits, {len(tok)} "
                         f"tokens) differs from teacher {teacher_dir} ({teacher.config.vocab_size} logits, "
                         f"{len(teacher_tok)} tokens); KD needs the same tokenizer")
    teacher.eval().requires_grad_(False)
    return student, teacher, tok


LOGIT_CHUNK = 1024  # positions per vocabulary-sized logits block (EXAONE: 1024 x 102400 fp32 = 0.4 GB)


def assistant_hidden(model, batch):
    """Last hidden states at the positions that predict an assistant token, and those tokens.

    Position t predicts token t+1, so the positions are those whose *next* label is set."""
    keep = batch["labels"][:, 1:] != IGNORE
    hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         use_cache=False).last_hidden_state
    return hidden[:, :-1][keep], batch["labels"][:, 1:][keep]


def kd_kl(student_logits, teacher_logits, temperature, reduction="batchmean"):
    """KL(teacher_T || student_T) times T^2: the mean over positions (or their sum)."""
    import torch.nn.functional as F

    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                    log_target=True, reduction=reduction) * t * t


def _chunk_sums(s_hidden, t_hidden, targets, s_head, t_head, temperature):
    """Sums over one block of positions: KD KL, student CE, teacher CE (fp32 softmaxes)."""
    import torch
    import torch.nn.functional as F

    s_logits = s_head(s_hidden).float()
    with torch.no_grad():
        t_logits = t_head(t_hidden).float()
    return (kd_kl(s_logits, t_logits, temperature, reduction="sum"),
            F.cross_entropy(s_logits, targets, reduction="sum"),
            F.cross_entropy(t_logits, targets, reduction="sum").detach())


def kd_terms(student, teacher, batch, temperature, chunk=LOGIT_CHUNK):
    """Means over the assistant positions of (KD KL, student CE, teacher CE). The logits are
    made block by block and, when training, recomputed in the backward pass (checkpoint): only
    one block of vocabulary-sized logits lives at a time, not 2 x positions x vocabulary."""
    import torch
    from torch.utils.checkpoint import checkpoint

    s_hidden, targets = assistant_hidden(student, batch)
    with torch.no_grad():
        t_hidden, _ = assistant_hidden(teacher, batch)
    sums = [0.0, 0.0, 0.0]
    for i in range(0, len(targets), chunk):
        block = (s_hidden[i:i + chunk], t_hidden[i:i + chunk], targets[i:i + chunk],
                 student.lm_head, teacher.lm_head, temperature)
        parts = (checkpoint(_chunk_sums, *block, use_reentrant=False) if torch.is_grad_enabled()
                 else _chunk_sums(*block))
        sums = [a + b for a, b in zip(sums, parts)]
    n = max(len(targets), 1)
    return tuple(x / n for x in sums)


def training_autocast(args):
    """bf16 autocast around the whole loss when the Trainer trains in bf16 (on CUDA). The
    Trainer autocasts model.forward only; the loss calls the model's parts itself, which would
    otherwise run in fp32 (twice the activation memory, a fraction of the speed)."""
    import contextlib

    import torch

    if not args.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=args.device.type, dtype=torch.bfloat16)


def make_trainer_class():
    from transformers import Trainer

    class KDTrainer(Trainer):
        """A Trainer whose loss is the recipe's mix of distillation KL and label CE."""

        def __init__(self, *args, teacher, kd_recipe, **kwargs):
            super().__init__(*args, **kwargs)
            self.teacher = teacher.to(self.args.device)
            self.temperature = float(kd_recipe["temperature"])
            self.kl_weight = float(kd_recipe["kl_weight"])
            self.ce_weight = float(kd_recipe["ce_weight"])
            self._parts = {"kl": 0.0, "ce": 0.0, "n": 0}
            # The loss below is a mean per micro-batch and ignores num_items_in_batch, so the
            # Trainer must divide it by the accumulation steps itself. It skips that for models
            # that accept loss kwargs (Exaone4 does), which made gradients grad_accum x too big.
            self.model_accepts_loss_kwargs = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            with training_autocast(self.args):
                kl, ce, _ = kd_terms(model, self.teacher, inputs, self.temperature)
            loss = self.kl_weight * kl + self.ce_weight * ce
            self._parts["kl"] += float(kl.detach())
            self._parts["ce"] += float(ce.detach())
            self._parts["n"] += 1
            return (loss, None) if return_outputs else loss

        def log(self, logs, start_time=None):
            # The two terms of the loss, averaged since the last log line.
            if self._parts["n"] and "loss" in logs:
                logs["kl"] = round(self._parts["kl"] / self._parts["n"], 4)
                logs["ce"] = round(self._parts["ce"] / self._parts["n"], 4)
                self._parts = {"kl": 0.0, "ce": 0.0, "n": 0}
            super().log(logs, start_time)

    return KDTrainer


def val_metrics(student, teacher, tok, dataset, batch_size) -> dict:
    """Token-weighted means over the validation assistant tokens: KL(teacher || student) at
    T=1, the student's CE and the teacher's CE."""
    sums = {"kl": 0.0, "ce": 0.0, "teacher_ce": 0.0}
    count = 0
    for batch in eval_batches(student, tok, dataset, batch_size, "val KL"):
        n = int((batch["labels"][:, 1:] != IGNORE).sum())
        for key, value in zip(sums, kd_terms(student, teacher, batch, 1.0)):
            sums[key] += float(value) * n
        count += n
    return {k: v / max(count, 1) for k, v in sums.items()}


def distil(student_dir, teacher_dir, train_path, val_path, recipe, out) -> dict:
    """Distil `teacher_dir` into `student_dir`, written to `out`. Returns kd_metrics.json."""
    recipe = with_defaults("kd", recipe)
    set_seed(recipe.get("seed", SEED))
    student, teacher, tok = load_pair(student_dir, teacher_dir)
    max_len, batch = int(recipe["max_seq_length"]), int(recipe["batch_size"])
    train_ds, val_ds = chat_sets(tok, train_path, val_path, max_len)

    before = val_metrics(student, teacher, tok, val_ds, batch)
    device, dtype = device_and_dtype()
    # Two models on the GPU: checkpoint the student's activations unless the recipe says not to.
    checkpointing = recipe["gradient_checkpointing"]
    train_recipe = {**recipe, "gradient_checkpointing": device == "cuda" if checkpointing is None else checkpointing}
    stats = fit(student, tok, train_ds, train_recipe, trainer_cls=make_trainer_class(),
                teacher=teacher, kd_recipe=recipe)
    after = val_metrics(student, teacher, tok, val_ds, batch)

    metrics = {
        "student": str(student_dir),
        "teacher": str(teacher_dir),
        "recipe": recipe,
        "positions": "assistant tokens",
        "val_kl_before": before["kl"],
        "val_kl_after": after["kl"],
        "val_ce_before": before["ce"],
        "val_ce_after": after["ce"],
        "teacher_val_ce": after["teacher_ce"],
        **stats,
        "train_examples": len(train_ds),
        "val_examples": len(val_ds),
    }
    student.config.use_cache = True  # gradient checkpointing turns it off
    save_model(student.to(dtype), student_dir, out, {"kd_metrics.json": metrics})
    return metrics


def main(argv) -> int:
    args = parse_args(argv)
    limit_threads()
    m = distil(args.student, args.teacher, args.train, args.val, check_recipe(args.recipe), args.out)
    print(f"distilled {args.teacher} -> {args.student} -> {args.out}: val KL {m['val_kl_before']:.4f} -> "
          f"{m['val_kl_after']:.4f}, val CE {m['val_ce_before']:.4f} -> {m['val_ce_after']:.4f} "
          f"(teacher {m['teacher_val_ce']:.4f}), {m['steps']} steps, {m['train_seconds']} s")
    return 0


if __name__ == "__main__":
    run_cli(main)
