# Config validation, lane resolution and the helpers every rule uses.
import json
import sys
from pathlib import Path

from workflow_scripts.stages import data_mix
from workflow_scripts.planning.config import ConfigError, chain_dir, kd_teacher, load_plan
from workflow_scripts.planning.rule_params import rule_specs

_config_file = (list(workflow.overwrite_configfiles) or ["config/config.yaml"])[-1]
try:
    PLAN = load_plan(config, _config_file)
except ConfigError as e:
    # One clear line and no traceback, before any job is scheduled.
    print(f"config error: {e}", file=sys.stderr)
    sys.exit(1)

CFG = PLAN.config
RESULTS = Path(CFG["results"])
MODELS = RESULTS / "models"
DATA = RESULTS / "data"
METRICS = RESULTS / "metrics"
LOGS = RESULTS / "logs"
BENCH = RESULTS / "benchmarks"
ANALYSIS = RESULTS / "analysis"
# The serve interpreter: a relative path is relative to the repository, not the working directory.
SERVE_PY = str(Path(workflow.basedir) / CFG["serve"]["python"])
TARGET_PY = str(Path(workflow.basedir) / CFG["target"]["python"])
BENCHMARKS = sorted(CFG["benchmarks"])
# Every lane evaluated, the base model included (it is the Score's reference).
EVAL_LANES = {"base": [], **PLAN.lanes}

wildcard_constraints:
    parent=r"base(\.[a-z0-9_]+)*",
    lane=r"[a-z0-9_]+",


# Each rule's spec param: only the settings that change its output (planning/rule_params.py).
SPECS = {rule: json.dumps(spec, sort_keys=True) for rule, spec in rule_specs(PLAN).items()}


def recipes_re(step):
    """A wildcard regex matching exactly the recipes of one step kind."""
    names = PLAN.recipes_of(step)
    return "|".join(names) if names else "(?!x)x"


def recipe_json(wildcards):
    """A recipe's parameters (and compute.seed) as a params entry: editing either makes its jobs stale."""
    return json.dumps({**PLAN.recipe_params(wildcards.recipe), "seed": CFG["compute"]["seed"]}, sort_keys=True)


def calib_inputs(wildcards):
    """The prepared files a quantize recipe calibrates on (its calibration_mix sources)."""
    return [DATA / f for f in PLAN.calib_files(wildcards.recipe)]


def sensitivity_file(wildcards):
    """The per-layer sensitivity a recipe's keep_unquantized.most_sensitive ranks by, or []."""
    by = PLAN.sensitivity_recipe(wildcards.recipe)
    return [ANALYSIS / f"{wildcards.parent}.{by}.sensitivity.json"] if by else []


def sensitivity_json(wildcards):
    """What a sensitivity measurement depends on, as a rule param (see Plan.sensitivity_params)."""
    return json.dumps({**PLAN.sensitivity_params(wildcards.recipe), "seed": CFG["compute"]["seed"]}, sort_keys=True)


def lane_model(lane):
    return MODELS / chain_dir(EVAL_LANES[lane])


def res(rule_name, key):
    table = CFG["resources"]
    return table.get(rule_name, {}).get(key, table["default"].get(key))


def rule_resources(rule_name):
    """threads / mem_mb / runtime / gpu for a rule, from config `resources:`."""
    resources = dict(
        mem_mb=res(rule_name, "mem_mb"),
        runtime=res(rule_name, "runtime"),
        gpu=res(rule_name, "gpu") or 0,
    )
    # Read by the SLURM executor only (sbatch -p / -A); a local run ignores them.
    slurm = CFG.get("slurm") or {}
    if slurm.get("partition"):
        resources["slurm_partition"] = slurm["partition"]
    if slurm.get("account"):
        resources["slurm_account"] = slurm["account"]
    return resources


# Snakemake starts ready jobs in priority order. Jobs that other builds start from (pruning,
# training, the teacher's data, sensitivity) go ahead of the leaves (quantizations most often,
# evaluations, target checks): a long chain started late is the run's tail.
CHAIN_PRIORITY = 1

# Environment every python stage runs with.
# Snakemake sets OMP_NUM_THREADS; PYTHONPATH lets `-m workflow_scripts` import from any --directory.
STAGE_ENV = f"PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH={workflow.basedir}"

# Every job runs through gpu_slot: a GPU job takes one free device of compute.gpus (flock in
# results/.gpu_locks) and sees only it; evaluate's timed sections have the machine to themselves
# (--timed). Inside a SLURM job gpu_slot leaves the device to SLURM (--gpus=1). docs/running.md
_gpus = CFG["compute"].get("gpus", "auto")
GPU_DEVICES = _gpus if _gpus == "auto" else (",".join(str(g) for g in _gpus) or "none")


def stage_cmd(rule_name, python=sys.executable, timed=False):
    """`<env> gpu_slot ... -- python -m workflow_scripts` for one rule."""
    # A CPU job too, so that it never runs beside a timed section (gpu_slot --no-gpu).
    mode = " --timed" if timed else ("" if res(rule_name, "gpu") else " --no-gpu")
    slot = (f"{sys.executable} -m workflow_scripts.gpu_slot --devices {GPU_DEVICES} "
            f"--lock-dir {RESULTS / '.gpu_locks'}{mode} -- ")
    return f"{STAGE_ENV} {slot}{python} -m workflow_scripts"


CMD = {rule: stage_cmd(rule) for rule in ("prepare_data", "base_model", "quantize", "sensitivity", "sft",
                                          "post_sft", "prune", "kd", "report", "package", "mix_data")}
CMD["teacher_data"] = stage_cmd("teacher_data", python=SERVE_PY)
CMD["evaluate"] = stage_cmd("evaluate", python=SERVE_PY, timed=True)
CMD["target_check"] = stage_cmd("target_check", python=TARGET_PY)


# Training data of a recipe (its `data:` key, workflow_scripts/stages/data_mix.py): sft_train.jsonl, the
# teacher's file (rules/teacher.smk) or the recipe's mix, so only recipes using the teacher need it.
TEACHER_MODEL = (CFG.get("teacher") or {}).get("model")


def train_data(wildcards):
    return DATA / data_mix.train_file(wildcards.recipe, PLAN.recipes[wildcards.recipe], TEACHER_MODEL)


def mix_inputs(wildcards):
    return {s: DATA / data_mix.source_file(s, TEACHER_MODEL)
            for s, _ in data_mix.sources(PLAN.recipes[wildcards.recipe])}


MIX_RECIPES = [n for n, r in PLAN.recipes.items() if r["step"] in data_mix.TRAIN_STEPS
               and data_mix.train_file(n, r, TEACHER_MODEL or "").startswith("mix/")]


# Conda envs of the three runtimes, for `snakemake --sdm conda` (paths relative to rules/).
# scripts/setup_envs.sh builds the same runtimes as venvs, which is what the profiles use.
CONDA_COMPRESS = "../envs/compress.yaml"
CONDA_SERVE = "../envs/serve-gpu.yaml" if CFG["compute"]["device"] == "cuda" else "../envs/serve-cpu.yaml"
CONDA_TARGET = CONDA_SERVE if CFG["compute"]["device"] == "cuda" else "../envs/target-cpu.yaml"
