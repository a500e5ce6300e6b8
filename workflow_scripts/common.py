"""What every stage shares: one-line errors, seeding, device/dtype, JSONL, model loading."""
from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

SEED = 42


class StageError(Exception):
    """An expected failure (bad input model, wrong shape, missing file): printed as one line."""


def run_cli(main):
    """Run a stage's main(argv); a StageError becomes one line on stderr and exit code 2."""
    try:
        code = main(sys.argv[1:])
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)


def set_seed(seed=SEED):
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device_and_dtype():
    """CUDA in bf16 when there is a GPU, else CPU in fp32."""
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.bfloat16
    return "cpu", torch.float32


def read_jsonl(path):
    path = Path(path)
    if not path.exists():
        raise StageError(f"{path}: file does not exist")
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path, rows):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_json(path, obj):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def check_model_dir(path) -> dict:
    """The model folder's config.json, or a StageError naming what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise StageError(f"model {path}: folder does not exist")
    cfg = path / "config.json"
    if not cfg.exists():
        raise StageError(f"model {path}: no config.json (not a Hugging Face model folder)")
    try:
        return json.loads(cfg.read_text())
    except json.JSONDecodeError as e:
        raise StageError(f"model {path}: config.json is unreadable ({e})") from None


def is_quantized(path) -> bool:
    return "quantization_config" in check_model_dir(path)


def load_model(path, dtype=None, device=None):
    """AutoModelForCausalLM + tokenizer from a local folder, with clear errors."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_dir(path)
    dev, dt = device_and_dtype()
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or dt, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
        raise StageError(f"model {path}: cannot be loaded ({str(e).splitlines()[0]})") from None
    return model.to(device or dev), tok


def chat_text(tok, messages, add_generation_prompt=False):
    """The chat template applied to a conversation, as text."""
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def limit_threads():
    """Respect Snakemake's `threads:` (passed as OMP_NUM_THREADS) in torch."""
    import torch

    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit():
        torch.set_num_threads(int(n))
