"""Data preparation: every set loaded with `datasets.load_dataset` (a hub id, or a local file
that overrides it) and normalized into the JSONL schema of docs/data.md.

    python -m workflow_scripts.stages.data --spec JSON --out results/data

spec: {"data": <config data:>, "benchmarks": <config benchmarks:>, "seed": 42}. With
data.generate_demo the demo generator first writes its raw files (the folder of the local
files, results/data/demo_raw), which are then loaded exactly as real local files would be.
Writes sft_train.jsonl, sft_val.jsonl, calib.jsonl, corpus.txt and bench/<name>.jsonl; each
through a temporary file and a rename, so an interrupted run leaves no half-written file.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
from pathlib import Path

from workflow_scripts.common import SEED, AtomicWriter, StageError, first_line, parse_recipe, run_cli
from workflow_scripts.demo import data as demo_data
from workflow_scripts.evaluation.benchmark_kinds import kind_of
from workflow_scripts.evaluation.prompts import longqa_prompt_source
from workflow_scripts.stages.decontamination import BenchmarkIndex, check_rows

# Builders of datasets.load_dataset for local files, by suffix.
BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
REPORT = "data_report.json"  # counts, decontamination, which long-QA prompt each set uses
# Roles as MANTA-1M and ShareGPT-style sets spell them -> the prepared schema's roles.
ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant",
         "gpt": "assistant", "model": "assistant", "bot": "assistant"}


# --- loading -----------------------------------------------------------------------------

class Source:
    """Where one set comes from: a local file (the override) or a hub id and split."""

    def __init__(self, label, cfg, demo_dir):
        self.label = label  # 'data.sft' or 'benchmark <name>', for error messages
        self.local_file = cfg.get("local_file")
        if not self.local_file and cfg.get("dataset") == "demo":
            self.local_file = str(demo_dir / demo_data.FILES[cfg.get("kind", "sft")])
        self.dataset = cfg.get("dataset")
        self.split = cfg.get("split") or "train"

    def __str__(self):
        return f"{self.label} ({self.local_file or f'{self.dataset}, split {self.split}'})"

    def load(self):
        """A datasets.Dataset, or a one-line StageError naming the set and the source."""
        from datasets import load_dataset

        if self.local_file:
            path = Path(self.local_file)
            if not path.is_file():
                raise StageError(f"{self}: file does not exist")
            builder = BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise StageError(f"{self}: unsupported file type {path.suffix!r}; "
                                 f"expected one of {sorted(BUILDERS)}")
            # A throwaway cache: a regenerated file must never be served from a stale cache.
            with tempfile.TemporaryDirectory(prefix="hf-datasets-") as cache:
                try:
                    return load_dataset(builder, data_files=str(path), split="train",
                                        cache_dir=cache, keep_in_memory=True)
                except Exception as e:  # noqa: BLE001 - any parse failure is the file's fault
                    raise StageError(f"{self}: cannot be loaded ({first_line(e)})") from None
        try:
            return load_dataset(self.dataset, split=self.split)
        except Exception as e:  # noqa: BLE001 - network, auth, unknown id or split
            if is_gated(e):
                raise StageError(f"{self}: the set is gated on the hub: accept its terms on "
                                 f"https://huggingface.co/datasets/{self.dataset}, then set HF_TOKEN or run "
                                 f"`hf auth login` ({first_line(e)})") from None
            raise StageError(f"{self}: cannot be loaded from the hub ({first_line(e)})") from None


def is_gated(error) -> bool:
    """Whether a hub load failed for want of access (KMMLU-Pro and KMMLU-Redux are gated):
    huggingface_hub's GatedRepoError, or datasets' wording of it ("a gated dataset", 401/403)."""
    names = {cls.__name__ for cls in type(error).__mro__}
    text = str(error).lower()
    return "GatedRepoError" in names or "gated" in text or re.search(r"\b40[13]\b", text) is not None


def require_columns(ds, source, fields):
    missing = [f for f in fields if f not in ds.column_names]
    if missing:
        raise StageError(f"{source}: missing field {missing[0]!r} "
                         f"(columns: {', '.join(ds.column_names)})")


def subsample(ds, n, seed, shuffle=False):
    """At most n rows, drawn with a seeded shuffle; shuffle=True also shuffles the order."""
    if shuffle:
        ds = ds.shuffle(seed=seed)
        return ds.select(range(min(n or len(ds), len(ds))))
    if n is None or n >= len(ds):
        return ds
    return ds.select(sorted(random.Random(seed).sample(range(len(ds)), n)))


# --- normalization into docs/data.md ------------------------------------------------------

def _row_id(row, name, i, key="id"):
    value = row.get(key)
    return str(value) if value not in (None, "") else f"{name}-{i:06d}"


def normalize_messages(conv, source, i):
    """A MANTA-style conversation -> [{"role", "content"}], or None when it has no answer."""
    if not isinstance(conv, list):
        raise StageError(f"{source}: row {i}: conversation is {type(conv).__name__}, expected a list")
    messages = []
    for m in conv:
        if not isinstance(m, dict):
            raise StageError(f"{source}: row {i}: a message is {type(m).__name__}, expected a mapping")
        role, content = m.get("role", m.get("from")), m.get("content", m.get("value"))
        if role is None or content is None:
            raise StageError(f"{source}: row {i}: a message lacks field 'role' or 'content'")
        if str(role).lower() not in ROLES:
            raise StageError(f"{source}: row {i}: unknown role {role!r}; expected one of {sorted(ROLES)}")
        messages.append({"role": ROLES[str(role).lower()], "content": str(content)})
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        return None
    return messages


def prepare_sft(cfg, source, seed):
    field = cfg.get("field") or "conversations"
    ds = source.load()
    require_columns(ds, source, [field])
    ds = subsample(ds, cfg.get("max_samples"), seed, shuffle=True)
    rows, skipped = [], 0
    for i, row in enumerate(ds):
        messages = normalize_messages(row[field], source, i)
        if messages is None:
            skipped += 1
            continue
        rows.append({"id": _row_id(row, "sft", i), "messages": messages})
    if not rows:
        raise StageError(f"{source}: no conversation with an assistant turn in field {field!r}")
    if skipped:
        print(f"{source}: skipped {skipped} conversations without an assistant turn")
    return rows


def split_sft(rows, val_fraction, calib_samples):
    """(train, val, calib): val is the first share of the shuffled rows, calib drawn from train."""
    n_val = min(len(rows) - 1, max(1, round(len(rows) * val_fraction))) if len(rows) > 1 else 0
    val, train = rows[:n_val], rows[n_val:]
    return train, val, train[:calib_samples]


def prepare_benchmark(name, cfg, source, seed):
    """A benchmark's items in the prepared schema of its kind (benchmark_kinds.KINDS)."""
    try:
        kind = kind_of(name, cfg)
    except ValueError as e:
        raise StageError(f"{source}: {e}") from None
    ds = source.load()
    require_columns(ds, source, kind.fields)
    ds = subsample(ds, cfg.get("max_samples"), seed)
    rows = []
    for i, row in enumerate(ds):
        empty = next((f for f in kind.fields if row[f] is None), None)
        if empty:
            raise StageError(f"{source}: row {i}: field {empty!r} is empty")
        try:
            item = kind.normalize(row)
        except ValueError as e:
            raise StageError(f"{source}: row {i}: {e}") from None
        key = kind.id_field if row.get(kind.id_field) is not None else "id"
        rows.append({"id": _row_id(row, name, i, key), **item})
    if not rows:
        raise StageError(f"{source}: no items")
    return rows


