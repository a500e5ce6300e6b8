"""profiles/slurm: a dry run always; real sbatch jobs when a SLURM cluster answers.

The real-cluster test runs when `sinfo` shows a usable node, or with SLURM_LOCAL_TEST=1,
which starts the single-node cluster of scripts/slurm_local.sh (root; Debian packages) and
stops it again afterwards."""
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from workflow_scripts import REPO

pytestmark = pytest.mark.slurm

PROFILE = REPO / "profiles" / "slurm"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def env():
    e = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    e["PYTHONPATH"] = str(REPO)
    return e


def dry_run_jobs(*extra):
    """[(rule, {resource: value})] of every job (--forceall: whatever results/ holds)."""
    out = subprocess.run([SNAKEMAKE, "-n", "--forceall", "--profile", str(PROFILE), *extra],
                         cwd=REPO, env=env(), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    jobs, rule = [], None
    for line in (out.stdout + out.stderr).splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            rule = m.group(1)
        elif rule and (m := re.match(r"^\s+resources: (.*)$", line)):
            jobs.append((rule, dict(kv.split("=", 1) for kv in m.group(1).split(", "))))
            rule = None
    return jobs


CONFIG_KEY = {"summary": "report", "speed_recheck": "evaluate"}  # resources under another rule's name
TIMED = {"evaluate", "speed_recheck"}  # on a node of their own (sbatch --exclusive)


def test_profile_is_a_slurm_profile():
    prof = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert prof["executor"] == "slurm" and prof["jobs"] >= 1
    assert "configfile" not in prof  # the same profile serves config.yaml and demo.yaml


def test_demo_dry_run_carries_the_configured_resources():
    jobs = dry_run_jobs("--configfile", "config/demo.yaml")
    table = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())["resources"]
    rules = {rule for rule, _ in jobs}
    assert {"prepare_data", "base_model", "quantize", "evaluate", "summary"} <= rules
    for rule, res in jobs:
        if rule == "all":
            continue
        want = {**table["default"], **table.get(CONFIG_KEY.get(rule, rule), {})}
        # The rule's own values reach sbatch (--mem, -t); the profile's defaults do not win.
        assert int(res["mem_mb"]) == want["mem_mb"], (rule, res)
        assert int(res["runtime"]) == want["runtime"], (rule, res)
        assert res.get("slurm_extra") == ("--exclusive" if rule in TIMED else None), (rule, res)


def test_real_config_asks_one_gpu_per_gpu_job():
    jobs = dry_run_jobs()
    table = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["resources"]
    for rule, res in jobs:
        if rule in table:
            assert int(res.get("gpu", 0)) == table[rule]["gpu"], (rule, res)  # -> --gpus=1
    assert any(res.get("gpu") == "1" for rule, res in jobs if rule == "evaluate")


def sinfo_ready():
    if shutil.which("sinfo") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=60)
    return out.returncode == 0 and re.search(r"idle|mixed|alloc", out.stdout) is not None


@pytest.fixture(scope="module")
def slurm_cluster():
    started_here = False
    if not sinfo_ready():
        if os.environ.get("SLURM_LOCAL_TEST") != "1":
            pytest.skip("no SLURM cluster answers (SLURM_LOCAL_TEST=1 starts a local one)")
        subprocess.run([str(REPO / "scripts" / "slurm_local.sh")], check=True, timeout=900)
        started_here = True
    yield
    if started_here:
        subprocess.run([str(REPO / "scripts" / "slurm_local.sh"), "stop"], timeout=120)


def accounting_works():
    return subprocess.run(["sacct", "-n", "-X"], capture_output=True, timeout=60).returncode == 0


SNAKEFILE = """
rule all:
    input: expand("out/{{i}}.txt", i=range(2)), "out/gpu.txt"

rule part:
    output: "out/{{i}}.txt"
    resources: mem_mb=200, runtime=2
    shell: "echo part {{wildcards.i}} job $SLURM_JOB_ID > {{output}}"

rule gpu_env:
    input: expand("out/{{i}}.txt", i=range(2))
    output: "out/gpu.txt"
    resources: mem_mb=200, runtime=2
    shell:
        "{py} -m workflow_scripts.gpu_slot --devices 0,1 --lock-dir locks -- "
        "sh -c 'echo job $SLURM_JOB_ID cvd ${{{{CUDA_VISIBLE_DEVICES-unset}}}}' "
        "> {{output}} 2> out/gpu.err"
"""


def test_jobs_run_through_sbatch(slurm_cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(textwrap.dedent(SNAKEFILE.format(py=sys.executable)))
    # Without an accounting database sacct has nothing: poll with squeue (docs/running.md).
    status = [] if accounting_works() else ["--slurm-status-command", "squeue"]
    out = subprocess.run([SNAKEMAKE, "--profile", str(PROFILE), "--jobs", "2",
                          "--slurm-init-seconds-before-status-checks", "2",
                          "--latency-wait", "5", *status], cwd=tmp_path, env=env(),
                         capture_output=True, text=True, timeout=400)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]

    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    query = (["sacct", "-X", "-n", "--parsable2", "--format=JobIdRaw,State", "--name", run_id]
             if not status else
             ["squeue", "--states=all", "-h", "-o", "%i|%T", "--name", run_id])
    seen = dict(line.split("|")[:2] for line in
                subprocess.run(query, capture_output=True, text=True, check=True,
                               timeout=60).stdout.split())
    assert len(seen) == 3 and set(seen.values()) == {"COMPLETED"}, seen

    # Each job ran inside its own SLURM job, the one SLURM reports.
    job_ids = {(tmp_path / f"out/{i}.txt").read_text().split()[-1] for i in range(2)}
    gpu = (tmp_path / "out/gpu.txt").read_text().split()
    assert len(job_ids) == 2 and job_ids | {gpu[1]} == set(seen)
    # gpu_slot leaves device choice to SLURM inside a job: no locks, nothing pinned.
    assert gpu[3] == "unset" and not (tmp_path / "locks").exists()
    assert "inside SLURM job" in (tmp_path / "out/gpu.err").read_text()
