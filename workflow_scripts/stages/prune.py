"""Depth pruning: score every decoder layer on calibration data, drop the least important.

Two importance metrics, both from the hidden states before/after layers on chat-templated
calibration conversations (mean over every non-pad token):

- block_influence (ShortGPT, Men et al. 2024): BI_i = 1 - cos(h_i, h_{i+1}), how much layer i
  turns its input; the n layers with the lowest BI are dropped (they need not be adjacent).
- angular ("The Unreasonable Ineffectiveness of the Deeper Layers", Gromov et al. 2024):
  d(l, l+n) = arccos(cos(h_l, h_{l+n})) / pi for a block of n consecutive layers; the block
  with the smallest distance is dropped.

The first and the last layer are always kept. The kept layers are re-indexed
(model.layers.0..k-1, self_attn.layer_idx) and config.num_hidden_layers, the family's per-layer
lists (layer_types) and window counts (max_window_layers) are cut to match, so transformers and
vLLM load the result as a plain, shallower model of the same architecture.
prune.json beside the weights records the scores and the choice.

    python -m workflow_scripts.stages.prune --model DIR --calib results/data/calib.jsonl \
        --recipe '{"keep_layers": 28, "metric": "block_influence"}' --out DIR
"""
from __future__ import annotations

import math
import time

from workflow_scripts.common import (
    SEED,
    StageError,
    check_full_precision,
    limit_threads,
    load_model,
    run_cli,
    save_model,
    set_seed,
    stage_args,
)
from workflow_scripts.planning.families import family, pruned_config
from workflow_scripts.planning.steps import load_recipe, with_defaults
from workflow_scripts.stages.chat_data import calibration_set


def parse_args(argv):
    return stage_args(argv, "workflow_scripts.stages.prune", __doc__,
                      model="input model folder (Hugging Face format)",
                      calib="calibration conversations (prepared JSONL)")


def check_recipe(text) -> dict:
    return load_recipe(text, "prune")  # keep_layers an integer, metric a known one (planning/steps.py)


def check_prunable(model_dir, keep) -> int:
    """The model's layer count, if `keep` of them can be kept; else a StageError."""
    cfg = check_full_precision(model_dir, "pruning needs full-precision weights")
    n_layers = cfg.get("num_hidden_layers")
    if not isinstance(n_layers, int):
        raise StageError(f"model {model_dir}: config.json has no num_hidden_layers")
    if keep < 2:
        raise StageError(f"model {model_dir}: keep_layers {keep} < 2 (the first and last layer are always kept)")
    if keep >= n_layers:
        raise StageError(f"model {model_dir}: keep_layers {keep} >= its {n_layers} layers (nothing to prune)")
    return n_layers


def calibration_batches(calib_path, tok, n, max_len, batch_size):
    """Chat-templated calibration conversations, tokenized and padded (to the tokenizer's
    padding side, right for EXAONE), in batches."""
    ds = calibration_set(tok, calib_path, n, max_len)
    for i in range(0, len(ds), batch_size):
        yield tok.pad(ds[i:i + batch_size], return_tensors="pt")


def layer_states(model, batch):
    """[h_0 .. h_L]: the input of each decoder layer and the output of the last one, unnormed.

    output_hidden_states gives h_0..h_{L-1} as they are, but its last entry is the final
    norm's output; a hook on the last layer takes its raw output instead."""
    captured = {}
    hook = model.model.layers[-1].register_forward_hook(
        lambda _m, _a, out: captured.__setitem__("last", out[0] if isinstance(out, tuple) else out))
    try:
        out = model(**batch, output_hidden_states=True, use_cache=False)
    finally:
        hook.remove()
    return [*out.hidden_states[:-1], captured["last"]]


