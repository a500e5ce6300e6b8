"""The vLLM side of evaluation: one model in one engine, in a process of its own (vLLM does not
free memory between engines). Run by workflow_scripts.evaluation.evaluate, in the serve env:

    <serve python> -m workflow_scripts.evaluation.eval_worker generate --model DIR --spec JSON --bench-dir DIR \
        --state FILE --out FILE [--reference DIR]
    <serve python> -m workflow_scripts.evaluation.eval_worker judge --model DIR --spec JSON --in FILE --state FILE --out FILE

generate: every benchmark's generations once (the answers, and the engine's warm-up), then the
same generations timed speed.repeats times and the micro-benchmark speed.micro_repeats times
(with speed.score_uses: paired, each micro run paired with one of the --reference model in a second
engine); each figure is the median of its runs (the report re-derives them by speed.statistic).
--untimed: the answers only, no speed (a format the runtime only emulates; FP8 matmuls then run as
float32 GEMMs, evaluation/fp8_emulation.py). judge: a 1-10 rating
per (conversation, turn). --state says "started" once the engine is up, so the caller can tell a
model vLLM cannot load from a later crash.
"""
from __future__ import annotations

import argparse
import json
import time
from contextlib import ExitStack
from pathlib import Path

from workflow_scripts import gpu_slot
from workflow_scripts.common import StageError, read_jsonl, run_cli, write_json
from workflow_scripts.evaluation import answers, fp8_emulation
from workflow_scripts.evaluation.benchmark_kinds import KINDS, kind_of
from workflow_scripts.evaluation.engine import effective_max_model_len, fast_exit, serve_settings, serving
from workflow_scripts.scoring import noise

JUDGE_MAX_NEW_TOKENS = 512
SPEED_TEXT = ("속도 측정을 위한 고정된 문장입니다. 서울은 대한민국의 수도이고 부산은 항구 도시입니다. "
              "The quick brown fox jumps over the lazy dog. ")


# --- spec and benchmark inputs ----------------------------------------------------------------

def load_benchmarks(bench_dir, benchmarks: dict) -> dict:
    """name -> (config entry, items): the first max_samples items of bench/<name>.jsonl."""
    out = {}
    for name, spec in sorted(benchmarks.items()):
        try:
            kind_of(name, spec)
        except ValueError as e:
            raise StageError(str(e)) from None
        items = read_jsonl(Path(bench_dir) / f"{name}.jsonl")
        if spec.get("max_samples"):
            items = items[: spec["max_samples"]]
        if not items:
            raise StageError(f"{Path(bench_dir) / f'{name}.jsonl'}: no items")
        out[name] = (spec, items)
    return out


# --- generate: the evaluated model ------------------------------------------------------------

def chat_prompt(tok, messages):
    """The chat template applied (as the server does), as text and token ids."""
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text, tok.encode(text, add_special_tokens=False)


def generate(llm, prompts_, max_new_tokens, max_len, seed):
    """Greedy generation of a batch of (text, ids) prompts. Returns per prompt
    {"prompt", "response", "tokens", "prompt_tokens"} (a prompt that leaves no room to generate
    is not sent and gets "skipped"), and the wall seconds of the generate call."""
    from vllm import SamplingParams

    rows = [{"prompt": text, "response": "", "tokens": 0, "prompt_tokens": len(ids)} for text, ids in prompts_]
    send = [i for i, (_, ids) in enumerate(prompts_) if len(ids) < max_len]
    for i in set(range(len(rows))) - set(send):
        rows[i]["skipped"] = f"prompt of {rows[i]['prompt_tokens']} tokens does not fit max_model_len {max_len}"
    params = [SamplingParams(temperature=0.0, seed=seed,
                             max_tokens=min(max_new_tokens, max_len - len(prompts_[i][1]))) for i in send]
    start = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": prompts_[i][1]} for i in send], params) if send else []
    seconds = time.perf_counter() - start
    for i, out in zip(send, outs):
        rows[i].update(response=out.outputs[0].text, tokens=len(out.outputs[0].token_ids))
    return rows, seconds


def fit_context(tok, kind, item, template, context_tokens, room):
    """An item's context truncated, never dropped: at most `context_tokens` tokens and what the
    rest of its prompt (the kind's builder: the item's own instruction or the template) leaves of
    `room`. The start is kept (the passages in their order, the last one that fits cut mid-way);
    returns the context and its token count."""
    overhead = len(chat_prompt(tok, [{"role": "user", "content": kind.prompt(item, template, "")[0]}])[1])
    budget = max(0, min(context_tokens, room - overhead - 8))  # 8: re-tokenizing the cut may shift
    ids = tok.encode(item["context"], add_special_tokens=False)
    if len(ids) <= budget:
        return item["context"], len(ids)
    return tok.decode(ids[:budget]).rstrip("\ufffd"), budget


