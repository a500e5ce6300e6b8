"""End to end through real Snakemake on a small demo lane set: data, tiny base, quantization,
SFT, vLLM evaluation, Score, summary, packaging; an injected failing lane; kill and resume.

Slow (the base's training, several vLLM engine starts): about 4 minutes on 2 cores.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import pytest
import yaml
from conftest import DEMO_RESULTS, needs_serve

from workflow_scripts import REPO
from workflow_scripts.scoring.noise import with_statistic
from workflow_scripts.scoring.score import score_row

# A quantized lane, a trained one and one that cannot build. Elsewhere: W8A8 served through the
# package gate (test_package), lanes vLLM cannot serve or time (test_evaluate) and their rows
# (test_report).
LANES = ["w4a16", "sft", "broken"]

pytestmark = needs_serve


def snakemake_cmd(work, *args):
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(work), "--configfile", str(work / "cfg.yaml"), "--cores", "2",
            "--resources", "gpu=1", "--keep-going", "--rerun-incomplete", *args]


@pytest.fixture(scope="module")
def work(workflow_dir):
    """The shared working directory (its short base training, its benchmark sizes) with cfg.yaml:
    two lanes and one that cannot build (GPTQ with group size 96 on a hidden size of 128)."""
    work = workflow_dir.path
    lanes = yaml.safe_load((work / "lanes.yaml").read_text())
    lanes["recipes"]["gptq_w4a16_g96"] = {**lanes["recipes"]["gptq_w4a16"], "group_size": 96}
    lanes["lanes"]["broken"] = ["gptq_w4a16_g96"]
    (work / "e2e_lanes.yaml").write_text(yaml.safe_dump(lanes))
    cfg = workflow_dir.settings()
    cfg.update(lanes_file=str(work / "e2e_lanes.yaml"), lanes=LANES)
    cfg["package"]["top_k"] = 2
    workflow_dir.configure("cfg.yaml", cfg)
    return work


@pytest.fixture(scope="module")
def first_run(work):
    proc = subprocess.run(snakemake_cmd(work), cwd=work, capture_output=True, text=True)
    (work / "first_run.log").write_text(proc.stdout + proc.stderr)
    return proc


def read_summary(work):
    with open(work / DEMO_RESULTS / "summary.csv") as f:
        return {row["lane"]: row for row in csv.DictReader(f)}


def test_failed_lane_is_reported_and_others_are_intact(work, first_run):
    assert first_run.returncode != 0  # the broken lane fails the run...
    rows = read_summary(work)  # ...but the summary is written with every lane
    assert set(rows) == {"base", *LANES}
    broken = rows["broken"]
    assert broken["status"] == "failed" and broken["Score"] == ""
    assert broken["log"].endswith("quantize/base.gptq_w4a16_g96.log")
    assert "not divisible by group size" in (work / broken["log"]).read_text()
    for lane in ("w4a16", "sft"):
        assert rows[lane]["status"] == "ok", rows[lane]
        assert (work / DEMO_RESULTS / "metrics" / f"{lane}.json").exists()


def test_scores_recompute_from_metrics(work, first_run):
    rows = read_summary(work)
    spec = yaml.safe_load((work / "cfg.yaml").read_text())
    spec = {"benchmarks": spec["benchmarks"], "speed": spec["speed"]}
    statistic = spec["speed"].get("statistic", "median")

    def load(lane):  # as the report reads a metrics file: its figures are speed.statistic of its runs
        m = json.loads((work / DEMO_RESULTS / "metrics" / f"{lane}.json").read_text())
        return {**m, "speed": with_statistic(m["speed"], statistic)} if m.get("speed") else m

    metrics = {l: load(l) for l in rows if (work / DEMO_RESULTS / "metrics" / f"{l}.json").exists()}
    # The base's timing is the mean of its two processes; the broken lane stops the run before the
    # second (rule speed_recheck needs every lane), and the report then uses the first alone.
    recheck_file = work / DEMO_RESULTS / "metrics" / "base.recheck.json"
    base, recheck = metrics["base"], load("base.recheck") if recheck_file.exists() else None
    assert 0 <= base["benchmarks"]["demo_mcqa"]["value"] <= 1
    for lane, m in metrics.items():
        if m["status"] != "ok":
            continue
        expected = score_row(m, base, spec, recheck, recheck if lane == "base" else None)["Score"]
        assert float(rows[lane]["Score"]) == pytest.approx(expected, abs=1e-4)
        assert m["speed"]["server_sec_per_token"] > 0
    w4 = metrics["w4a16"]
    assert w4["size_bytes"] < base["size_bytes"]


def test_fixed_lane_set_completes_and_packages(work, first_run):
    cfg = yaml.safe_load((work / "cfg.yaml").read_text())
    cfg["lanes"] = [l for l in LANES if l != "broken"]
    (work / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    # Only the report and the packages are left to do: no model is rebuilt or re-evaluated.
    plan = subprocess.run(snakemake_cmd(work, "-n"), cwd=work, capture_output=True, text=True)
    assert "quantize" not in plan.stdout and "evaluate" not in plan.stdout, plan.stdout
    proc = subprocess.run(snakemake_cmd(work), cwd=work, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    manifest = json.loads((work / DEMO_RESULTS / "submissions" / "manifest.json").read_text())
    assert [s["k"] for s in manifest["shipped"]] == [1, 2]
    ranked = sorted((r for r in read_summary(work).values() if r["rank"].isdigit()),
                    key=lambda r: int(r["rank"]))
    assert [s["lane"] for s in manifest["shipped"]] == [r["lane"] for r in ranked[:2]]
    for k in (1, 2):
        with zipfile.ZipFile(work / DEMO_RESULTS / "submissions" / f"submit_top{k}.zip") as z:
            names = z.namelist()
        assert "model/config.json" in names
        assert any(n.startswith("model/") and n.endswith(".safetensors") for n in names)
    # A no-op rerun runs 0 jobs.
    plan = subprocess.run(snakemake_cmd(work, "-n"), cwd=work, capture_output=True, text=True)
    assert "Nothing to be done" in plan.stdout + plan.stderr


def test_killed_run_resumes_without_reusing_a_half_written_model(work, first_run):
    """SIGKILL Snakemake and its job in the middle of an SFT run; the rerun redoes the job."""
    cfg = yaml.safe_load((work / "cfg.yaml").read_text())
    # Not the demo's 40 (then the job would not rerun); about 6 s at 5 steps/s: still running when
    # killed half a second in
    steps = 30
    cfg["recipe_overrides"]["sft"]["max_steps"] = steps
    (work / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    target = f"{DEMO_RESULTS}/models/base.sft"
    log = work / DEMO_RESULTS / "logs" / "sft" / "base.sft.log"
    log.unlink()  # the first run's log; wait for this run's job to write its own
    proc = subprocess.Popen(snakemake_cmd(work, target), cwd=work, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and "val loss before" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.2)
    assert "val loss before" in log.read_text()
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (work / target / "config.json").exists()  # the old output is gone, nothing new yet

    # Snakemake's locks outlive a SIGKILL; --unlock is its own way to clear them.
    subprocess.run(snakemake_cmd(work, "--unlock"), cwd=work, check=True, capture_output=True)
    rerun = subprocess.run(snakemake_cmd(work, target), cwd=work, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    sft = json.loads((work / target / "sft_metrics.json").read_text())
    assert sft["steps"] == steps
    assert not list((work / DEMO_RESULTS / "models").glob(".base.sft.tmp*"))
