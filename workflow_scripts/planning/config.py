"""Load, validate and cross-check the workflow config and the lanes file.

Used by rules/common.smk at parse time (so bad input fails before any job runs) and by the
tests. Every problem becomes one ConfigError line: the file, the key, what was expected.

    python -m workflow_scripts.planning.config config/demo.yaml      # check a config, list its lanes
"""
from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from workflow_scripts import REPO
from workflow_scripts.planning.families import UnknownFamily, family, model_type_of
from workflow_scripts.planning.models_policy import check_models, load_registry
from workflow_scripts.planning.schema import ConfigError, validate
from workflow_scripts.planning.steps import recipe_errors
from workflow_scripts.planning.sweeps import expand_sweeps
from workflow_scripts.stages import data_mix

BASE = "base"  # the chain of no steps, and the reserved lane name of the base model

# Prepared files a quantize recipe's calibration_mix may draw from (results/data/<file>).
CALIB_SOURCES = {"calib": "calib.jsonl", "sft_train": "sft_train.jsonl", "corpus": "corpus.txt"}


@dataclass
class Plan:
    """The resolved config: recipes with overrides applied, and the selected lanes."""

    config: dict
    recipes: dict  # name -> {"step": ..., params...}
    lanes: dict  # lane name -> list of recipe names (selected lanes only)
    all_lanes: dict  # every lane in the lanes file
    # sweep name -> {"lane", "recipe", "knobs": {lane: {knob: value}}} (workflow_scripts.planning.sweeps)
    sweeps: dict = field(default_factory=dict)

    def recipes_of(self, step):
        return sorted(n for n, r in self.recipes.items() if r["step"] == step)

    def recipe_params(self, name):
        return {k: v for k, v in self.recipes[name].items() if k != "step"}

    def sensitivity_recipe(self, name):
        """The quantize recipe whose per-layer sensitivity `name` keeps layers by, or None."""
        keep = self.recipes[name].get("keep_unquantized")
        return keep.get("sensitivity", name) if isinstance(keep, dict) else None

    def sensitivity_params(self, name):
        """What the sensitivity of recipe `name` is measured with: the recipe without its
        keep_unquantized (each layer is quantized alone) and config `sensitivity:`."""
        params = {k: v for k, v in self.recipe_params(name).items() if k != "keep_unquantized"}
        return {"recipe": params, "measure": self.config.get("sensitivity") or {}}

    def calib_files(self, name):
        """The prepared files a recipe calibrates on (calib.jsonl unless it has calibration_mix)."""
        mix = self.recipes[name].get("calibration_mix") or {"calib": 1}
        return [CALIB_SOURCES[source] for source in sorted(mix)]


def chain_dir(chain) -> str:
    """['sft', 'gptq_w4a16'] -> 'base.sft.gptq_w4a16' (a folder under results/models)."""
    return ".".join([BASE, *chain])


def split_chain(name: str) -> list:
    """'base.sft.gptq_w4a16' -> ['sft', 'gptq_w4a16']."""
    parts = name.split(".")
    if parts[0] != BASE:
        raise ValueError(f"model name {name!r} does not start with {BASE!r}")
    return parts[1:]


def kd_teacher(parent: str) -> str:
    """The teacher of a kd step applied to `parent`: the model before the prune step that
    made `parent` (base.prune28 -> base)."""
    chain = split_chain(parent)
    return chain_dir(chain[:-1])


def _check_recipe(lanes_file, name, recipe):
    step = recipe["step"]
    errors = recipe_errors(step, {k: v for k, v in recipe.items() if k != "step"})
    if errors:
        key, why = errors[0]
        raise ConfigError(lanes_file, f"recipes.{name}.{key}", why)
    if (why := data_mix.spec_error(step, recipe)):
        raise ConfigError(lanes_file, f"recipes.{name}.data", why)
    if step == "prune" and recipe["keep_layers"] < 2:
        raise ConfigError(lanes_file, f"recipes.{name}.keep_layers",
                          f"expected an integer >= 2 (first and last layers are kept), got {recipe['keep_layers']!r}")
    if recipe.get("keep_unquantized") is not None:
        _check_keep_unquantized(lanes_file, name, recipe["keep_unquantized"])
    if recipe.get("calibration_mix") is not None:
        _check_calibration_mix(lanes_file, name, recipe["calibration_mix"])