def bench_prompts(tok, spec, items, max_len):
    """(text, ids) per item for the one-turn kinds, and per-item extras for the rows (the kept
    context tokens; for long QA which prompt was used: the item's own or the template)."""
    kind, template = KINDS[spec["kind"]], spec.get("prompt_template")
    out, extras = [], []
    for item in items:
        context, extra = None, {}
        if kind.truncates_context:
            context, kept = fit_context(tok, kind, item, template, spec.get("context_tokens") or max_len,
                                        max_len - spec["max_new_tokens"])
            extra["context_tokens"] = kept
        content, more = kind.prompt(item, template, context)
        out.append(chat_prompt(tok, [{"role": "user", "content": content}]))
        extras.append({**extra, **more})
    return out, extras


def run_benchmark(llm, tok, name, spec, items, max_len, seed):
    """Generations for one benchmark (two turns for mtbench, turn 2 seeing turn 1's answer);
    returns rows and the seconds spent in generate calls. All prompts of a benchmark (turn) go
    to vLLM in one call, which batches them, as an offline evaluation server does: the
    server-style sec/token is that wall time over the tokens generated."""
    n_new = spec["max_new_tokens"]
    if KINDS[spec["kind"]].prompt:  # one-turn kinds; mtbench sends its two turns
        ps, extras = bench_prompts(tok, spec, items, max_len)
        rows, secs = generate(llm, ps, n_new, max_len, seed)
        return [{"benchmark": name, "id": it["id"], **r, **x} for it, r, x in zip(items, rows, extras)], secs
    first = [[{"role": "user", "content": it["turns"][0]}] for it in items]
    rows1, secs1 = generate(llm, [chat_prompt(tok, m) for m in first], n_new, max_len, seed)
    second = [m + [{"role": "assistant", "content": r["response"]}, {"role": "user", "content": it["turns"][1]}]
              for m, r, it in zip(first, rows1, items)]
    rows2, secs2 = generate(llm, [chat_prompt(tok, m) for m in second], n_new, max_len, seed)
    rows = [{"benchmark": name, "id": it["id"], "turn": t, **r}
            for it, r1, r2 in zip(items, rows1, rows2) for t, r in ((1, r1), (2, r2))]
    return rows, secs1 + secs2


def synthetic_prompt(tok, n_tokens):
    """A fixed prompt of exactly n_tokens token ids for the micro-benchmark."""
    ids = []
    while len(ids) < n_tokens:
        ids += tok.encode(SPEED_TEXT, add_special_tokens=False)
    return ids[:n_tokens]


def cold_prefix_cache(llm):
    """Empty vLLM's prefix cache before a timed generation. The timed passes re-send the prompts
    of the first pass; with the cache (vLLM's default) their prefill would be nearly free -- most
    of all for long contexts -- and sec/token would time decoding alone, while a server sees each
    prompt once (docs/metrics.md). Prefixes shared within one pass still hit, as on a server."""
    if not llm.reset_prefix_cache():
        raise RuntimeError("vLLM refused to reset its prefix cache (requests still running)")


def timed_run(llm, prompt, params):
    """Seconds per generated token of one generate call, from a cold prefix cache."""
    cold_prefix_cache(llm)
    start = time.perf_counter()
    out = llm.generate(prompt, params, use_tqdm=False)
    return (time.perf_counter() - start) / len(out[0].outputs[0].token_ids)


def micro_benchmark(llm, tok, speed, seed, reference=None):
    """Fixed prompt, exactly micro_new_tokens generated (EOS ignored), one request at a time:
    one warm-up, then speed.micro_repeats timed runs. With a `reference` engine (the base model,
    speed.score_uses: paired) each run is paired with one of the reference, in alternating order,
    so that both see the same moment of the machine. Returns (runs, reference runs) in sec/token."""
    from vllm import SamplingParams

    n_new = speed["micro_new_tokens"]
    prompt = [{"prompt_token_ids": synthetic_prompt(tok, speed["micro_prompt_tokens"])}]
    params = SamplingParams(temperature=0.0, seed=seed, max_tokens=n_new, min_tokens=n_new, ignore_eos=True)
    engines = [llm] if reference is None else [llm, reference]
    for engine in engines:
        engine.generate(prompt, params, use_tqdm=False)
    runs = [[] for _ in engines]
    for i in range(speed["micro_repeats"]):
        order = range(len(engines)) if i % 2 == 0 else reversed(range(len(engines)))
        for k in order:
            runs[k].append(timed_run(engines[k], prompt, params))
    return runs[0], (runs[1] if reference is not None else [])


def benchmark_pass(llm, tok, benches, max_len, seed):
    """Every benchmark's generations once: (rows, seconds spent in generate calls)."""
    rows, seconds = [], 0.0
    for name, (bspec, items) in benches.items():
        print(f"{name}: {len(items)} items", flush=True)
        bench_rows, secs = run_benchmark(llm, tok, name, bspec, items, max_len, seed)
        rows += bench_rows
        seconds += secs
    return rows, seconds


