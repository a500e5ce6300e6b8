"""DAG behaviour through real Snakemake: every lane is listed, shared prefixes are one job,
and editing one recipe makes exactly the jobs of its lanes stale."""
import copy
import re
import subprocess
import sys

import pytest
import yaml
from conftest import DEMO_RESULTS

from workflow_scripts import REPO


def snakemake(*args, cwd=REPO, check=True):
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc.stdout + proc.stderr


def planned_outputs(dry_run_text):
    """The output paths of the jobs a dry-run lists."""
    outs = []
    for line in dry_run_text.splitlines():
        m = re.match(r"\s+output: (.*)", line)
        if m:
            outs += [o.strip() for o in m.group(1).split(",")]
    return outs


def test_dry_run_lists_every_lane():
    from workflow_scripts.planning.config import load_plan

    # Every lane of the demo: the hand-written ones and those its sweeps generate.
    lanes = load_plan(yaml.safe_load((REPO / "config" / "demo.yaml").read_text()), "demo.yaml").lanes
    out = snakemake("-n", "--forceall", "--profile", "profiles/demo")  # whatever results/ holds
    planned = planned_outputs(out)
    for lane in ["base", *lanes]:
        assert f"{DEMO_RESULTS}/metrics/{lane}.json" in planned, lane
    # Shared prefixes are built once: one job per distinct chain prefix.
    prefixes = {".".join(["base", *chain[: i + 1]]) for chain in lanes.values() for i in range(len(chain))}
    model_jobs = [o for o in planned if o.startswith(f"{DEMO_RESULTS}/models/")]
    assert sorted(model_jobs) == sorted(f"{DEMO_RESULTS}/models/{p}" for p in prefixes | {"base"})


@pytest.fixture(scope="module")
def built_workdir(tmp_path_factory):
    """A small lane set built for real (tiny base, a few steps) in its own working directory."""
    work = tmp_path_factory.mktemp("dag")
    lanes = yaml.safe_load((REPO / "config" / "lanes.yaml").read_text())
    (work / "lanes.yaml").write_text(yaml.safe_dump(lanes))
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["lanes_file"] = str(work / "lanes.yaml")
    cfg["lanes"] = ["w4a16", "w4a16_postsft", "w8a8_minmax"]
    cfg["base"]["demo"].update(max_steps=5)
    cfg["recipe_overrides"]["postsft"].update(max_steps=2)
    (work / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    targets = [f"{DEMO_RESULTS}/models/base.gptq_w4a16", f"{DEMO_RESULTS}/models/base.gptq_w4a16.postsft",
               f"{DEMO_RESULTS}/models/base.minmax_w8a8"]
    common = ["--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
              "--configfile", str(work / "cfg.yaml"), "--cores", "2"]
    snakemake(*common, *targets)
    return work, common, targets


def test_noop_rerun_plans_nothing(built_workdir):
    work, common, targets = built_workdir
    out = snakemake(*common, "-n", *targets)
    assert planned_outputs(out) == [], out


def test_editing_a_recipe_reruns_only_its_lanes(built_workdir):
    work, common, targets = built_workdir
    lanes = yaml.safe_load((work / "lanes.yaml").read_text())
    lanes["recipes"]["gptq_w4a16"]["dampening_frac"] = 0.05
    (work / "lanes.yaml").write_text(yaml.safe_dump(lanes))
    out = snakemake(*common, "-n", *targets)
    assert sorted(planned_outputs(out)) == [f"{DEMO_RESULTS}/models/base.gptq_w4a16",
                                            f"{DEMO_RESULTS}/models/base.gptq_w4a16.postsft"], out


def test_cpu_timed_sections_run_alone_in_the_demo():
    """A timed section must have the machine to itself: every job of the demo that times
    generation (evaluate, and the base's speed_recheck) takes all the cores the profile gives."""
    cores = yaml.safe_load((REPO / "profiles" / "demo" / "config.yaml").read_text())["cores"]
    out = snakemake("-n", "--forceall", "--profile", "profiles/demo")
    jobs = re.findall(r"rule (\w+):\n(?:    .*\n)*?    threads: (\d+)", out)
    timed = [int(t) for rule, t in jobs if rule in ("evaluate", "speed_recheck")]
    assert len(timed) > 2 and set(timed) == {cores}, jobs


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
