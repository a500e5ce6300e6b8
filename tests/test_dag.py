"""DAG behaviour through real Snakemake: every lane is listed, shared prefixes are one job,
and editing one recipe makes exactly the jobs of its lanes stale."""
import copy
import re

import pytest
import yaml
from conftest import DEMO_RESULTS, planned_outputs, snakemake

from workflow_scripts import REPO

LANES = ["w4a16", "w4a16_postsft", "w8a8_minmax"]
TARGETS = [f"{DEMO_RESULTS}/models/base.gptq_w4a16", f"{DEMO_RESULTS}/models/base.gptq_w4a16.postsft",
           f"{DEMO_RESULTS}/models/base.minmax_w8a8"]


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


@pytest.fixture(scope="module")
def built(workflow_dir):
    """A small lane set built for real in the shared working directory: its Snakemake arguments."""
    cfg = workflow_dir.settings()
    cfg["lanes"] = LANES
    common = workflow_dir.configure("dag.yaml", cfg)
    workflow_dir.snakemake(*common, *TARGETS)
    return common


def test_noop_rerun_plans_nothing(workflow_dir, built):
    out = workflow_dir.snakemake(*built, "-n", *TARGETS)
    assert planned_outputs(out) == [], out


def test_editing_a_recipe_reruns_only_its_lanes(workflow_dir, built):
    # The edit goes to a lanes file of its own: the built directory stays up to date for others.
    lanes = yaml.safe_load((workflow_dir.path / "lanes.yaml").read_text())
    lanes["recipes"]["gptq_w4a16"]["dampening_frac"] = 0.05
    (workflow_dir.path / "dag_edited_lanes.yaml").write_text(yaml.safe_dump(lanes))
    cfg = workflow_dir.settings()
    cfg.update(lanes=LANES, lanes_file=str(workflow_dir.path / "dag_edited_lanes.yaml"))
    out = workflow_dir.snakemake(*workflow_dir.configure("dag_edited.yaml", cfg), "-n", *TARGETS)
    assert sorted(planned_outputs(out)) == [f"{DEMO_RESULTS}/models/base.gptq_w4a16",
                                            f"{DEMO_RESULTS}/models/base.gptq_w4a16.postsft"], out


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
    """The whole demo DAG with every output present and its provenance recorded, without running
    a job: empty outputs, then `--touch --forceall` (which records each job's params)."""
    work = tmp_path_factory.mktemp("touched")
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    (work / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    common = ["--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
              "--configfile", str(work / "cfg.yaml"), "--cores", "1"]
    for out in planned_outputs(snakemake(*common, "-n")):
        path = work / out
        if out.startswith(f"{DEMO_RESULTS}/models/") or out == f"{DEMO_RESULTS}/submissions":
            path.mkdir(parents=True, exist_ok=True)  # directory() outputs
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    snakemake(*common, "--touch", "--forceall")
    assert planned_outputs(snakemake(*common, "-n")) == []
    return work, common, cfg


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