def _check_keep_unquantized(lanes_file, name, keep):
    """A list of decoder layer indices, or {most_sensitive: K[, sensitivity: recipe]}."""
    key = f"recipes.{name}.keep_unquantized"
    if isinstance(keep, list):
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in keep) \
                or len(set(keep)) != len(keep):
            raise ConfigError(lanes_file, key, f"expected distinct layer indices >= 0, got {keep!r}")
        return
    if not isinstance(keep, dict) or set(keep) - {"most_sensitive", "sensitivity"} \
            or not isinstance(keep.get("most_sensitive"), int) or keep["most_sensitive"] < 1:
        raise ConfigError(lanes_file, key, "expected a list of layer indices or "
                          f"{{most_sensitive: <integer >= 1>, sensitivity: <quantize recipe>}}, got {keep!r}")


def _check_calibration_mix(lanes_file, name, mix):
    if not isinstance(mix, dict) or not mix or set(mix) - set(CALIB_SOURCES) \
            or not all(isinstance(w, (int, float)) and w > 0 for w in mix.values()):
        raise ConfigError(lanes_file, f"recipes.{name}.calibration_mix",
                          f"expected {{source: weight > 0}} with sources from {sorted(CALIB_SOURCES)}, got {mix!r}")


def _check_kept_layers(lanes_file, lane, i, name, recipe, recipes, layers):
    """Kept layers must exist in the model the step quantizes, and leave some to quantize."""
    keep = recipe.get("keep_unquantized")
    if isinstance(keep, dict):
        by = keep.get("sensitivity", name)
        if recipes.get(by, {}).get("step") != "quantize":
            raise ConfigError(lanes_file, f"recipes.{name}.keep_unquantized.sensitivity",
                              f"expected a quantize recipe, got {by!r}")
    if not keep or layers is None:
        return
    if isinstance(keep, list) and max(keep) >= layers:
        raise ConfigError(lanes_file, f"lanes.{lane}[{i}]", f"recipe {name!r} keeps layer {max(keep)}, "
                          f"but its parent has {layers} layers (0..{layers - 1})")
    if isinstance(keep, dict) and keep["most_sensitive"] >= layers:
        raise ConfigError(lanes_file, f"lanes.{lane}[{i}]", f"recipe {name!r} keeps the {keep['most_sensitive']} "
                          f"most sensitive layers, expected fewer than the {layers} its parent has")


def _check_chain(lanes_file, lane, chain, recipes, base_layers):
    layers = base_layers
    for i, name in enumerate(chain):
        if name not in recipes:
            raise ConfigError(lanes_file, f"lanes.{lane}[{i}]",
                              f"unknown recipe {name!r}; expected one of {sorted(recipes)}")
        step = recipes[name]["step"]
        if step == "prune":
            keep = recipes[name]["keep_layers"]
            if layers is not None and keep >= layers:
                raise ConfigError(lanes_file, f"lanes.{lane}[{i}]",
                                  f"prune recipe {name!r} keeps {keep} layers, expected fewer than "
                                  f"the {layers} its parent has")
            layers = keep
        if step == "quantize":
            _check_kept_layers(lanes_file, lane, i, name, recipes[name], recipes, layers)
        if step == "kd" and (i == 0 or recipes[chain[i - 1]]["step"] != "prune"):
            raise ConfigError(lanes_file, f"lanes.{lane}[{i}]",
                              f"kd recipe {name!r} must follow a prune step (its teacher is the unpruned parent)")
        if step == "post_sft" and not any(recipes[c]["step"] == "quantize" for c in chain[:i]):
            raise ConfigError(lanes_file, f"lanes.{lane}[{i}]",
                              f"post_sft recipe {name!r} must follow a quantize step")
        if step in ("sft", "prune", "kd") and any(recipes[c]["step"] == "quantize" for c in chain[:i]):
            raise ConfigError(lanes_file, f"lanes.{lane}[{i}]",
                              f"{step} recipe {name!r} cannot follow a quantize step "
                              "(only post_sft trains a quantized model)")
    if len(set(chain)) != len(chain):
        raise ConfigError(lanes_file, f"lanes.{lane}", "a recipe appears twice in the chain")


# Layers of the real base model, for the prune cross-check when it is not built here.
KNOWN_BASE_LAYERS = {"LGAI-EXAONE/EXAONE-4.0-1.2B": 30}


def base_layers(config):
    base = config["base"]
    if base["source"] == "demo":
        return base["demo"]["num_hidden_layers"]
    return KNOWN_BASE_LAYERS.get(base.get("hub_id"))


