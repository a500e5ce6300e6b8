"""Which conversations a training recipe (sft, post_sft, kd) trains on: its `data` key.

    data: sft                          # the default: results/data/sft_train.jsonl
    data: teacher                      # results/data/teacher/<teacher>.jsonl (workflow_scripts.stages.teacher)
    data:                              # a mix: each source's rows, times its weight
      - {source: sft, weight: 0.5}     #   a seeded half of the SFT rows
      - {source: teacher, weight: 2}   #   every teacher row twice

A weight is a multiplier of the source's row count (whole copies, then a seeded sample for the
fraction), so the mix is deterministic and a weight reads as "how much of this source".
Validation is always sft_val.jsonl, whatever the training data: every lane's before/after loss is
measured on the same held-out set, so a teacher-data lane shows whether it paid on real data.

A single source is used as is; a mix is written by rule mix_data:

    python -m workflow_scripts.stages.data_mix --spec JSON --sft sft_train.jsonl --teacher T.jsonl --out mix.jsonl

Stdlib only: config.py imports it at parse time.
"""
from __future__ import annotations

import argparse
import json
import random

SOURCES = ("sft", "teacher")
TRAIN_STEPS = ("sft", "post_sft", "kd")
SFT_FILE = "sft_train.jsonl"


def teacher_slug(model_id: str) -> str:
    """A teacher id as a file name: 'Qwen/Qwen2.5-7B-Instruct' -> 'Qwen--Qwen2.5-7B-Instruct'."""
    return model_id.replace("/", "--")


def spec_error(step, recipe):
    """Why a recipe's `data` is malformed, in one line, or None."""
    if "data" not in recipe:
        return None
    if step not in TRAIN_STEPS:
        return f"only {'/'.join(TRAIN_STEPS)} recipes take training data, not a {step} step"
    data = recipe["data"]
    if isinstance(data, str):
        return None if data in SOURCES else f"expected one of {list(SOURCES)} or a list of {{source, weight}}, got {data!r}"
    if not isinstance(data, list) or not data:
        return f"expected one of {list(SOURCES)} or a non-empty list of {{source, weight}}, got {data!r}"
    for i, part in enumerate(data):
        if not isinstance(part, dict) or set(part) != {"source", "weight"}:
            return f"[{i}]: expected {{source: {'|'.join(SOURCES)}, weight: number > 0}}, got {part!r}"
        if part["source"] not in SOURCES:
            return f"[{i}].source: expected one of {list(SOURCES)}, got {part['source']!r}"
        if isinstance(part["weight"], bool) or not isinstance(part["weight"], (int, float)) or part["weight"] <= 0:
            return f"[{i}].weight: expected a number > 0, got {part['weight']!r}"
    if len({p["source"] for p in data}) != len(data):
        return "a source appears twice in the mix"
    return None


def sources(recipe) -> list:
    """[(source, weight)] of a (valid) recipe."""
    data = recipe.get("data", "sft")
    if isinstance(data, str):
        return [(data, 1.0)]
    return [(p["source"], float(p["weight"])) for p in data]


def uses_teacher(recipe) -> bool:
    return any(s == "teacher" for s, _ in sources(recipe))


def source_file(source, teacher_id):
    """The prepared file of one source, relative to results/data."""
    return SFT_FILE if source == "sft" else f"teacher/{teacher_slug(teacher_id)}.jsonl"


def train_file(recipe_name, recipe, teacher_id):
    """The training file of a recipe, relative to results/data: a source's own file when it is
    used alone once, else the mix rule's output."""
    parts = sources(recipe)
    if len(parts) == 1 and parts[0][1] == 1.0:
        return source_file(parts[0][0], teacher_id)
    return f"mix/{recipe_name}.jsonl"


def mix(rows_by_source: dict, parts, seed: int) -> list:
    """The rows of each (source, weight) in order: int(weight) full copies, then a seeded sample
    of the fractional share. Repeated rows get ids suffixed ~1, ~2, ... so ids stay unique."""
    out = []
    for source, weight in parts:
        rows = rows_by_source[source]
        copies, frac = int(weight), weight - int(weight)
        picked = [(k, r) for k in range(copies) for r in rows]
        extra = round(frac * len(rows))
        if extra:
            idx = sorted(random.Random(f"{seed}:{source}").sample(range(len(rows)), extra))
            picked += [(copies, rows[i]) for i in idx]
        out += [r if k == 0 else {**r, "id": f"{r['id']}~{k}"} for k, r in picked]
    return out


def _read(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description="Mix training sources by weight (a recipe's data list).")
    ap.add_argument("--spec", required=True, help='JSON {"data": [...], "seed": 42}')
    ap.add_argument("--sft")
    ap.add_argument("--teacher")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    spec = json.loads(args.spec)
    parts = sources(spec)
    files = {"sft": args.sft, "teacher": args.teacher}
    missing = [s for s, _ in parts if not files[s]]
    if missing:
        ap.error(f"--{missing[0]} is required by the mix")
    rows = mix({s: _read(files[s]) for s, _ in parts}, parts, spec.get("seed", 42))
    with open(args.out, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}: {len(rows)} rows from " + ", ".join(f"{s} x{w:g}" for s, w in parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