def worker_generate(args) -> int:
    spec = json.loads(args.spec)
    serve = serve_settings(spec)
    benches = load_benchmarks(args.bench_dir, spec["benchmarks"])
    state = Path(args.state)
    state.write_text("starting")
    if args.untimed:
        fp8_emulation.install()
    with ExitStack() as engines:  # both engines stopped at the end (engine.serving)
        start = time.perf_counter()
        llm = engines.enter_context(serving(args.model, serve))
        engine_seconds = time.perf_counter() - start
        state.write_text("started")
        print(f"engine started in {engine_seconds:.1f} s", flush=True)
        result = timed_generations(llm, engines, args, spec, serve, benches)
        result["runtime"]["engine_start_seconds"] = round(engine_seconds, 2)
        write_json(args.out, result)
    return 0


def timed_generations(llm, engines, args, spec, serve, benches) -> dict:
    """The answers (first pass), the timed passes and the micro-benchmark: generate's output.
    A reference engine (score_uses: paired) joins `engines` (an ExitStack) for the micro-benchmark."""
    tok, max_len, seed = llm.get_tokenizer(), effective_max_model_len(args.model, serve), serve["seed"]
    # The first pass answers the benchmarks and warms the engine up; the timed section (the same
    # generations, then the micro-benchmark) is repeated so that one slow moment is not the Score.
    rows, warmup_seconds = benchmark_pass(llm, tok, benches, max_len, seed)
    runtime = {"dtype": str(llm.model_config.dtype).replace("torch.", ""), "max_model_len": max_len,
               "enforce_eager": bool(serve["enforce_eager"])}
    if args.untimed:
        return {"rows": rows, "speed": None, "runtime": runtime}
    reference = None
    if spec["speed"]["score_uses"] == "paired":
        # A second engine in this process: the base, timed run by run beside the model. Started
        # before the timed section, which only the timed generations need to themselves.
        print(f"reference engine: {args.reference}", flush=True)
        reference = engines.enter_context(serving(args.reference, serve))
    server = []
    with gpu_slot.timed_section():
        for i in range(spec["speed"]["repeats"]):
            print(f"timed pass {i + 1}/{spec['speed']['repeats']}", flush=True)
            cold_prefix_cache(llm)
            timed_rows, seconds = benchmark_pass(llm, tok, benches, max_len, seed)
            tokens = sum(r["tokens"] for r in timed_rows)
            server.append(seconds / tokens if tokens else None)
        micro, reference_micro = micro_benchmark(llm, tok, spec["speed"], seed, reference)
    tokens = sum(r["tokens"] for r in rows)
    server = [s for s in server if s]
    # The file's own figures are medians; speed.statistic is the report's (scoring/noise.py with_statistic).
    statistic = "median"
    speed = {"statistic": statistic,
             "server_sec_per_token": noise.figure(server, statistic) if server else None,
             "server_runs_sec_per_token": server,
             "warmup_server_sec_per_token": warmup_seconds / tokens if tokens else None,
             "generated_tokens": tokens,
             "micro_sec_per_token": noise.figure(micro, statistic), "micro_runs_sec_per_token": micro}
    if reference is not None:
        ratios = [own / ref for own, ref in zip(micro, reference_micro)]
        speed.update(paired_reference=str(args.reference), paired_reference_runs_sec_per_token=reference_micro,
                     paired_ratio_runs=ratios, paired_speed_ratio=noise.figure(ratios, statistic))
    return {"rows": rows, "speed": speed, "runtime": runtime}


# --- judge -----------------------------------------------------------------------------------

def worker_judge(args) -> int:
    """Rate each (conversation, turn) of --in 1-10 with the judge model; writes --out."""
    spec = json.loads(args.spec)
    serve = serve_settings(spec)
    convs = read_jsonl(args.inp)
    Path(args.state).write_text("starting")
    with serving(args.model, serve) as llm:
        Path(args.state).write_text("started")
        tok, max_len = llm.get_tokenizer(), effective_max_model_len(args.model, serve)
        ps = [chat_prompt(tok, [{"role": "user", "content": answers.judge_prompt(
            c["questions"], c["answers"], c["turn"], c.get("reference"))}]) for c in convs]
        rows, _ = generate(llm, ps, JUDGE_MAX_NEW_TOKENS, max_len, serve["seed"])
    write_json(args.out, {"ratings": [
        {"id": c["id"], "turn": c["turn"], "judge_response": r["response"],
         "rating": answers.parse_rating(r["response"])} for c, r in zip(convs, rows)]})
    return 0


def main(argv) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=["generate", "judge"])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--spec", required=True, help="JSON: config benchmarks, serve, speed, judge")
    ap.add_argument("--state", required=True, help="file that says 'started' once the engine is up")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--bench-dir", type=Path, help="generate: the prepared benchmarks")
    ap.add_argument("--reference", type=Path, help="generate: the base model, timed beside it (score_uses: paired)")
    ap.add_argument("--untimed", action="store_true", help="generate: the answers only, no timed passes")
    ap.add_argument("--in", dest="inp", help="judge: the conversations to rate (JSONL)")
    args = ap.parse_args(argv)
    code = worker_generate(args) if args.kind == "generate" else worker_judge(args)
    # The output is written and the engines stopped (an in-process one needs no stopping).
    fast_exit(code)


if __name__ == "__main__":
    run_cli(main)