def base_model_type(config):
    """(model_type, the config key it comes from) of the base model, or (None, None) when only the
    first stage can tell (a hub model the registry gives no model_type)."""
    base = config["base"]
    if base["source"] == "demo":
        return base["demo"]["model_type"], "base.demo.model_type"
    local = base.get("local_path")
    if local and Path(local).is_dir():
        return model_type_of(local), "base.local_path"
    entry = load_registry(config["models_policy"]["registry"]).get(base.get("hub_id")) or {}
    return entry.get("model_type"), "base.hub_id"


def _check_family(config_file, config):
    """The base is of a supported family, and the target can ship it."""
    model_type, key = base_model_type(config)
    if model_type is None:
        return
    try:
        fam = family(model_type)
    except UnknownFamily as e:
        raise ConfigError(config_file, key, str(e)) from None
    if config["target"]["name"] == "contest" and not fam.contest:
        raise ConfigError(config_file, "target.name", f"the contest target takes EXAONE-4.0 models only (its "
                          f"rules fix the base), and the base is {model_type}: use target.name serve, your own "
                          f"vLLM (docs/target.md)")


def _check_prompt_template(config_file, name, bench):
    """mcqa/longqa prompts are built from a template of prompts.py; mtbench sends its turns as
    they are, so a template there would do nothing."""
    from workflow_scripts.evaluation.prompts import TEMPLATES

    template, key = bench.get("prompt_template"), f"benchmarks.{name}.prompt_template"
    if bench["kind"] == "mtbench":
        if template is not None:
            raise ConfigError(config_file, key, "an mtbench benchmark sends its turns unchanged: remove the key")
        return
    kinds = sorted(t for t in TEMPLATES if t.startswith(bench["kind"]))
    if template not in kinds:
        raise ConfigError(config_file, key, f"expected one of {kinds} for a {bench['kind']} benchmark, got {template!r}")


def _check_benchmarks(config_file, config):
    data = config["data"]
    if data["sft"]["dataset"] == "demo" and not data.get("generate_demo"):
        raise ConfigError(config_file, "data.sft.dataset",
                          "'demo' needs data.generate_demo: true (or a hub id / local_file)")
    sft_local = data["sft"].get("local_file")
    if sft_local and not data.get("generate_demo") and not Path(sft_local).exists():
        raise ConfigError(config_file, "data.sft.local_file", f"file {sft_local} does not exist")
    for name, bench in config["benchmarks"].items():
        if not bench.get("dataset") and not bench.get("local_file"):
            raise ConfigError(config_file, f"benchmarks.{name}", "a dataset or local_file is required")
        if bench["dataset"] == "demo" and not data.get("generate_demo"):
            raise ConfigError(config_file, f"benchmarks.{name}.dataset",
                              "'demo' needs data.generate_demo: true (or a hub id / local_file)")
        local = bench.get("local_file")
        if local and not data.get("generate_demo") and not Path(local).exists():
            raise ConfigError(config_file, f"benchmarks.{name}.local_file", f"file {local} does not exist")
        if bench["kind"] == "longqa" and "context_tokens" not in bench:
            raise ConfigError(config_file, f"benchmarks.{name}.context_tokens", "required for a longqa benchmark")
        _check_prompt_template(config_file, name, bench)
    base = config["base"]
    if base["source"] == "demo" and "demo" not in base:
        raise ConfigError(config_file, "base.demo", "required when base.source is 'demo'")
    if base["source"] == "hub" and not (base.get("hub_id") or base.get("local_path")):
        raise ConfigError(config_file, "base.hub_id", "a hub id or base.local_path is required")


def _check_speed(config_file, config):
    """speed.score_uses paired holds two engines at once (the lane's and the base's)."""
    share = config["serve"].get("gpu_memory_utilization")
    if config["speed"]["score_uses"] == "paired" and share is not None and share > 0.45:
        raise ConfigError(config_file, "serve.gpu_memory_utilization",
                          f"at most 0.45 with speed.score_uses 'paired' (two engines share the device), got {share}")


