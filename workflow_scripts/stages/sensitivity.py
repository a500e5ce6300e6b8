"""Per-layer sensitivity of a model to one quantize recipe: each decoder layer is quantized alone
(llmcompressor oneshot, the recipe's scheme and method, every other Linear in the ignore list) and
the output distribution is compared with the unquantized parent's, as the mean per-token
KL(parent || quantized) on held-out conversations. Which layers to keep in full precision is then
a measurement (quantize: keep_unquantized.most_sensitive), computed once per (parent, recipe).

    python -m workflow_scripts.stages.sensitivity --model DIR --calib results/data/calib.jsonl \
        --heldout results/data/sft_val.jsonl --recipe '{"recipe": {...}, "measure": {...}}' \
        --out results/analysis/base.gptq_w4a16.sensitivity.json      (and .png beside it)

--recipe: {"recipe": the quantize recipe without keep_unquantized, "measure": config `sensitivity`
({num_calibration_samples (null: the recipe's), num_eval_samples, max_seq_length})}.
Writes {"model", "recipe", "measure", "layers": [{"layer", "kl", "quant_error", "modules"}],
"ranking" (layers by KL, largest first), "lm_head", "seconds"} and a bar plot of KL per layer.
quant_error is the sum over the layer's modules of the error GPTQ reports (null for minmax).
"""
from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager
from pathlib import Path

from workflow_scripts.common import (
    SEED,
    AtomicWriter,
    device_and_dtype,
    limit_threads,
    load_model,
    parse_recipe,
    run_cli,
    set_seed,
    stage_args,
)

# What the measurement says about the head: the recipes never quantize it (quantize.IGNORE).
LM_HEAD = "not measured: never quantized (tied to embed_tokens; the target loads it only unquantized)"


def parse_args(argv):
    return stage_args(argv, "workflow_scripts.stages.sensitivity", __doc__, many=("calib",),
                      model="parent model folder (full precision)",
                      calib="calibration files (calib.jsonl, plus the recipe's calibration_mix sources)",
                      heldout="held-out conversations for the KL (prepared sft_val.jsonl)")


@contextmanager
def gptq_errors():
    """{module: error} as GPTQ logs it (llmcompressor's CompressionLogger writes 'error 1.23'
    after 'Quantizing <module> using N samples'); empty for methods that report none."""
    from loguru import logger

    errors, current = {}, {}

    def sink(message):
        text = message.record["message"]
        if m := re.match(r"Quantizing (\S+) using", text):
            current["module"] = m.group(1)
        elif (m := re.match(r"error ([-+\d.eE]+|nan|inf)$", text)) and "module" in current:
            errors[current["module"]] = float(m.group(1))

    handler = logger.add(sink, level=0, format="{message}")
    try:
        yield errors
    finally:
        logger.remove(handler)


def mean_kl(parent, model, sequences, device) -> float:
    """Mean per-token KL(parent || model) of the next-token distributions, one sequence at a
    time (no padding to mask)."""
    import torch
    import torch.nn.functional as F

    total, tokens = 0.0, 0
    with torch.no_grad():
        for ids in sequences:
            x = torch.tensor([ids], device=device)
            p = parent(x).logits.float().log_softmax(-1)
            q = model(x).logits.float().log_softmax(-1)
            total += F.kl_div(q, p, log_target=True, reduction="sum").item()
            tokens += x.shape[1]
    return total / max(tokens, 1)


def quantize_one_layer(model_dir, recipe, layer, ds, max_len, dtype):
    """A fresh copy of the parent with only `layer`'s Linear modules quantized by the recipe,
    and the errors GPTQ reported for them."""
    from compressed_tensors.utils import remove_dispatch
    from llmcompressor import oneshot

    from workflow_scripts.stages.quantize import IGNORE, calibration_kwargs, layer_linears, make_modifier, quant_scheme

    model, _ = load_model(model_dir, dtype=dtype, device="cpu")
    others = [name for i, names in layer_linears(model).items() if i != layer for name in names]
    with gptq_errors() as errors:
        model = oneshot(model=model, recipe=make_modifier(recipe, quant_scheme(recipe), IGNORE + others),
                        **calibration_kwargs(model_dir, ds, max_len))
    remove_dispatch(model)  # the sequential pipeline may leave offloading hooks behind
    return model, dict(errors)


