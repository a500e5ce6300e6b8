"""Model families: what differs between the architectures the lanes support, in one table.

A base model's family is its config.json `model_type`. Every stage that depends on the
architecture reads it from here (stdlib only, so planning, the stages and the target check all
import it). All five keep their decoder layers in `model.layers` and their head in `lm_head`.

- decoder_layer: the class llmcompressor's sequential pipeline calibrates one at a time
  (oneshot `sequential_targets`);
- per_layer_config: config.json lists with one entry per decoder layer, which pruning shortens
  to the kept layers (a list longer than num_hidden_layers fails to load in vLLM 0.14.1);
- window_layers: a config count of leading full-attention layers (Qwen's max_window_layers),
  which pruning recounts over the kept layers;
- norm: the RMSNorm class whose weights post-SFT trains (QK-norm layers included);
- lora_targets: the projections LoRA SFT adapts;
- qkv_bias: q/k/v projections carry a bias (Qwen2), which the target check expects stored.

Adding a family: one entry here, its chat format in workflow_scripts/demo/model.py (for the
families run) and its models in config/models.yaml. docs/families.md says how it was checked.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Family:
    model_type: str
    decoder_layer: str
    norm: str
    per_layer_config: tuple = ()
    window_layers: str | None = None
    qkv_bias: bool = False
    lora_targets: tuple = PROJECTIONS
    # Shipping to the contest server is allowed for this family (the contest fixes the base).
    contest: bool = False


FAMILIES = {f.model_type: f for f in (
    Family("exaone4", "Exaone4DecoderLayer", "Exaone4RMSNorm", per_layer_config=("layer_types",), contest=True),
    Family("qwen2", "Qwen2DecoderLayer", "Qwen2RMSNorm", per_layer_config=("layer_types",),
           window_layers="max_window_layers", qkv_bias=True),
    Family("qwen3", "Qwen3DecoderLayer", "Qwen3RMSNorm", per_layer_config=("layer_types",),
           window_layers="max_window_layers"),
    Family("llama", "LlamaDecoderLayer", "LlamaRMSNorm"),
    Family("mistral", "MistralDecoderLayer", "MistralRMSNorm"),
)}


class UnknownFamily(ValueError):
    """A model_type with no entry in FAMILIES: one line naming it and the supported ones (the
    caller says where it was read)."""

    def __init__(self, model_type):
        super().__init__(f"model_type {model_type!r} is not a supported family; "
                         f"supported: {', '.join(sorted(FAMILIES))}")


def family(model_type) -> Family:
    if model_type not in FAMILIES:
        raise UnknownFamily(model_type)
    return FAMILIES[model_type]


def model_type_of(folder) -> str | None:
    """config.json `model_type` of a model folder, or None when the folder has no config yet."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("model_type")


def family_of(folder) -> Family:
    """The family of a model folder (its config.json), or UnknownFamily."""
    return family(model_type_of(folder))


def pruned_config(config: dict, kept: list, fam: Family) -> dict:
    """The config.json entries pruning to decoder layers `kept` (original indices, in order)
    rewrites: num_hidden_layers, each per-layer list cut to the kept entries, and the leading
    full-attention count recounted over the kept layers."""
    out = {"num_hidden_layers": len(kept)}
    for key in fam.per_layer_config:
        if config.get(key) is not None:
            out[key] = [config[key][i] for i in kept]
    if fam.window_layers and config.get(fam.window_layers) is not None:
        out[fam.window_layers] = sum(1 for i in kept if i < config[fam.window_layers])
    return out