def score_layers(model, batches, n_drop):
    """Per-layer BI and the angular distance of every block of n_drop consecutive layers,
    each the mean over all non-pad calibration tokens."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    n_layers = model.config.num_hidden_layers
    bi_sum = torch.zeros(n_layers, dtype=torch.float64)
    ang_sum = torch.zeros(n_layers - n_drop + 1, dtype=torch.float64)
    tokens = 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for batch in tqdm(list(batches), desc="scoring layers", unit="batch"):
            batch = {k: v.to(device) for k, v in batch.items()}
            mask = batch["attention_mask"].bool()
            hs = [h.float()[mask] for h in layer_states(model, batch)]  # (tokens, hidden) each
            for i in range(n_layers):
                bi_sum[i] += (1 - F.cosine_similarity(hs[i], hs[i + 1], dim=-1)).sum().item()
            for l in range(n_layers - n_drop + 1):
                cos = F.cosine_similarity(hs[l], hs[l + n_drop], dim=-1).clamp(-1, 1)
                ang_sum[l] += (torch.arccos(cos) / math.pi).sum().item()
            tokens += int(mask.sum())
    return (bi_sum / tokens).tolist(), (ang_sum / tokens).tolist(), tokens


def choose_dropped(metric, bi, angular, n_layers, n_drop):
    """The layer indices to drop; never the first (0) or the last (n_layers - 1)."""
    if metric == "block_influence":
        middle = sorted(range(1, n_layers - 1), key=lambda i: (bi[i], i))
        return sorted(middle[:n_drop])
    # Block [l, l + n_drop) replaced by identity: l >= 1 and l + n_drop <= n_layers - 1.
    starts = range(1, n_layers - n_drop)
    best = min(starts, key=lambda l: (angular[l], l))
    return list(range(best, best + n_drop))


def drop_layers(model, kept):
    """Keep only the decoder layers `kept` (in order), re-indexed 0..k-1, config to match
    (the family's per-layer lists and window counts: planning/families.py)."""
    import torch

    cfg = model.config
    fam = family(cfg.model_type)
    types = list(getattr(cfg, "layer_types", None) or [])
    # EXAONE 4 hybrids use NoPE on global layers only when sliding layers exist; vLLM decides that
    # from layer_types, transformers from sliding_window, so they would disagree without any.
    if "sliding_attention" in types and "sliding_attention" not in [types[i] for i in kept]:
        raise StageError("pruning would remove every sliding-attention layer of a hybrid model")
    model.model.layers = torch.nn.ModuleList([model.model.layers[i] for i in kept])
    for new_idx, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = new_idx  # the KV cache slot it writes during generation
    for key, value in pruned_config(cfg.to_dict(), kept, fam).items():
        setattr(cfg, key, value)
    return model


def prune(model_dir, calib_path, recipe, out):
    """Prune `model_dir` to recipe keep_layers into `out`. Returns the prune.json dict."""
    recipe = with_defaults("prune", recipe)
    keep = int(recipe["keep_layers"])
    n_layers = check_prunable(model_dir, keep)
    metric = recipe["metric"]
    n_drop = n_layers - keep
    set_seed(recipe.get("seed", SEED))
    t0 = time.time()
    model, tok = load_model(model_dir)
    model.eval()
    batches = calibration_batches(
        calib_path, tok, int(recipe["num_calibration_samples"]),
        int(recipe["max_seq_length"]), int(recipe["batch_size"]))
    bi, angular, tokens = score_layers(model, batches, n_drop)
    dropped = choose_dropped(metric, bi, angular, n_layers, n_drop)
    kept = [i for i in range(n_layers) if i not in dropped]
    drop_layers(model, kept)
    info = {
        "model": str(model_dir),
        "recipe": recipe,
        "metric": metric,
        "num_layers_before": n_layers,
        "num_layers_after": len(kept),
        "dropped_layers": dropped,
        "kept_layers": kept,  # new layer j is old layer kept[j]
        "block_influence": bi,  # one per original layer
        "angular_distance": {"block_size": n_drop,  # by_start[l] = d(h_l, h_{l+n})
                             "by_start": angular},
        "calibration_tokens": tokens,
        "seconds": round(time.time() - t0, 2),
    }
    save_model(model, model_dir, out, {"prune.json": info})
    return info


def main(argv) -> int:
    args = parse_args(argv)
    limit_threads()
    info = prune(args.model, args.calib, check_recipe(args.recipe), args.out)
    print(f"pruned {args.model} -> {args.out}: {info['num_layers_before']} -> {info['num_layers_after']} "
          f"layers by {info['metric']}, dropped {info['dropped_layers']}, {info['seconds']} s")
    return 0


if __name__ == "__main__":
    run_cli(main)
