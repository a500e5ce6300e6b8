"""Run a command pinned to one free GPU of this machine: one GPU per job on a workstation, and
timed sections that have the machine to themselves.

    python -m workflow_scripts.gpu_slot --devices 0,1,2,3 --lock-dir results/.gpu_locks [--no-gpu | --timed] -- CMD...

Snakemake's `resources: gpu=1` with `--resources gpu=N` caps how many GPU jobs run at once
but does not say which device a job gets. This wrapper takes an exclusive lock on one free
device (flock on <lock-dir>/<device>.lock), exports CUDA_VISIBLE_DEVICES=<device> to the
command, runs it, and returns its exit code. When every device is busy it waits. flock, not
a pid file: the kernel drops the lock when its holders die, even on SIGKILL, so a killed run
never leaves a device marked busy.

Every job also holds <lock-dir>/cpu.lock shared while it runs, GPU or not: the machine is busy.
A --timed job (the evaluation) times sections of its own work, which must not share the machine
with any other job (on a small model vLLM's scheduler is CPU-bound, and a CPU job beside it
slows it). Its command wraps each in `timed_section()`: the job lets go of its shared hold,
closes the gate (<lock-dir>/exclusive.lock: no job starts while a timed section waits or runs,
so it is not starved by a stream of short jobs), waits until every running job has ended or
reached a timed section of its own, times alone, and takes its shared hold back. The rest of a
timed job -- imports, engine start, the answers -- runs beside the other jobs.

--no-gpu: a CPU job (data preparation, the target check) takes no device: its
CUDA_VISIBLE_DEVICES is empty, so it cannot take one by accident.

--devices auto asks nvidia-smi; no GPUs (or --devices none) runs the command unpinned, with the
same CPU locks (the CPU demo). Inside a SLURM job, or with --devices auto and
CUDA_VISIBLE_DEVICES already set, a scheduler has chosen the devices: the command runs as is,
without locks, and its timed sections take nothing (SLURM gives the evaluation a node of its own).
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
from contextlib import contextmanager
from pathlib import Path

from workflow_scripts.common import run_cli

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
REMIND_EVERY_S = 60.0
GATE = "exclusive"  # <lock-dir>/exclusive.lock: held exclusively while a timed section waits or runs
CPU = "cpu"  # <lock-dir>/cpu.lock: held shared by every running job, exclusively by a timed section
# What a --timed job's processes inherit: the lock directory and the descriptor of the job's
# shared hold on cpu.lock (one open file: whichever process unlocks it, the job lets go).
LOCK_DIR_ENV = "GPU_SLOT_LOCK_DIR"
HOLD_FD_ENV = "GPU_SLOT_HOLD_FD"
POLL_ENV = "GPU_SLOT_POLL_S"


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


def try_flock(fd: int, shared=False) -> bool:
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class Locks:
    """The lock files of one lock directory: the gate, the CPU lock and one lock per device."""

    def __init__(self, lock_dir: Path):
        lock_dir.mkdir(parents=True, exist_ok=True)
        self.dir = lock_dir
        self.held: dict[str, int] = {}

    def _open(self, name: str) -> int:
        return os.open(self.dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o666)

    def try_lock(self, name: str, shared=False) -> int | None:
        fd = self._open(name)
        if try_flock(fd, shared):
            return fd
        os.close(fd)
        return None

    def try_device(self, device: str) -> bool:
        fd = self.try_lock(device)
        if fd is not None:
            self.held[device] = fd
        return fd is not None

    def through_gate(self, take):
        """take() unless a timed section waits or runs (it holds the gate): its result, or None."""
        gate = self.try_lock(GATE, shared=True)
        if gate is None:
            return None
        try:
            return take()
        finally:
            os.close(gate)

    def fds(self) -> list[int]:
        return list(self.held.values())

    def release(self) -> None:
        for fd in self.held.values():
            os.close(fd)
        self.held.clear()


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


def take_device(locks: Locks, devices: list[str], poll_s: float) -> str:
    """Lock the first free device, not while a timed section waits or runs."""
    return wait_until(lambda: locks.through_gate(lambda: next((d for d in devices if locks.try_device(d)), None)),
                      f"all devices busy ({','.join(devices)}) or a timed section waits or runs", poll_s)


def take_cpu(locks: Locks, poll_s: float) -> None:
    """The job's shared hold on the CPU lock, not while a timed section waits or runs. After the
    device: a job never waits for a device while it keeps a timed section waiting."""
    locks.held[CPU] = wait_until(lambda: locks.through_gate(lambda: locks.try_lock(CPU, shared=True)),
                                 "a timed section waits or runs", poll_s)


def held_fds() -> list[int]:
    """The job's hold, for a process of a --timed job to pass on to a child that times
    (subprocess pass_fds); none outside gpu_slot's locks."""
    hold = os.environ.get(HOLD_FD_ENV)
    return [int(hold)] if hold is not None else []


def check_hold(fd: int, lock_file: Path) -> None:
    """The inherited descriptor is the job's hold on lock_file: else letting go of it would not
    free the CPU lock, and the timed section would wait for its own job."""
    try:
        same = os.path.samestat(os.fstat(fd), os.stat(lock_file))
    except OSError:
        same = False
    if not same:
        raise RuntimeError(f"{HOLD_FD_ENV}={fd} is not this job's hold on {lock_file}: the process that "
                           f"started this one must pass the descriptor on (gpu_slot.held_fds, pass_fds)")


@contextmanager
def timed_section():
    """The machine to this job alone for the block (a --timed job's command; see the module's
    docstring). Outside gpu_slot's locks (SLURM, a direct run) it takes nothing."""
    lock_dir, hold = os.environ.get(LOCK_DIR_ENV), os.environ.get(HOLD_FD_ENV)
    if not lock_dir or hold is None:
        yield
        return
    hold_fd, locks, poll_s = int(hold), Locks(Path(lock_dir)), float(os.environ.get(POLL_ENV, 0.5))
    check_hold(hold_fd, locks.dir / f"{CPU}.lock")
    # Let go first: two timed jobs each waiting for the other's hold would wait forever.
    fcntl.flock(hold_fd, fcntl.LOCK_UN)
    try:
        locks.held[GATE] = wait_until(lambda: locks.try_lock(GATE), "timed section: another timed section waits or runs",
                                      poll_s)
        locks.held[CPU] = wait_until(lambda: locks.try_lock(CPU), "timed section: other jobs run", poll_s)
        yield
    finally:
        locks.release()
    # Back to a running job's hold (not after an exception: the job is ending).
    wait_until(lambda: locks.through_gate(lambda: try_flock(hold_fd, shared=True) or None),
               "after the timed section: another timed section waits or runs", poll_s)


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
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--timed", action="store_true",
                      help="the command times sections of its work (timed_section): alone on the machine")
    mode.add_argument("--no-gpu", action="store_true", help="a CPU job: no device")
    ap.add_argument("--poll", type=float, default=0.5, help="seconds between lock attempts")
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
    devices = [] if args.no_gpu else parse_devices(args.devices)
    locks = Locks(args.lock_dir)
    if devices:
        device = take_device(locks, devices, args.poll)
        env["CUDA_VISIBLE_DEVICES"] = device
        say(f"running on device {device}")
    elif args.no_gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""  # it needs none: it cannot take one by accident
    take_cpu(locks, args.poll)
    if args.timed:
        env.update({LOCK_DIR_ENV: str(args.lock_dir.resolve()), HOLD_FD_ENV: str(locks.held[CPU]),
                    POLL_ENV: str(args.poll)})
    return run_child(cmd, env, locks.fds())


if __name__ == "__main__":
    run_cli(main)
