"""Sweeps as data: a base lane and a parameter grid in lanes.yaml, expanded at parse time into
ordinary named lanes, each with a generated recipe, validated like hand-written ones.

    sweeps:
      w4a16_mixed:                          # the sweep's name (the summary's search section)
        lane: w4a16_mixed                   # the base lane
        recipe: gptq_w4a16_mixed            # the step of its chain the grid varies (default: last)
        grid:                               # dotted keys of that recipe -> values; every combination
          keep_unquantized.most_sensitive: [2, 4, 8]
          dampening_frac: [0.01, 0.1]

gives lanes w4a16_mixed__k2_damp0p01, ... whose chains use recipes gptq_w4a16_mixed__k2_damp0p01, ...
A grid may only vary keys the recipe already sets (a typo must not become a silent no-op).
A config's `sweep_overrides: {<sweep>: {grid: ...}}` replaces a grid (the demo runs a smaller one).
"""
from __future__ import annotations

import copy
import itertools
import re

from workflow_scripts.planning.schema import ConfigError

SEP = "__"  # between the base name and the grid point, in generated lane and recipe names
# Short labels of common knobs in generated names; any other key is named by its last segment.
LABELS = {"keep_unquantized.most_sensitive": "k", "keep_unquantized": "keep", "dampening_frac": "damp",
          "num_calibration_samples": "n", "group_size": "g", "max_seq_length": "len",
          "learning_rate": "lr", "max_steps": "steps"}


def slug(value) -> str:
    """A grid value in name characters: 0.05 -> '0p05', [0, 3] -> '0_3', 'FP8' -> 'fp8'."""
    if isinstance(value, list):
        return "_".join(slug(v) for v in value)
    text = str(value).lower().replace(".", "p").replace("-", "m")
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")


def point_name(combo: dict) -> str:
    """{'keep_unquantized.most_sensitive': 2, 'dampening_frac': 0.1} -> 'k2_damp0p1'."""
    return "_".join(LABELS.get(k, k.split(".")[-1]) + slug(v) for k, v in combo.items())


def get_path(recipe: dict, key: str):
    """The value at a dotted key, or KeyError when the recipe does not set it."""
    node = recipe
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def set_path(recipe: dict, key: str, value):
    *parents, last = key.split(".")
    node = recipe
    for part in parents:
        node = node[part]
    node[last] = copy.deepcopy(value)


def check_grid(where, key, grid, recipe_name, recipe):

    if not grid:
        raise ConfigError(where, key, "expected at least one parameter with a list of values (empty grid)")
    for knob, values in grid.items():
        try:
            get_path(recipe, knob)
        except KeyError:
            known = sorted(k for k in recipe if k != "step")
            raise ConfigError(where, f"{key}.{knob}", f"unknown key; expected a parameter that recipe "
                              f"{recipe_name!r} sets (one of {known})") from None
        if not isinstance(values, list) or not values:
            raise ConfigError(where, f"{key}.{knob}", f"expected a non-empty list of values, got {values!r}")


def expand_sweeps(sweeps, overrides, recipes, lanes, lanes_file, config_file, check_recipe):
    """Add each sweep's lanes to `lanes` and their recipes to `recipes` (in place), each
    recipe checked by `check_recipe`. Returns {sweep: {"lane", "recipe", "knobs": {lane:
    {knob: value}}}} for the summary, the base lane included (at its own values)."""

    for name in overrides:
        if name not in sweeps:
            raise ConfigError(config_file, f"sweep_overrides.{name}",
                              f"unknown sweep; expected one of {sorted(sweeps)}")
    declared = dict(lanes)  # a sweep's base is a hand-written lane, not another sweep's
    resolved = {}
    for name, sweep in sweeps.items():
        lane = sweep["lane"]
        if lane not in declared:
            raise ConfigError(lanes_file, f"sweeps.{name}.lane", f"unknown lane {lane!r}; expected one of lanes:")
        chain = declared[lane]
        base = sweep.get("recipe", chain[-1])
        if base not in chain:
            raise ConfigError(lanes_file, f"sweeps.{name}.recipe", f"expected a recipe of lane {lane!r} {chain}, "
                              f"got {base!r}")
        where, key = (config_file, f"sweep_overrides.{name}.grid") if name in overrides \
            else (lanes_file, f"sweeps.{name}.grid")
        grid = overrides[name]["grid"] if name in overrides else sweep["grid"]
        check_grid(where, key, grid, base, recipes[base])

        knobs = {lane: {k: get_path(recipes[base], k) for k in grid}}
        for values in itertools.product(*grid.values()):
            combo = dict(zip(grid, values))
            point = point_name(combo)
            new_recipe, new_lane = f"{base}{SEP}{point}", f"{lane}{SEP}{point}"
            if new_lane in lanes or new_recipe in recipes:
                raise ConfigError(where, key, f"grid point {point!r} makes lane {new_lane!r} / recipe "
                                  f"{new_recipe!r}, which already exists")
            recipe = copy.deepcopy(recipes[base])
            keep = recipe.get("keep_unquantized")
            if isinstance(keep, dict):
                keep.setdefault("sensitivity", base)  # one measurement for the whole sweep
            for k, v in combo.items():
                set_path(recipe, k, v)
            check_recipe(lanes_file, new_recipe, recipe)
            recipes[new_recipe] = recipe
            lanes[new_lane] = [new_recipe if step == base else step for step in chain]
            knobs[new_lane] = combo
        resolved[name] = {"lane": lane, "recipe": base, "knobs": knobs}
    return resolved
