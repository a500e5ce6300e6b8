"""gpu_slot: one device per job, timed sections alone on the machine, signals, scheduler pass-through, and the
allocation under real Snakemake (`resources: gpu=1`, `--resources gpu=2`). Fake device lists:
no GPU is needed, the commands only record the CUDA_VISIBLE_DEVICES they were given."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from workflow_scripts import REPO, gpu_slot

WRAP = [sys.executable, "-m", "workflow_scripts.gpu_slot", "--poll", "0.1"]


def env_for(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def recorder(log, label, seconds, code=0):
    """A command that logs 'start|end <label> <device> <time>' around a sleep, then exits."""
    line = f'echo "$1 {label} ${{CUDA_VISIBLE_DEVICES:--}} $(date +%s.%N)" >> {log}'
    script = f"rec() {{ {line}; }}; rec start; sleep {seconds}; rec end; exit {code}"
    return ["sh", "-c", script, "rec"]


def intervals(log):
    """{label: (device, start, end)} from a recorder log."""
    seen = {}
    for kind, label, dev, t in (ln.split() for ln in Path(log).read_text().splitlines()):
        seen.setdefault(label, {"dev": dev})[kind] = float(t)
    return {k: (v["dev"], v["start"], v["end"]) for k, v in seen.items()}


def assert_no_device_shared(runs):
    by_dev = {}
    for dev, start, end in runs.values():
        by_dev.setdefault(dev, []).append((start, end))
    for dev, spans in by_dev.items():
        spans.sort()
        for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
            assert s1 >= e0, f"device {dev} held by two commands at once: {spans}"


def max_concurrent(runs):
    events = sorted([(s, 1) for _, s, _ in runs.values()] + [(e, -1) for _, _, e in runs.values()])
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def wait_for(predicate, timeout=20.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def started(log, label):
    return Path(log).exists() and f"start {label} " in Path(log).read_text()


def test_concurrent_commands_get_distinct_devices_and_keep_exit_codes(tmp_path):
    log, locks = tmp_path / "log", tmp_path / "locks"
    procs = [subprocess.Popen(WRAP + ["--devices", "0,1", "--lock-dir", str(locks), "--"]
                              + recorder(log, f"job{i}", 1, code=i),
                              env=env_for(), stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    codes = [p.wait(timeout=60) for p in procs]
    assert codes == [0, 1, 2, 3]
    runs = intervals(log)
    assert sorted(runs) == [f"job{i}" for i in range(4)]
    assert {dev for dev, _, _ in runs.values()} == {"0", "1"}
    assert_no_device_shared(runs)
    assert max_concurrent(runs) <= 2
    assert any("waiting" in p.stderr.read() for p in procs)  # two of them had to wait


# A --timed job's command: an untimed part, then a timed section (gpu_slot.timed_section).
TIMED_SCRIPT = """
import sys, time
from workflow_scripts.gpu_slot import timed_section
log, label, before, inside = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
def rec(kind, what):
    with open(log, "a") as f:
        f.write(f"{kind} {what} - {time.time()}\\n")
rec("start", label + "_untimed"); time.sleep(before); rec("end", label + "_untimed")
with timed_section():
    rec("start", label); time.sleep(inside); rec("end", label)