def measure(model_dir, calib_paths, heldout, params) -> dict:
    """The sensitivity of every decoder layer of `model_dir` to `params["recipe"]`."""
    from workflow_scripts.stages.chat_data import calibration_set
    from workflow_scripts.stages.quantize import NEEDS_CALIBRATION, check_recipe, layer_linears

    recipe = check_recipe(json.dumps(params["recipe"]))
    how = params.get("measure") or {}
    set_seed(params.get("seed", SEED))
    device, dtype = device_and_dtype()
    parent, tok = load_model(model_dir, dtype=dtype, device=device)
    parent.eval()
    layers = layer_linears(parent)
    # config `sensitivity:` (schema defaults) wins; its null num_calibration_samples means the recipe's
    max_len = int(how.get("max_seq_length") or recipe["max_seq_length"])
    n_calib = int(how.get("num_calibration_samples") or recipe["num_calibration_samples"])
    ds = None
    if recipe["scheme"] in NEEDS_CALIBRATION:
        ds = calibration_set(tok, calib_paths, n_calib, max_len, recipe["calibration_mix"])
    held = calibration_set(tok, heldout, int(how.get("num_eval_samples", 32)), max_len)["input_ids"]

    t0, rows = time.time(), []
    for layer in sorted(layers):
        model, errors = quantize_one_layer(model_dir, recipe, layer, ds, max_len, dtype)
        kl = mean_kl(parent, model.to(device).eval(), held, device)
        rows.append({"layer": layer, "kl": kl, "modules": len(layers[layer]),
                     "quant_error": sum(errors.values()) if errors else None})
        print(f"layer {layer}: KL {kl:.6g}" + (f", GPTQ error {rows[-1]['quant_error']:.4g}" if errors else ""))
        del model
    ranking = [r["layer"] for r in sorted(rows, key=lambda r: (-r["kl"], r["layer"]))]
    return {"model": str(model_dir), "recipe": recipe, "measure": how, "eval_sequences": len(held),
            "calibration_samples": len(ds) if ds else 0, "layers": rows, "ranking": ranking,
            "lm_head": LM_HEAD, "seconds": round(time.time() - t0, 2)}


def plot(path, result):
    """KL per decoder layer as bars, each labelled with its rank (1 = most sensitive)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["layers"]
    rank = {layer: i + 1 for i, layer in enumerate(result["ranking"])}
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(rows) + 2), 4), dpi=110)
    bars = ax.bar([r["layer"] for r in rows], [r["kl"] for r in rows], color="tab:blue")
    for bar, r in zip(bars, rows):
        ax.annotate(f"#{rank[r['layer']]}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    xytext=(0, 2), textcoords="offset points", ha="center", fontsize=7)
    recipe = result["recipe"]
    ax.set_xlabel("decoder layer (quantized alone)")
    ax.set_ylabel("KL(parent || quantized), per token")
    ax.set_title(f"{Path(result['model']).name}: {recipe['scheme']} ({recipe['method']}) "
                 "one layer at a time (#1 = most sensitive)", fontsize=10)
    ax.set_xticks([r["layer"] for r in rows])
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def plot_path(out):
    """results/analysis/X.sensitivity.json -> results/analysis/X.sensitivity.png"""
    return Path(out).with_suffix(".png")


def main(argv) -> int:
    args = parse_args(argv)
    limit_threads()
    params = parse_recipe(args.recipe, ["recipe"], "sensitivity")
    result = measure(args.model, args.calib, args.heldout, params)
    out = Path(args.out)
    with AtomicWriter(out.parent) as writer:
        writer.text(out.name, [json.dumps(result, indent=2)])
        plot(writer.file(plot_path(out).name), result)
    print(f"sensitivity of {args.model} to {result['recipe']['scheme']}: most sensitive layers "
          f"{result['ranking'][:3]} ({result['seconds']} s) -> {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
