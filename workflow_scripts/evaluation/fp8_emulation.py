"""FP8 matmuls on a CPU without FP8 units, computed as float32 GEMMs.

vLLM's CPU fallback for FP8 W8A8 layers calls torch._scaled_mm, whose CPU kernel is a slow
reference path on a CPU without AMX-FP8: about 20 ns per multiply-add (0.8 s for a 1024x128x384
product that float32 GEMM does in 6-17 ms on the demo's machine), 100-200x the bf16 model. Every
FP8 value is exact in float32 and so is each product of two, so widening both operands and
running an ordinary float32 GEMM gives the same sums (the same bits in vLLM's unit-scale call,
checked in tests/test_fp8_emulation.py) at float32 GEMM speed.

Installed only for an untimed lane (evaluation/serve_formats.py UNTIMED): its answers are scored,
its time is not, so the emulation only has to be exact, not representative.
"""
from __future__ import annotations

import warnings

_LIBRARY = None  # the torch.library registration; kept alive for the life of the process


def scaled_mm(a, b, scale_a, scale_b, bias=None, scale_result=None, out_dtype=None, use_fast_accum=False):
    """aten::_scaled_mm for tensor-wise and row/column-wise scales: (a @ b) * scale_a * scale_b + bias."""
    import torch  # here, not at the top: the evaluation orchestrator imports the worker without torch

    if scale_result is not None:
        raise NotImplementedError("FP8 emulation: scale_result (an FP8 output) is not supported")
    out = torch.mm(a.to(torch.float32), b.to(torch.float32)) * scale_a.to(torch.float32) * scale_b.to(torch.float32)
    if bias is not None:
        out = out + bias.to(torch.float32)
    return out.to(out_dtype or a.dtype)


def install() -> None:
    """Route every torch._scaled_mm on the CPU in this process through `scaled_mm` (idempotent)."""
    import torch

    global _LIBRARY
    if _LIBRARY is None:
        library = torch.library.Library("aten", "IMPL")
        with warnings.catch_warnings():  # the override is the point; torch warns of every one
            warnings.filterwarnings("ignore", message="(?s).*Overriding a previously registered kernel")
            library.impl("_scaled_mm", scaled_mm, "CPU")
        _LIBRARY = library