def _check_teacher(config_file, config, recipes, selected):
    """A lane training on teacher data needs a `teacher:` section with at least one prompt source."""
    users = [r for chain in selected.values() for r in chain if data_mix.uses_teacher(recipes[r])]
    teacher = config.get("teacher")
    if users and not teacher:
        raise ConfigError(config_file, "teacher", f"required: recipe {users[0]!r} trains on teacher data")
    if not teacher:
        return
    from workflow_scripts.evaluation.prompts import TEACHER_TEMPLATES

    docs = teacher.get("documents") or {}
    if (teacher.get("sft_prompts") or {}).get("max_samples") == 0 and not docs.get("file"):
        raise ConfigError(config_file, "teacher", "no prompt source: sft_prompts.max_samples is 0 and no documents.file")
    if docs.get("template", "qa_from_passage_ko") not in TEACHER_TEMPLATES:
        raise ConfigError(config_file, "teacher.documents.template",
                          f"expected one of {sorted(TEACHER_TEMPLATES)}, got {docs['template']!r}")
    # A file under results/ may be written by an earlier rule (the demo uses results/data/corpus.txt).
    file = docs.get("file")
    if file and not Path(file).exists() and not Path(file).is_relative_to(config["results"]):
        raise ConfigError(config_file, "teacher.documents.file", f"file {file} does not exist")


def read_config(path) -> dict:
    """A config file as the rules see it: schema-validated, with the schema's defaults filled
    (target: and models_policy: live there). The cross-checks are load_plan's."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(path, "(yaml)", f"not readable YAML: {str(e).splitlines()[0]}") from None
    validate(doc, "config.schema.yaml", path)
    return doc


def load_plan(config: dict, config_file="config") -> Plan:
    """Validate `config` (a dict, as Snakemake loaded it) and its lanes file; resolve lanes."""
    config = copy.deepcopy(config)
    validate(config, "config.schema.yaml", config_file)
    _check_benchmarks(config_file, config)
    _check_speed(config_file, config)

    lanes_file = Path(config["lanes_file"])
    if not lanes_file.is_absolute():
        lanes_file = REPO / lanes_file
    try:
        doc = yaml.safe_load(lanes_file.read_text())
    except FileNotFoundError:
        raise ConfigError(config_file, "lanes_file", f"file {lanes_file} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(lanes_file, "(yaml)", f"not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise ConfigError(lanes_file, "(top level)", "expected a mapping with recipes: and lanes:")
    validate(doc, "lanes.schema.yaml", lanes_file)

    recipes = copy.deepcopy(doc["recipes"])
    for name, override in (config.get("recipe_overrides") or {}).items():
        if name not in recipes:
            raise ConfigError(config_file, f"recipe_overrides.{name}",
                              f"unknown recipe; expected one of {sorted(recipes)}")
        if "step" in override:
            raise ConfigError(config_file, f"recipe_overrides.{name}.step", "a step kind cannot be overridden")
        recipes[name].update(override)
    for name, recipe in recipes.items():
        _check_recipe(lanes_file, name, recipe)

    all_lanes = dict(doc["lanes"])
    layers = base_layers(config)
    for lane, chain in all_lanes.items():
        _check_chain(lanes_file, lane, chain, recipes, layers)

    sweeps = expand_sweeps(doc.get("sweeps") or {}, config.get("sweep_overrides") or {},
                           recipes, all_lanes, lanes_file, config_file, _check_recipe)
    for lane, chain in all_lanes.items():
        if lane not in doc["lanes"]:  # the generated lanes, checked like the others
            _check_chain(lanes_file, lane, chain, recipes, layers)

    if config["lanes"] == "all":
        selected = dict(all_lanes)
    else:
        unknown = [l for l in config["lanes"] if l not in all_lanes]
        if unknown:
            raise ConfigError(config_file, "lanes", f"unknown lane {unknown[0]!r}; expected names from {lanes_file}")
        selected = {l: all_lanes[l] for l in config["lanes"]}
    _check_teacher(config_file, config, recipes, selected)

    check_models(config, config_file)
    _check_family(config_file, config)
    return Plan(config=config, recipes=recipes, lanes=selected, all_lanes=all_lanes, sweeps=sweeps)


def device_error(config):
    """Why this interpreter's torch cannot run the stages on `compute.device`, or None. A CUDA
    run with a CPU build of torch would train and quantize on the CPU while holding GPUs."""
    if config["compute"]["device"] != "cuda":
        return None
    import torch

    if torch.version.cuda is None:
        return (f"compute.device is cuda, but the compress env's torch {torch.__version__} is a CPU build; "
                "run scripts/setup_envs.sh on the CUDA host (it installs envs/torch-cuda.txt)")
    if not torch.cuda.is_available():
        return f"compute.device is cuda, but torch {torch.__version__} sees no CUDA device"
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configfile")
    args = ap.parse_args(argv)
    try:
        plan = load_plan(read_config(args.configfile), args.configfile)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 1
    for lane, chain in plan.lanes.items():
        print(f"{lane:22s} {Path(plan.config['results']) / 'models' / chain_dir(chain)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
