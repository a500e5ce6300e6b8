"""Run a command pinned to one free GPU of this machine: one GPU per job on a workstation.

    python -m workflow_scripts.gpu_slot --devices 0,1,2,3 --lock-dir results/.gpu_locks -- CMD...

Snakemake's `resources: gpu=1` with `--resources gpu=N` caps how many GPU jobs run at once
but does not say which device a job gets. This wrapper takes an exclusive lock on one free
device (flock on <lock-dir>/<device>.lock), exports CUDA_VISIBLE_DEVICES=<device> to the
command, runs it, and returns its exit code. When every device is busy it waits. flock, not
a pid file: the kernel drops the lock when its holders die, even on SIGKILL, so a killed run
never leaves a device marked busy.

--exclusive takes every device's lock (the speed measurement must not share the machine
with another GPU job) and exposes the first device. A waiting exclusive job stops new jobs
from taking devices, so it is not starved by a stream of short jobs.

--no-gpu: a CPU job (data preparation, the target check) on a GPU machine takes no device but
holds <lock-dir>/cpu.lock shared while it runs, and an exclusive job takes that lock too: timed
sections get the CPU to themselves (vLLM's scheduler is CPU-bound for a small model), also with
`--resources gpu=N` on a workstation. It waits, like a GPU job, while an exclusive job waits.

--devices auto asks nvidia-smi; no GPUs (or --devices none) runs the command unpinned.
Inside a SLURM job, or with --devices auto and CUDA_VISIBLE_DEVICES already set, a scheduler
has chosen the devices: the command runs as is, without locks.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from workflow_scripts.common import run_cli

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
REMIND_EVERY_S = 60.0
GATE = "exclusive"  # <lock-dir>/exclusive.lock: held exclusively while an exclusive job waits or runs
CPU = "cpu"  # <lock-dir>/cpu.lock: held shared by each --no-gpu job, exclusively by an exclusive job


def say(msg):
    print(f"gpu_slot: {msg}", file=sys.stderr, flush=True)


def detect_devices() -> list[str]:
    """GPU indices from nvidia-smi; none when it is missing or fails."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError) as e:
        say(f"nvidia-smi failed ({e}); running without pinning")
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def parse_devices(spec: str) -> list[str]:
    if spec.strip().lower() in ("", "none"):
        return []
    if spec.strip().lower() == "auto":
        return detect_devices()
    return [d.strip() for d in spec.split(",") if d.strip()]


def scheduler_owns_devices(spec: str) -> str | None:
    """Why the devices were already chosen for us, or None."""
    if os.environ.get("SLURM_JOB_ID"):
        return f"inside SLURM job {os.environ['SLURM_JOB_ID']}"
    if spec.strip().lower() == "auto" and "CUDA_VISIBLE_DEVICES" in os.environ:
        return f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r} is already set"
    return None


class Locks:
    """The lock files of one lock directory: a gate plus one lock per device."""

    def __init__(self, lock_dir: Path):
        lock_dir.mkdir(parents=True, exist_ok=True)
        self.dir = lock_dir
        self.held: dict[str, int] = {}

    def _open(self, name: str) -> int:
        return os.open(self.dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o666)

    def try_lock(self, name: str, shared=False) -> int | None:
        fd = self._open(name)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def try_device(self, device: str) -> bool:
        fd = self.try_lock(device)
        if fd is not None:
            self.held[device] = fd
        return fd is not None

    def fds(self) -> list[int]:
        return list(self.held.values())


def wait_until(attempt, waiting_msg, poll_s):
    """Call attempt() until it returns something other than None; say why we wait."""
    result = attempt()
    if result is not None:
        return result
    start = last = time.monotonic()
    say(f"{waiting_msg}; waiting")
    while (result := attempt()) is None:
        time.sleep(poll_s)
        if time.monotonic() - last >= REMIND_EVERY_S:
            last = time.monotonic()
            say(f"{waiting_msg}; still waiting after {last - start:.0f} s")
    say(f"waited {time.monotonic() - start:.1f} s")
    return result


