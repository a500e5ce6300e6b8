"""Every setting reaches code that reads it: a key that does nothing is a bug (a user sets it and
nothing changes), and a key in the wrong rule's params re-runs jobs it cannot change.

Each config schema key is traced through the validated config (defaults filled) into the spec a
rule passes its module (planning/rule_params.py), and must be named by the modules that rule
runs; the few keys used while planning must be named by the planning code. Each recipe key of
planning/steps.py must be read by its step's stage."""
import copy
import re

import pytest
import yaml

from workflow_scripts import REPO
from workflow_scripts.planning.config import load_plan, read_config
from workflow_scripts.planning.rule_params import rule_specs
from workflow_scripts.planning.steps import STEPS

WS = REPO / "workflow_scripts"
# The modules each rule's spec reaches (its shell's `python -m` and what that runs).
RULE_READERS = {
    "prepare_data": ["stages/data.py", "demo/data.py"],
    "base_model": ["stages/base.py", "demo/model.py"],
    "evaluate": ["evaluation/evaluate.py", "evaluation/eval_worker.py", "evaluation/engine.py"],
    "speed_recheck": ["evaluation/evaluate.py", "evaluation/eval_worker.py", "evaluation/engine.py"],
    "target_check": ["shipping/target_check.py"],
    "summary": [str(p.relative_to(WS)) for p in sorted((WS / "scoring").glob("*.py"))],
    "package": ["shipping/package.py", "shipping/target_check.py"],
    "teacher_data": ["stages/teacher.py", "stages/teacher_filters.py", "evaluation/engine.py"],
    "sensitivity": ["stages/sensitivity.py"],  # config `sensitivity:` as its spec's `measure`
}
# Keys used while planning (paths, lanes, resources, the model gate...), not passed to a stage.
PLANNING = ["results", "lanes_file", "lanes", "recipe_overrides", "sweep_overrides", "resources", "slurm",
            "compute.device", "compute.gpus", "serve.python", "target.python", "models_policy", "judge.id",
            "teacher.model", "teacher.local_path", "teacher.documents.file"]
PLANNING_READERS = [*(WS / "planning").glob("*.py"), *(REPO / "rules").glob("*.smk"), REPO / "Snakefile",
                    WS / "stages" / "data_mix.py", WS / "gpu_slot.py"]
# Scoring-only settings: a rerun trigger of the summary (and packaging), of nothing upstream.
SCORING = ["benchmarks.*.weight", "speed.statistic", "package.top_k"]


def named(key, files):
    """Code names `key` as a string, an attribute or a keyword (`"key"`, `.key`, `key=`)."""
    pattern = rf"""["']{re.escape(key)}["']|\.{re.escape(key)}\b|\b{re.escape(key)}="""
    return any(re.search(pattern, p.read_text()) for p in files)


def schema_paths(node, path=()):
    """Every property path of a JSON schema, `*` for a name of the config's choosing."""
    if isinstance(node, dict):
        for key, sub in (node.get("properties") or {}).items():
            yield path + (key,)
            yield from schema_paths(sub, path + (key,))
        sub = node.get("additionalProperties")
        if isinstance(sub, dict):
            yield from schema_paths(sub, path + ("*",))
        if "$ref" in node:
            yield from schema_paths(SCHEMA["definitions"][node["$ref"].split("/")[-1]], path)
        for word in ("oneOf", "anyOf", "allOf"):
            for sub in node.get(word) or []:
                yield from schema_paths(sub, path)


SCHEMA = yaml.safe_load((REPO / "config" / "schemas" / "config.schema.yaml").read_text())


def plans():
    return [load_plan(read_config(REPO / "config" / name), name) for name in ("demo.yaml", "config.yaml")]


def rule_views(plan):
    """{rule: the spec, shaped like the config}: rule_specs plus the two renamed entries."""
    views = dict(rule_specs(plan))
    views["prepare_data"] = {**views["prepare_data"], "compute": {"seed": views["prepare_data"]["seed"]}}
    views["sensitivity"] = {"sensitivity": plan.sensitivity_params("gptq_w4a16")["measure"]}
    return views


def reaches(node, config, path, top=True):
    """Whether a spec shaped like the config carries `path` (every name tried for a `*`): the
    value itself, or the config's section passed whole (then a key left unset reaches it too);
    a section picked key by key must hold the key itself."""
    if not path:
        return True
    if not isinstance(node, dict):
        return False
    part, rest = path[0], path[1:]
    for name in (list(node) if part == "*" else [part]):
        sub_config = config.get(name) if isinstance(config, dict) else None
        if name in node and reaches(node[name], sub_config, rest, False):
            return True
        if name not in node and not top and node == config:
            return True
    return False


def test_every_config_key_reaches_code_that_reads_it():
    problems = []
    views_by_plan = [(p.config, rule_views(p)) for p in plans()]
    for path in schema_paths(SCHEMA):
        dotted, key = ".".join(path), path[-1]
        if key == "*":
            continue
        planning = any(dotted == p or dotted.startswith(p + ".") for p in PLANNING)
        rules = sorted({r for config, views in views_by_plan for r, spec in views.items() if reaches(spec, config, path)})
        if not rules and not planning:
            problems.append(f"{dotted}: reaches no rule's spec and is not a planning key")
            continue
        readers = [WS / f for r in rules for f in RULE_READERS[r]] + (PLANNING_READERS if planning else [])
        if key not in ("threads", "mem_mb", "runtime", "gpu") and not named(key, readers):
            problems.append(f"{dotted}: reaches {rules or 'planning'}, whose code never reads {key!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", SCORING)
def test_scoring_settings_reach_the_report_alone(path):
    """Changing a scoring-only setting changes the summary's spec and no other rule's but
    packaging (its top k), so no evaluation or data preparation is re-run for it."""
    config = read_config(REPO / "config" / "demo.yaml")
    before = rule_specs(load_plan(config, "demo.yaml"))
    changed = copy.deepcopy(config)
    *parents, last = path.split(".")
    node = changed
    for part in parents:
        node = next(iter(node.values())) if part == "*" else node[part]
    node[last] = {"weight": 2.5, "statistic": "min" if node[last] != "min" else "median", "top_k": 7}[last]
    after = rule_specs(load_plan(changed, "demo.yaml"))
    differ = {rule for rule in before if before[rule] != after[rule]}
    assert "summary" in differ and differ <= {"summary", "package"}, differ


def test_every_recipe_key_is_read_by_its_stage():
    """planning/steps.py declares each step's keys; the stage of that step (or the training
    helpers and the data mix the rules use) must read each one."""
    shared = [WS / "stages" / "training.py", WS / "stages" / "chat_data.py", REPO / "rules" / "common.smk",
              WS / "stages" / "data_mix.py", WS / "planning" / "config.py"]
    unread = [f"{step}.{key}" for step, keys in STEPS.items() for key in keys
              if not named(key, [WS / "stages" / f"{step}.py", *shared])]
    assert not unread, "recipe keys their stage never reads: " + ", ".join(unread)


def test_lanes_and_models_schema_keys_are_read():
    code = [*WS.rglob("*.py"), *(REPO / "rules").glob("*.smk")]
    for name in ("lanes.schema.yaml", "models.schema.yaml"):
        schema = yaml.safe_load((REPO / "config" / "schemas" / name).read_text())
        for path in schema_paths(schema):
            if path[-1] != "*":
                assert named(path[-1], code), f"{name}: {'.'.join(path)} is read by no code"
