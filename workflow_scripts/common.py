"""What every stage shares: the CLI shape and one-line errors, recipe parsing, seeding,
device/dtype, JSONL, model folder checks and loading, and writing an output folder atomically."""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import random
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

SEED = 42


class StageError(Exception):
    """An expected failure (bad input model, wrong shape, missing file): printed as one line."""


def first_line(e: BaseException) -> str:
    """An exception's message cut to its first line (its type name when it has none)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# vLLM prefixes what its processes log: "(Worker pid=1) ERROR 12-01 10:00:00 [file.py:9] ".
_LOG_PREFIX = re.compile(r"^.*?\[[\w./-]+:\d+\] ")
_ERROR = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception)): (.+)")
_WRAPPERS = ("See root cause above", "See stack trace for root cause", "initialization failed")


def root_cause(lines) -> str:
    """The first error a worker (or its engine's processes) logged, with its indented detail
    lines, skipping the 'see above' wrappers vLLM re-raises in the parent."""
    lines = [_LOG_PREFIX.sub("", line) for line in lines]
    for i, line in enumerate(lines):
        m = _ERROR.match(line)
        if m and not any(w in line for w in _WRAPPERS):
            detail = [l.strip() for l in lines[i + 1: i + 4] if l.startswith(" ") and l.strip()]
            return " ".join([f"{m.group(1)}: {m.group(2).strip()}", *detail])[:400]
    tail = [l.strip() for l in lines if l.strip()]
    return tail[-1][:400] if tail else "no output"


def run_cli(main):
    """Run a stage's main(argv); a StageError becomes one line on stderr and exit code 2."""
    try:
        code = main(sys.argv[1:])
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)


def stdin_lines():
    """The non-empty lines of standard input, stripped, each as soon as it arrives."""
    for line in sys.stdin:
        if line.strip():
            yield line.strip()


def stage_args(argv, prog, doc, many=(), optional=None, **inputs):
    """A stage's arguments: a required --NAME for each of `inputs` ({name: help}; one or more
    values for the names in `many`), an optional --NAME for each of `optional`, then
    --recipe (JSON) and --out, the shape every rules/*.smk shell line calls."""
    p = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc.split("\n\n")[0])
    for name, help_text in inputs.items():
        p.add_argument(f"--{name}", required=True, help=help_text, nargs="+" if name in many else None)
    for name, help_text in (optional or {}).items():
        p.add_argument(f"--{name}", help=help_text)
    p.add_argument("--recipe", required=True, help="recipe parameters as JSON (lanes.yaml minus `step`)")
    p.add_argument("--out", required=True, help="output model folder")
    return p.parse_args(argv)


def parse_recipe(text, required, where, what="recipe") -> dict:
    """The recipe (or other JSON object, named by `what`) passed by the rule, with the keys
    `required` checked."""
    try:
        recipe = json.loads(text)
    except json.JSONDecodeError as e:
        raise StageError(f"{where} {what}: not valid JSON ({e})") from None
    if not isinstance(recipe, dict):
        raise StageError(f"{where} {what}: expected a JSON object, got {type(recipe).__name__}")
    missing = [k for k in required if k not in recipe]
    if missing:
        raise StageError(f"{where} {what}: missing key(s) {', '.join(missing)}")
    return recipe


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


def write_lines(path, lines):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def write_jsonl(path, rows):
    write_lines(path, (json.dumps(row, ensure_ascii=False) for row in rows))


class AtomicWriter:
    """Collects files as temporary siblings and renames them into place together at commit(),
    so an interrupted run leaves no half-written file. Use as a context manager: leaving it
    by an exception removes the temporary files instead."""

    def __init__(self, out):
        self.out = Path(out)
        self.pending = []

    def _tmp(self, rel):
        path = self.out / rel
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self.pending.append((tmp, path))
        return tmp

    def file(self, rel):
        """A temporary path to write `rel` by any means (e.g. a plot's savefig)."""
        self.out.mkdir(parents=True, exist_ok=True)
        return self._tmp(rel)

    def jsonl(self, rel, rows):
        write_jsonl(self._tmp(rel), rows)

    def text(self, rel, lines):
        write_lines(self._tmp(rel), lines)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        for tmp, path in self.pending:
            if exc_type is None:
                tmp.replace(path)
            else:
                tmp.unlink(missing_ok=True)
        return False


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


def check_full_precision(path, why) -> dict:
    """The config.json of a model folder that is not quantized, else a StageError ending in `why`
    (e.g. "pruning needs full-precision weights")."""
    config = check_model_dir(path)
    if "quantization_config" in config:
        method = config["quantization_config"].get("quant_method", "unknown")
        raise StageError(f"model {path}: already quantized ({method}); {why}")
    return config


def load_model(path, dtype=None, device=None, **from_pretrained):
    """AutoModelForCausalLM + tokenizer from a local folder, with clear errors.
    `from_pretrained` goes to the model's from_pretrained (e.g. quantization_config)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_dir(path)
    dev, dt = device_and_dtype()
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or dt, local_files_only=True,
                                                     **from_pretrained)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
        raise StageError(f"model {path}: cannot be loaded ({first_line(e)})") from None
    return model.to(device or dev), tok


@contextmanager
def staged_output(out):
    """Yield an empty temp folder beside `out` (.NAME.tmp) to write the stage's output into.

    Only when the block succeeds does the folder replace `out`, in one rename, so a crashed or
    killed run never leaves a half-written `out` for Snakemake or the next stage to take as
    done. A temp folder left by an earlier killed run is removed first; on failure the temp
    folder goes and an existing `out` is left as it was."""
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
        shutil.rmtree(out)  # os.replace cannot replace a non-empty folder
    os.replace(tmp, out)


# The tokenizer and chat template files a model folder may hold. Every stage copies them from its
# parent byte for byte: re-saving them with another transformers release writes a tokenizer_config
# that the target runtime cannot load (docs/target.md).
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "chat_template.jinja", "chat_template.json", "vocab.json", "vocab.txt", "merges.txt",
                   "tokenizer.model", "*.tiktoken"]


def tokenizer_files(model_dir):
    """The tokenizer files of a model folder, sorted."""
    return sorted(p for p in Path(model_dir).iterdir()
                  if p.is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in TOKENIZER_FILES))


def copy_tokenizer(src, dst):
    """Copy `src`'s tokenizer files into `dst` unchanged, or a StageError when it has none."""
    files = tokenizer_files(src)
    if not any(p.name == "tokenizer_config.json" for p in files):
        raise StageError(f"model {src}: no tokenizer_config.json to carry into {dst}")
    for p in files:
        shutil.copyfile(p, Path(dst) / p.name)


def write_model_dir(out, fill):
    """fill(tmp) writes a model folder that replaces `out` only once it is complete
    (common.staged_output), so an interrupted run leaves no half-written model."""
    with staged_output(out) as tmp:
        fill(tmp)
        check_model_dir(tmp)


def save_model(model, parent, out, extra: dict):
    """Model weights (safetensors) + the parent folder's tokenizer files, unchanged +
    {file name: JSON object}, written atomically."""
    with staged_output(out) as tmp:
        model.save_pretrained(tmp)
        copy_tokenizer(parent, tmp)
        for name, obj in extra.items():
            write_json(tmp / name, obj)


def chat_text(tok, messages, add_generation_prompt=False):
    """The chat template applied to a conversation, as text."""
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def limit_threads():
    """Respect Snakemake's `threads:` (passed as OMP_NUM_THREADS) in torch."""
    import torch

    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit():
        torch.set_num_threads(int(n))