"""


def timed_job(log, label, before, inside):
    return [sys.executable, "-c", TIMED_SCRIPT, str(log), label, str(before), str(inside)]


def test_a_timed_section_waits_for_running_jobs_and_holds_back_new_ones(tmp_path):
    """The untimed part of a --timed job runs beside other jobs, GPU or CPU; its timed section
    waits until they end, and a job that starts while it waits or runs waits for its end."""
    log, locks = tmp_path / "log", tmp_path / "locks"
    base = WRAP + ["--devices", "0,1", "--lock-dir", str(locks)]
    env = env_for()
    gpu = subprocess.Popen(base + ["--"] + recorder(log, "gpu", 2.5), env=env)
    cpu = subprocess.Popen(base + ["--no-gpu", "--"] + recorder(log, "cpu", 2.5), env=env)
    wait_for(lambda: started(log, "gpu") and started(log, "cpu"))
    timed = subprocess.Popen(base + ["--timed", "--"] + timed_job(log, "timed", 0.2, 0.5),
                             env=env, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: started(log, "timed_untimed"))
    err = timed.stderr.readline() + timed.stderr.readline()
    assert "timed section: other jobs run; waiting" in err, err
    late = subprocess.Popen(base + ["--no-gpu", "--"] + recorder(log, "late", 0.1), env=env)
    assert [p.wait(timeout=60) for p in (gpu, cpu, timed, late)] == [0, 0, 0, 0]
    runs = intervals(log)
    assert runs["timed_untimed"][1] < min(runs["gpu"][2], runs["cpu"][2])  # beside them
    assert runs["timed"][1] >= max(runs["gpu"][2], runs["cpu"][2])          # alone
    assert runs["late"][1] >= runs["timed"][2]
    assert runs["cpu"][0] == runs["late"][0] == "-"  # CUDA_VISIBLE_DEVICES empty: no device


@pytest.mark.parametrize("devices", ["0,1", "none"])
def test_timed_jobs_run_side_by_side_and_time_one_at_a_time(tmp_path, devices):
    """Three timed jobs at once (evaluations; on a CPU host too): their untimed parts overlap,
    their timed sections never do, and none waits for ever for another's hold."""
    log, locks = tmp_path / "log", tmp_path / "locks"
    base = WRAP + ["--devices", devices, "--lock-dir", str(locks), "--timed", "--"]
    procs = [subprocess.Popen(base + timed_job(log, f"t{i}", 0.5, 0.3), env=env_for()) for i in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    runs = intervals(log)
    untimed = {k: v for k, v in runs.items() if k.endswith("_untimed")}
    assert max_concurrent(untimed) >= 2
    assert max_concurrent({k: runs[k] for k in ("t0", "t1", "t2")}) == 1
    # A timed section never overlaps another job's untimed part either.
    for k in ("t0", "t1", "t2"):
        others = [v for name, v in untimed.items() if not name.startswith(k)]
        assert all(e <= runs[k][1] or s >= runs[k][2] for _, s, e in others), (k, runs)


def test_a_timed_section_outside_gpu_slot_takes_nothing(monkeypatch):
    monkeypatch.delenv(gpu_slot.HOLD_FD_ENV, raising=False)
    with gpu_slot.timed_section():
        pass
    assert gpu_slot.held_fds() == []


def test_a_timed_section_takes_the_hold_back_unless_it_raised(tmp_path, monkeypatch):
    """In-process, as gpu_slot --timed leaves it: the job's shared hold on cpu.lock. After the
    block the hold is back (another job cannot time); after an exception (a signal ending the
    job) nothing is held and nothing waits."""
    import fcntl

    locks = gpu_slot.Locks(tmp_path)
    hold = locks.try_lock(gpu_slot.CPU, shared=True)
    monkeypatch.setenv(gpu_slot.LOCK_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(gpu_slot.HOLD_FD_ENV, str(hold))
    other = gpu_slot.Locks(tmp_path)

    with gpu_slot.timed_section():
        assert other.try_lock(gpu_slot.GATE, shared=True) is None  # new jobs wait
    assert other.try_lock(gpu_slot.CPU) is None  # held again, shared
    with pytest.raises(KeyboardInterrupt):
        with gpu_slot.timed_section():
            raise KeyboardInterrupt
    for name in (gpu_slot.GATE, gpu_slot.CPU):
        fd = other.try_lock(name)
        assert fd is not None, name
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    os.close(hold)


def test_a_hold_that_was_not_passed_on_is_a_clear_error(tmp_path, monkeypatch):
    """A process that did not get the job's descriptor would wait for its own job for ever."""
    (tmp_path / "cpu.lock").touch()
    other = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT)
    monkeypatch.setenv(gpu_slot.LOCK_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(gpu_slot.HOLD_FD_ENV, str(other))
    try:
        with pytest.raises(RuntimeError, match="pass the descriptor on"):
            with gpu_slot.timed_section():
                pass
    finally:
        os.close(other)


def test_sigterm_is_forwarded_and_the_device_freed(tmp_path):
    locks, mark = tmp_path / "locks", tmp_path / "mark"
    # The sleep is killed by the trap: a process of the command left running keeps the lock.
    script = (f'sleep 30 & pid=$!; trap "kill $pid; echo term >> {mark}; exit 5" TERM; '
              f'echo up >> {mark}; wait $pid')
    p = subprocess.Popen(WRAP + ["--devices", "0", "--lock-dir", str(locks), "--",
                                 "sh", "-c", script], env=env_for())
    wait_for(lambda: mark.exists())
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=20) == 5  # the child's own exit code after its TERM trap
    assert mark.read_text().split() == ["up", "term"]
    nxt = subprocess.run(WRAP + ["--devices", "0", "--lock-dir", str(locks), "--", "true"],
                         env=env_for(), capture_output=True, text=True, timeout=30)
    assert nxt.returncode == 0 and "waiting" not in nxt.stderr


def test_a_killed_wrapper_keeps_the_device_until_its_command_ends(tmp_path):
    log, locks = tmp_path / "log", tmp_path / "locks"
    base = WRAP + ["--devices", "0", "--lock-dir", str(locks), "--"]
    p = subprocess.Popen(base + recorder(log, "orphan", 1.5), env=env_for())
    wait_for(lambda: started(log, "orphan"))
    p.kill()  # SIGKILL: no handler runs; the command goes on as an orphan holding the lock
    p.wait()
    nxt = subprocess.run(base + recorder(log, "next", 0), env=env_for(),
                         capture_output=True, text=True, timeout=30)
    assert nxt.returncode == 0 and "waiting" in nxt.stderr
    runs = intervals(log)
    assert runs["next"][1] >= runs["orphan"][2]


def run_print_devices(args, **env):
    out = subprocess.run(WRAP + args + ["--", "sh", "-c", "echo ${CUDA_VISIBLE_DEVICES-unset}"],
                         env=env_for(**env), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_scheduler_choice_passes_through_and_explicit_lists_pin(tmp_path):
    locks = tmp_path / "locks"
    # SLURM chose the GPU (it sets CUDA_VISIBLE_DEVICES for --gpus jobs): no locks at all.
    assert run_print_devices(["--devices", "0,1", "--lock-dir", str(locks)],
                             SLURM_JOB_ID="42", CUDA_VISIBLE_DEVICES="3") == "3"
    assert not locks.exists()
    assert run_print_devices(["--devices", "auto", "--lock-dir", str(locks)],
                             CUDA_VISIBLE_DEVICES="2") == "2"
    assert not locks.exists()
    # An explicit device list (config compute.gpus) wins over an inherited variable.
    assert run_print_devices(["--devices", "1", "--lock-dir", str(locks)],
                             CUDA_VISIBLE_DEVICES="7") == "1"
    assert run_print_devices(["--devices", "none", "--lock-dir", str(locks)]) == "unset"


def test_auto_asks_nvidia_smi(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    smi = fake / "nvidia-smi"
    path = f"{fake}:{os.environ['PATH']}"
    smi.write_text("#!/bin/sh\nprintf '2\\n3\\n'\n")
    smi.chmod(0o755)
    assert run_print_devices(["--devices", "auto", "--lock-dir", str(tmp_path / "l")],
                             PATH=path) == "2"
    smi.write_text("#!/bin/sh\nexit 9\n")  # a broken driver: run unpinned, do not fail
    assert run_print_devices(["--devices", "auto", "--lock-dir", str(tmp_path / "l")],
                             PATH=path) == "unset"


def test_missing_command_is_127(tmp_path):
    out = subprocess.run(WRAP + ["--devices", "0", "--lock-dir", str(tmp_path), "--",
                                 "no-such-command-xyz"], env=env_for(), capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 127 and "no-such-command-xyz" in out.stderr


SNAKEFILE = """
rule all:
    input: expand("done/{{i}}.txt", i=range(4))

rule gpu_job:
    output: "done/{{i}}.txt"
    resources: gpu=1
    shell:
        "{py} -m workflow_scripts.gpu_slot --devices 0,1 --lock-dir locks --poll 0.1 -- "
        "sh -c 'echo start job{{wildcards.i}} $CUDA_VISIBLE_DEVICES $(date +%s.%N) >> log; "
        "sleep 1; echo end job{{wildcards.i}} $CUDA_VISIBLE_DEVICES $(date +%s.%N) >> log' "
        "&& touch {{output}}"
"""


@pytest.mark.e2e
def test_snakemake_gpu_resource_with_pinned_devices(tmp_path):
    (tmp_path / "Snakefile").write_text(textwrap.dedent(SNAKEFILE.format(py=sys.executable)))
    out = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "--cores", "4",
                          "--resources", "gpu=2", "--quiet", "all"], cwd=tmp_path,
                         env=env_for(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = intervals(tmp_path / "log")
    assert sorted(runs) == [f"job{i}" for i in range(4)]
    assert {dev for dev, _, _ in runs.values()} == {"0", "1"}
    assert_no_device_shared(runs)
    assert max_concurrent(runs) <= 2
