"""The summary's `training` column: did a lane's training steps pay? Each step's figures before
and after it, from the metrics its stage wrote beside the model."""
from __future__ import annotations

import json
from pathlib import Path

from workflow_scripts.planning.config import chain_dir
from workflow_scripts.scoring.score import number

# The metrics file each training stage writes beside its model, and the before/after keys shown.
TRAIN_METRICS = {
    "sft_metrics.json": [("val loss", "val_loss_before", "val_loss_after")],
    "post_sft_metrics.json": [("val loss", "val_loss_before", "val_loss_after")],
    "kd_metrics.json": [("val KL", "val_kl_before", "val_kl_after"), ("CE", "val_ce_before", "val_ce_after")],
}


def data_label(recipe):
    """A recipe's training data in a few characters: sft, teacher, sft*0.5+teacher*1."""
    data = (recipe or {}).get("data", "sft")
    if isinstance(data, list):
        return "+".join(f"{p.get('source')}*{p.get('weight'):g}" for p in data if isinstance(p, dict))
    return str(data)


def training_cell(models_dir, chain):
    """'tsft[teacher] val loss 2.310->1.954; ...' for each training step of a lane, from the
    metrics its stage wrote beside the model (None when the lane trains nothing or they are missing).
    Every step is measured on sft_val.jsonl, so lanes with and without teacher data compare."""
    parts = []
    for i, recipe in enumerate(chain):
        folder = Path(models_dir) / chain_dir(chain[: i + 1])
        for name, shown in TRAIN_METRICS.items():
            try:
                m = json.loads((folder / name).read_text())
            except (OSError, json.JSONDecodeError):
                continue
            figures = ", ".join(f"{label} {number(m.get(b)):.3f}->{number(m.get(a)):.3f}" for label, b, a in shown
                                if number(m.get(b)) is not None and number(m.get(a)) is not None)
            parts.append(f"{recipe}[{data_label(m.get('recipe'))}] {figures or 'no val figures'}")
            break
    return "; ".join(parts) or None
