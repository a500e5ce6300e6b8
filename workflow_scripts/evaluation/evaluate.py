"""Evaluate one model as the contest server does: vLLM, chat template, greedy decoding, seed 42;
accuracy per benchmark, seconds per generated token, size, memory (docs/metrics.md).

    <serve python> -m workflow_scripts.evaluation.evaluate --model DIR --lane NAME --chain JSON \
        --bench-dir results/data/bench --spec JSON --out results/metrics/<lane>.json \
        --items results/metrics/<lane>.items.jsonl [--reference BASE_DIR] [--speed-only]

Runs in the serve env, as the orchestrator: this process never imports vLLM. It checks the model's
quantization format against what the runtime can serve (serve_formats.py), runs the model in a
worker process (eval_worker.py generate) and, when a judge is configured, the judge in a second one
(eval_worker.py judge) -- vLLM does not free memory between engines, so one model per process --
then scores the generations (benchmark_scoring.py) and writes the metrics and per-item rows.
--speed-only times the model again (the base's second process, for the noise floor): no judge,
no per-item file.

Exit status: 0 when metrics were written, with status ok, untimed (answers scored, speed not
timed: the runtime only emulates the format, serve_formats.UNTIMED), unsupported (the runtime has no kernel
for the format; known before any engine starts) or failed (the engine would not start: the
model is unusable, and the run goes on so that the summary shows why); 2 for bad inputs
(StageError); 1 when a worker crashes after its engine started (a bug or an out-of-memory kill:
no metrics, Snakemake marks the job failed and a rerun retries it).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections import deque
from pathlib import Path

from workflow_scripts import REPO
from workflow_scripts.common import StageError, check_model_dir, root_cause, run_cli, write_json, write_jsonl
from workflow_scripts.evaluation.benchmark_scoring import METRIC_OF_KIND, score_rows
from workflow_scripts.evaluation.engine import (
    detect_device,
    effective_max_model_len,
    run_engine_process,
    serve_settings,
    vllm_version,
)
from workflow_scripts.evaluation.eval_worker import load_benchmarks
from workflow_scripts.evaluation.serve_formats import quant_summary, unsupported_reason, untimed_reason


def folder_bytes(path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# --- run the workers, score, write the metrics ------------------------------------------------

def run_worker(kind, model, spec_json, work: Path, extra=()):
    """Run `python -m workflow_scripts.evaluation.eval_worker KIND` with its output copied to ours.
    Returns (exit code, whether its engine had started, the last lines it printed)."""
    state = work / f"{kind}.state"
    cmd = [sys.executable, "-m", "workflow_scripts.evaluation.eval_worker", kind, "--model", str(model),
           "--spec", spec_json, "--state", str(state), "--out", str(work / f"{kind}.json"), *extra]
    tail, pending = deque(maxlen=300), [b""]
    # The package root on PYTHONPATH so that `-m workflow_scripts...` resolves from any directory.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    out = sys.stdout.buffer

    def echo(chunk):
        out.write(chunk)
        out.flush()
        *lines, pending[0] = re.split(rb"[\r\n]", pending[0] + chunk)
        tail.extend(l.decode(errors="replace") for l in lines)

    # In a session of its own, stopped with its engines however this process ends (engine.py).
    code = run_engine_process(cmd, echo, env=env)
    tail.append(pending[0].decode(errors="replace"))
    started = state.exists() and state.read_text() == "started"
    return code, started, list(tail)


def judge_mtbench(spec, mt_rows, benches, work):
    """Ratings keyed by (id, turn) from the judge worker, or (None, note) when there are none."""
    judge = (spec.get("judge") or {}).get("model")
    if not judge:
        return None, "no judge configured"
    convs = []
    for name, rows in mt_rows.items():
        items = {str(it["id"]): it for it in benches[name][1]}
        by_id = {}
        for r in rows:
            by_id.setdefault(str(r["id"]), {})[r["turn"]] = r["response"]
        for id_, turns in by_id.items():
            it = items[id_]
            for t in (1, 2):
                convs.append({"id": id_, "turn": t, "questions": it["turns"],
                              "answers": [turns[1], turns[2]], "reference": it.get("reference")})
    write_jsonl(work / "judge_in.jsonl", convs)
    code, _, tail = run_worker("judge", judge, json.dumps(spec), work, ["--in", str(work / "judge_in.jsonl")])
    if code != 0:
        return None, f"judge {judge} failed: {root_cause(tail)}"
    ratings = json.loads((work / "judge.json").read_text())["ratings"]
    return {(r["id"], r["turn"]): r for r in ratings}, None


def skeleton(args, chain, config, device):
    return {"lane": args.lane, "chain": chain, "model_dir": str(args.model), "status": "ok", "reason": None,
            "benchmarks": {}, "speed": None, "size_bytes": folder_bytes(args.model),
            "quantization": quant_summary(config),
            "runtime": {"vllm": vllm_version(), "device": device}}


def not_evaluated(metrics, benches, status, reason, args):
    """Metrics of a model that was not evaluated: every benchmark null, the reason in one line."""
    metrics.update(status=status, reason=reason)
    metrics["benchmarks"] = {name: {"metric": METRIC_OF_KIND[s["kind"]], "value": None, "n": 0,
                                    "note": f"not evaluated ({status})"}
                             for name, (s, _) in benches.items()}
    write_json(args.out, metrics)
    if args.items:
        write_jsonl(args.items, [])
    print(f"{args.lane}: {status}: {reason}")
    return 0


def evaluate(args) -> int:
    config = check_model_dir(args.model)
    try:
        chain, spec = json.loads(args.chain or "[]"), json.loads(args.spec)
    except json.JSONDecodeError as e:
        raise StageError(f"--chain/--spec: not valid JSON ({e})") from None
    benches = load_benchmarks(args.bench_dir, spec.get("benchmarks") or {})
    serve, speed = serve_settings(spec), spec["speed"]
    max_len = effective_max_model_len(args.model, serve)
    if speed["micro_prompt_tokens"] + speed["micro_new_tokens"] > max_len:
        raise StageError(f"speed: micro_prompt_tokens + micro_new_tokens exceed max_model_len {max_len} of {args.model}")
    worker_args = ["--bench-dir", str(args.bench_dir)]
    if speed["score_uses"] == "paired":
        if not args.reference:
            raise StageError("speed.score_uses is 'paired': --reference (the base model) is required")
        check_model_dir(args.reference)
        worker_args += ["--reference", str(args.reference)]
    device = detect_device()
    metrics = skeleton(args, chain, config, device)

    reason = unsupported_reason(metrics["quantization"], device)
    if reason:
        return not_evaluated(metrics, benches, "unsupported", reason, args)
    untimed = untimed_reason(metrics["quantization"], device)
    if untimed:
        if args.speed_only:
            return not_evaluated(metrics, benches, "untimed", untimed, args)
        metrics.update(status="untimed", reason=untimed)
        worker_args += ["--untimed"]  # the worker then starts no reference engine: nothing is timed

    with tempfile.TemporaryDirectory(prefix="evaluate-") as tmp:
        work = Path(tmp)
        code, started, tail = run_worker("generate", args.model, args.spec, work, worker_args)
        if code != 0 and not started:
            return not_evaluated(metrics, benches, "failed",
                                 f"vLLM could not load the model: {root_cause(tail)}", args)
        if code != 0:
            print(f"error: evaluation of {args.model} crashed after its engine started: {root_cause(tail)}",
                  file=sys.stderr)
            return 1
        gen = json.loads((work / "generate.json").read_text())
        rows_by_bench = {}
        for row in gen["rows"]:
            rows_by_bench.setdefault(row["benchmark"], []).append(row)
        mt = {n: rows_by_bench[n] for n, (s, _) in benches.items()
              if s["kind"] == "mtbench" and not args.speed_only}
        ratings, judge_note = judge_mtbench(spec, mt, benches, work) if mt else (None, None)

    for name, (bspec, items) in benches.items():
        metrics["benchmarks"][name] = score_rows(bspec, items, rows_by_bench[name], ratings, judge_note)
    metrics.update(speed=gen["speed"])
    metrics["runtime"].update(gen["runtime"])
    if args.items:
        write_jsonl(args.items, gen["rows"])
    write_json(args.out, metrics)
    summary = {n: e["value"] for n, e in metrics["benchmarks"].items()}
    speed = metrics["speed"] or {}
    print(f"{args.lane}: {summary}; sec/token server {speed.get('server_sec_per_token')}, "
          f"micro {speed.get('micro_sec_per_token')}" + (f" ({untimed})" if untimed else ""))
    return 0


def main(argv) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--spec", required=True,
                    help="JSON: config benchmarks, serve, speed, judge (planning/rule_params.py: no scoring settings)")
    ap.add_argument("--lane")
    ap.add_argument("--chain", help="JSON list of the lane's recipes")
    ap.add_argument("--bench-dir", type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--items", type=Path)
    ap.add_argument("--reference", type=Path,
                    help="the base model, timed beside the model when speed.score_uses is paired")
    ap.add_argument("--speed-only", action="store_true",
                    help="time the model again (another process, for the noise floor): no judge, no --items")
    args = ap.parse_args(argv)
    if not (args.lane and args.bench_dir and (args.items or args.speed_only)):
        ap.error("--lane, --bench-dir and --items (or --speed-only) are required")
    return evaluate(args)


if __name__ == "__main__":
    run_cli(main)