def decontaminate(rows, bench, benchmarks, settings):
    """(SFT rows kept, report): rows sharing a word n-gram with a benchmark's texts are dropped
    or only counted (data.decontamination.action; the demo's world is shared on purpose)."""
    index = BenchmarkIndex(bench, {n: benchmarks[n]["kind"] for n in bench}, settings["ngram"])
    kept, report = check_rows(rows, index, settings["action"])
    if report["overlapping"]:
        verb = "dropped" if report["dropped"] else "kept (action: report)"
        print(f"data.sft: {report['overlapping']} of {report['checked']} conversations share a "
              f"{report['ngram']}-gram with a benchmark ({report['by_benchmark']}): {verb}")
    return kept, report


# --- the stage ---------------------------------------------------------------------------

def demo_dir_of(spec, out):
    """The demo generator writes where the local files point (results/data/demo_raw)."""
    local = spec["data"]["sft"].get("local_file")
    return Path(local).parent if local else Path(out) / "demo_raw"


def prepare(spec, out):
    """Write every prepared file into `out`; returns {file: rows}."""
    data, benchmarks = spec["data"], spec["benchmarks"]
    seed = spec.get("seed", SEED)
    demo_dir = demo_dir_of(spec, out)
    if data.get("generate_demo"):
        demo_data.generate(demo_dir, seed)

    sft_cfg = data["sft"]
    rows = prepare_sft(sft_cfg, Source("data.sft", sft_cfg, demo_dir), seed)
    bench = {name: prepare_benchmark(name, cfg, Source(f"benchmark {name}", cfg, demo_dir), seed)
             for name, cfg in sorted(benchmarks.items())}
    rows, decontamination = decontaminate(rows, bench, benchmarks, data["decontamination"])
    if not rows:
        raise StageError("data.sft: every conversation overlaps a benchmark (data.decontamination)")
    train, val, calib = split_sft(rows, sft_cfg.get("val_fraction", 0.02),
                                  data.get("calibration", {}).get("num_samples", 512))
    corpus = []
    if data.get("generate_demo"):
        corpus = (demo_dir / demo_data.FILES["corpus"]).read_text(encoding="utf-8").splitlines()

    counts = {"sft_train": len(train), "sft_val": len(val), "calib": len(calib), "corpus": len(corpus),
              **{f"bench/{n}": len(v) for n, v in bench.items()}}
    report = {"counts": counts, "decontamination": decontamination,
              "longqa_prompts": {n: {s: sum(longqa_prompt_source(it) == s for it in items) for s in ("row", "template")}
                                 for n, items in bench.items() if benchmarks[n]["kind"] == "longqa"}}
    with AtomicWriter(out) as writer:
        writer.jsonl("sft_train.jsonl", train)
        writer.jsonl("sft_val.jsonl", val)
        writer.jsonl("calib.jsonl", calib)
        writer.text("corpus.txt", corpus)
        for name, items in bench.items():
            writer.jsonl(f"bench/{name}.jsonl", items)
        writer.text(REPORT, [json.dumps(report, indent=2, ensure_ascii=False)])
    print(f"prepared data in {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return counts


def main(argv=None):
    ap = argparse.ArgumentParser(description="Prepare SFT, calibration and benchmark data.")
    ap.add_argument("--spec", required=True, help="JSON: {data, benchmarks, seed}")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    spec = parse_recipe(args.spec, ["data", "benchmarks"], "prepare_data", what="--spec")
    prepare(spec, args.out)
    return 0


if __name__ == "__main__":
    run_cli(main)
