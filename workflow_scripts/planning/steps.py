"""The keys of each step kind's recipe, declared once: type, default and a line of help. Read by
the config check at parse time (planning/config.py: a misspelt or mistyped key fails before any
job) and by each stage for its own --recipe (`load_recipe`: the recipe with its defaults filled),
so the two never disagree and no stage keeps a default of its own.

    python -m workflow_scripts.planning.steps            # print every step's keys (docs/extending.md)
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass

REQUIRED = object()  # a key without a default
NUMBER = (int, float)


@dataclass(frozen=True)
class Key:
    types: tuple  # accepted Python types (bool is never an int or a number here)
    default: object = REQUIRED
    help: str = ""
    choices: tuple = ()

    def error(self, value):
        """What was expected of `value`, or None when it fits."""
        if isinstance(value, bool) and bool not in self.types or not isinstance(value, self.types):
            if value is None and self.default is None:
                return None
            names = "/".join(t.__name__ for t in self.types)
            return f"expected {names}, got {value!r}"
        if self.choices and value not in self.choices:
            return f"expected one of {list(self.choices)}, got {value!r}"
        return None


# Keys every training step (sft, post_sft, kd) reads through workflow_scripts/stages/training.py.
_TRAIN = {
    "learning_rate": Key(NUMBER, help="peak learning rate"),
    "max_steps": Key((int,), help="optimizer steps (wins over epochs when > 0)"),
    "epochs": Key(NUMBER, 1, "passes over the training set when max_steps is 0"),
    "batch_size": Key((int,), 8, "conversations per device step (also the validation batch)"),
    "grad_accum": Key((int,), 1, "gradient accumulation steps"),
    "max_seq_length": Key((int,), 2048, "tokens per conversation (longer ones are truncated)"),
    "gradient_checkpointing": Key((bool,), None, "recompute activations in the backward pass "
                                  "(null: on for kd on CUDA, which holds two models; else off)"),
    "data": Key((str, list), "sft", "training conversations: a source or [{source, weight}] "
                "(workflow_scripts/stages/data_mix.py)"),
}

STEPS = {
    "quantize": {
        "scheme": Key((str,), help="compressed-tensors preset", choices=("W4A16", "W8A16", "W8A8", "FP8", "FP8_DYNAMIC")),
        "method": Key((str,), "gptq", "gptq (GPTQModifier) or minmax (QuantizationModifier)",
                      choices=("gptq", "minmax")),
        "group_size": Key((int,), None, "weight group size of a group scheme (null: the preset's, 128)"),
        "dampening_frac": Key(NUMBER, 0.01, "GPTQ Hessian dampening"),
        "num_calibration_samples": Key((int,), 256, "calibration conversations"),
        "max_seq_length": Key((int,), 1024, "tokens per calibration conversation"),
        "keep_unquantized": Key((list, dict), None, "decoder layers left in full precision: indices or "
                                "{most_sensitive: K, sensitivity: <quantize recipe>}"),
        "calibration_mix": Key((dict,), None, "{source: weight} of calib / sft_train / corpus (null: calib)"),
    },
    "sft": {
        "lora_r": Key((int,), help="LoRA rank"),
        "lora_alpha": Key(NUMBER, help="LoRA alpha"),
        "lora_dropout": Key(NUMBER, 0.0, "LoRA dropout"),
        "target_modules": Key((list,), None, "module names LoRA adapts (null: the family's projections, "
                              "workflow_scripts/planning/families.py)"),
        **_TRAIN,
    },
    "post_sft": dict(_TRAIN),  # RMSNorm weights only, on the quantized checkpoint
    "prune": {
        "keep_layers": Key((int,), help="decoder layers kept (first and last always)"),
        "metric": Key((str,), "block_influence", "layer importance", choices=("block_influence", "angular")),
        "num_calibration_samples": Key((int,), 128, "conversations the metric is measured on"),
        "max_seq_length": Key((int,), 1024, "tokens per calibration conversation"),
        "batch_size": Key((int,), 8, "conversations per forward pass"),
    },
    "kd": {
        "temperature": Key(NUMBER, help="distillation temperature (> 0)"),
        "kl_weight": Key(NUMBER, help="weight of the teacher KL"),
        "ce_weight": Key(NUMBER, help="weight of the label cross-entropy"),
        **_TRAIN,
    },
}
# Added to every recipe by the rule (rules/common.smk recipe_json), never written in a recipe.
RULE_KEYS = ("seed",)


def recipe_errors(step, recipe):
    """[(key, what was expected)] of a recipe (without its `step`), in key order; [] when valid."""
    keys = STEPS[step]
    errors = [(k, f"required for a {step} step") for k, spec in keys.items()
              if spec.default is REQUIRED and k not in recipe]
    for k, value in recipe.items():
        if k not in keys:
            errors.append((k, f"unknown key for a {step} step; expected one of {sorted(keys)}"))
        elif (why := keys[k].error(value)):
            errors.append((k, why))
    return errors


def with_defaults(step, recipe) -> dict:
    """The recipe with every key of its step: the defaults of the keys it does not set."""
    return {**{k: spec.default for k, spec in STEPS[step].items() if spec.default is not REQUIRED}, **recipe}


def load_recipe(text, step, what="recipe") -> dict:
    """A stage's --recipe: parsed, checked against its step's keys (the rule's `seed` allowed) and
    with defaults filled. Raises StageError in one line."""
    from workflow_scripts.common import StageError, parse_recipe

    recipe = parse_recipe(text, [], step, what)
    errors = recipe_errors(step, {k: v for k, v in recipe.items() if k not in RULE_KEYS})
    if errors:
        key, why = errors[0]
        raise StageError(f"{step} {what}: {key}: {why}")
    return with_defaults(step, recipe)


def main():
    for step, keys in STEPS.items():
        print(f"{step}:")
        for k, spec in keys.items():
            default = "required" if spec.default is REQUIRED else f"default {json.dumps(spec.default)}"
            print(f"  {k:24s} {'/'.join(t.__name__ for t in spec.types):10s} {default:28s} {spec.help}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