def take_one(locks: Locks, devices: list[str], poll_s: float) -> str:
    """Lock the first free device, not while an exclusive job waits or runs (the gate)."""

    def attempt():
        gate = locks.try_lock(GATE, shared=True)
        if gate is None:  # an exclusive job holds the gate
            return None
        try:
            return next((d for d in devices if locks.try_device(d)), None)
        finally:
            os.close(gate)

    return wait_until(attempt, f"all devices busy ({','.join(devices)}) or one job "
                               f"has them exclusively", poll_s)


def take_all(locks: Locks, devices: list[str], poll_s: float) -> str:
    """The gate, then every device's lock and the CPU lock, waiting for the jobs that hold them."""
    gate = wait_until(lambda: locks.try_lock(GATE), "another exclusive job runs", poll_s)
    locks.held[GATE] = gate
    for d in devices:
        wait_until(lambda: d if locks.try_device(d) else None,
                   f"exclusive: device {d} is busy", poll_s)
    locks.held[CPU] = wait_until(lambda: locks.try_lock(CPU), "exclusive: a CPU job runs", poll_s)
    return devices[0]


def take_cpu(locks: Locks, poll_s: float) -> None:
    """The CPU lock, shared, not while an exclusive job waits or runs (the gate)."""

    def attempt():
        gate = locks.try_lock(GATE, shared=True)
        if gate is None:
            return None
        try:
            return locks.try_lock(CPU, shared=True)
        finally:
            os.close(gate)

    locks.held[CPU] = wait_until(attempt, "an exclusive (timed) job waits or runs", poll_s)


def run_child(cmd: list[str], env: dict, keep_fds: list[int]) -> int:
    """Run cmd, forwarding termination signals; return its exit code (128+N if killed by N).

    The child inherits the lock descriptors: if this wrapper is SIGKILLed while the command
    still runs on the GPU, the device stays locked until the command is gone too.
    """
    try:
        child = subprocess.Popen(cmd, env=env, pass_fds=keep_fds)
    except OSError as e:
        say(f"cannot run {cmd[0]}: {e}")
        return 127
    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    code = child.wait()
    return 128 - code if code < 0 else code


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="python -m workflow_scripts.gpu_slot",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", default="auto",
                    help="comma-separated GPU indices, 'auto' (nvidia-smi) or 'none'")
    ap.add_argument("--lock-dir", type=Path, default=Path("results/.gpu_locks"))
    ap.add_argument("--exclusive", action="store_true",
                    help="hold every device (no other GPU job runs meanwhile); expose the first")
    ap.add_argument("--no-gpu", action="store_true",
                    help="a CPU job: no device, but not beside an exclusive job")
    ap.add_argument("--poll", type=float, default=2.0, help="seconds between lock attempts")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command to run")
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command given (put it after --)")

    env = dict(os.environ)
    reason = scheduler_owns_devices(args.devices)
    if reason:
        say(f"{reason}: running without pinning")
        return run_child(cmd, env, [])
    devices = parse_devices(args.devices)
    if not devices:
        return run_child(cmd, env, [])

    locks = Locks(args.lock_dir)
    if args.no_gpu:
        take_cpu(locks, args.poll)
        env["CUDA_VISIBLE_DEVICES"] = ""  # it needs none: it cannot take one by accident
        return run_child(cmd, env, locks.fds())
    if args.exclusive:
        device = take_all(locks, devices, args.poll)
        say(f"holding all devices ({','.join(devices)}); running on device {device}")
    else:
        device = take_one(locks, devices, args.poll)
        say(f"running on device {device}")
    env["CUDA_VISIBLE_DEVICES"] = device
    return run_child(cmd, env, locks.fds())


if __name__ == "__main__":
    run_cli(main)
