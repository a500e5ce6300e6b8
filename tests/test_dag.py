"""DAG behaviour through real Snakemake: every lane is listed, shared prefixes are one job,
and editing one recipe or setting makes exactly the jobs it changes stale (on the demo's whole
DAG, its outputs touched rather than built; test_e2e reruns a real build and finds nothing to do)."""
import copy
import re

import pytest
import yaml
from conftest import DEMO_RESULTS, planned_outputs, snakemake, touch_workflow

from workflow_scripts import REPO


def test_dry_run_lists_every_lane(demo_plan):
    from workflow_scripts.planning.config import load_plan

    # Every lane of the demo: the hand-written ones and those its sweeps generate.
    lanes = load_plan(yaml.safe_load((REPO / "config" / "demo.yaml").read_text()), "demo.yaml").lanes
    planned = planned_outputs(demo_plan)
    for lane in ["base", *lanes]:
        assert f"{DEMO_RESULTS}/metrics/{lane}.json" in planned, lane
    # Shared prefixes are built once: one job per distinct chain prefix.
    prefixes = {".".join(["base", *chain[: i + 1]]) for chain in lanes.values() for i in range(len(chain))}
    model_jobs = [o for o in planned if o.startswith(f"{DEMO_RESULTS}/models/")]
    assert sorted(model_jobs) == sorted(f"{DEMO_RESULTS}/models/{p}" for p in prefixes | {"base"})


def test_every_demo_job_yields_to_the_timed_sections(demo_plan):
    """A timed section must have the machine to itself (docs/running.md): every job of the demo
    runs under gpu_slot, whose CPU lock makes it wait for one, and the jobs that time generation
    (evaluate, the base's speed_recheck) and only they run with --timed."""
    commands, rule = [], None
    for line in demo_plan.splitlines():
        if m := re.match(r"(?:local)?rule (\w+):", line):
            rule = m.group(1)
        elif line.startswith("Shell command: ") and rule != "all":
            commands.append((rule, line))
    jobs = [r for r in re.findall(r"^(?:local)?rule (\w+):", demo_plan, re.M) if r != "all"]
    assert len(commands) == len(jobs) > 20
    for rule, cmd in commands:
        assert " -m workflow_scripts.gpu_slot " in cmd, (rule, cmd)
        assert (" --timed -- " in cmd) == (rule in ("evaluate", "speed_recheck")), (rule, cmd)
    assert {r for r, _ in commands} >= {"evaluate", "speed_recheck", "quantize", "target_check", "package"}


@pytest.fixture(scope="module")
def touched_workdir(tmp_path_factory):
    """The whole demo DAG touched as built (conftest.touch_workflow)."""
    work = tmp_path_factory.mktemp("touched")
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    return work, touch_workflow(work, cfg), cfg


@pytest.mark.parametrize("edit, rules", [
    # Scoring-only settings: the summary is recomputed and packaging follows it; nothing is re-evaluated.
    (lambda c: c["benchmarks"]["demo_mcqa"].update(weight=2.0), {"summary", "package"}),
    (lambda c: c["speed"].update(statistic="min"), {"summary", "package"}),
    (lambda c: c["package"].update(top_k=2), {"summary", "package"}),
    # A setting that changes generations re-evaluates every lane (and what follows), not the data.
    (lambda c: c["benchmarks"]["demo_mcqa"].update(max_new_tokens=17),
     {"evaluate", "speed_recheck", "summary", "package"}),
], ids=["weight", "statistic", "top_k", "max_new_tokens"])
@pytest.mark.e2e  # Snakemake runs on a touched copy of the whole demo DAG
def test_a_setting_replans_only_the_rules_it_changes(touched_workdir, edit, rules):
    work, common, cfg = touched_workdir
    changed = copy.deepcopy(cfg)
    edit(changed)
    (work / "cfg.yaml").write_text(yaml.safe_dump(changed))
    try:
        out = snakemake(*common, "-n")
    finally:
        (work / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    planned = set(re.findall(r"^rule (\w+):", out, re.M)) - {"all"}
    assert planned == rules, out[-3000:]


@pytest.mark.e2e  # Snakemake runs on a touched copy of the whole demo DAG
def test_editing_a_recipe_rebuilds_exactly_the_models_made_with_it(touched_workdir):
    """gptq_w4a16's dampening_frac edited: every model whose chain quantizes with it, or keeps
    layers by its sensitivity, is rebuilt with the models that follow it in its chain; no other."""
    from workflow_scripts.planning.config import load_plan

    work, common, cfg = touched_workdir
    lanes = yaml.safe_load((REPO / cfg["lanes_file"]).read_text())
    lanes["recipes"]["gptq_w4a16"]["dampening_frac"] = 0.05
    (work / "edited_lanes.yaml").write_text(yaml.safe_dump(lanes))
    edited = {**cfg, "lanes_file": str(work / "edited_lanes.yaml")}
    plan = load_plan(edited, "cfg.yaml")
    expected = set()
    for chain in plan.lanes.values():
        made_with = [i for i, r in enumerate(chain) if "gptq_w4a16" in (r, plan.sensitivity_recipe(r))]
        if made_with:
            expected |= {".".join(["base", *chain[: j + 1]]) for j in range(made_with[0], len(chain))}
    # The demo quantizes with it after other steps, follows it with post-SFT, keeps layers by it.
    assert {"base.gptq_w4a16", "base.gptq_w4a16.postsft", "base.prune28.kd.gptq_w4a16",
            "base.gptq_w4a16_mixed"} <= expected
    (work / "cfg.yaml").write_text(yaml.safe_dump(edited))
    try:
        out = snakemake(*common, "-n")
    finally:
        (work / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    planned = {o.removeprefix(f"{DEMO_RESULTS}/models/") for o in planned_outputs(out)
               if o.startswith(f"{DEMO_RESULTS}/models/")}
    assert planned == expected, out[-3000:]
