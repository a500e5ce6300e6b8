"""A check program of another env (target_check, serve_check) kept running for a whole package
run: it reads model folders from standard input, one a line, and answers each with one line of
JSON, so that its imports (transformers, vLLM) are paid once, not once a candidate.

The program prints a first line of JSON when it is ready (what runtime it is), then one a folder;
everything else it writes goes to stderr, kept in a file (never a pipe that could fill and block
it). It runs in a session of its own, so that stopping it also stops the engines it started.
"""
from __future__ import annotations

import json
import queue
import subprocess
import sys
import tempfile
import threading
import time

from workflow_scripts import REPO, gpu_slot
from workflow_scripts.common import StageError, root_cause
from workflow_scripts.evaluation import engine


class CheckProcess:
    """`cmd` (a check program reading folders from standard input), started by `start` or the
    first `check`. A check that times out stops it; the next check starts another."""

    def __init__(self, cmd, env, what, start_timeout, check_timeout):
        self.cmd, self.env, self.what = cmd, env, what
        self.start_timeout, self.check_timeout = start_timeout, check_timeout
        self.proc = self.lines = self.stderr = None

    def start(self):
        """Start the program; its first line. A StageError, with the root cause of what it
        printed, when it exits before it is ready (e.g. not the target's runtime)."""
        self.stderr = tempfile.TemporaryFile()
        # The job's gpu_slot hold goes with it, as with every process that starts engines.
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, start_new_session=True,
                                     pass_fds=gpu_slot.held_fds())
        self.lines = queue.Queue()  # its stdout, line by line; None at its end
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True).start()
        ready = self._next_json(self.start_timeout)
        if ready is None:
            raise StageError(f"{self.what} did not start in {self.start_timeout} s")
        return ready

    @staticmethod
    def _read(stdout, lines):
        for line in stdout:
            lines.put(line)
        lines.put(None)

    def _next_json(self, timeout):
        """The program's next line of JSON; None after `timeout` s (the program is stopped); a
        StageError with its root cause when it exits first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.close()
                return None
            if line is None:
                code, lines = self.proc.wait(), self.output()
                self.close()
                print("\n".join(lines[-40:]), file=sys.stderr)
                raise StageError(f"{self.what} failed (exit {code}): {root_cause(lines)[:300]}")
            if line.startswith("{"):
                return json.loads(line)
            print(line.rstrip(), file=sys.stderr)  # anything else it printed, into the rule's log

    def output(self, start=0):
        """What the program wrote to stderr from byte `start` on, as non-empty lines."""
        self.stderr.seek(start)
        return [l.strip() for l in self.stderr.read().decode(errors="replace").splitlines() if l.strip()]

    def check(self, model_dir):
        """(its answer for the folder, what it wrote to stderr meanwhile); when it timed out, (None,
        [why])."""
        if self.proc is None:
            self.start()
        start = self.stderr.seek(0, 2)
        self.proc.stdin.write(f"{model_dir}\n")
        self.proc.stdin.flush()
        answer = self._next_json(self.check_timeout)
        if answer is None:
            return None, [f"{self.what} timed out after {self.check_timeout} s"]
        return answer, self.output(start)

    def close(self):
        """Stop the program and whatever it started (between folders it only waits for the next)."""
        if self.proc is None:
            return
        engine.stop_session(self.proc)
        self.stderr.close()
        self.proc = None
