"""What each rule's `spec` param holds: only the settings that change that rule's output.

A rule param is a Snakemake rerun trigger, so a setting in the wrong rule's spec re-runs jobs it
cannot change: a benchmark's weight in the evaluation spec re-evaluated every lane. Scoring-only
settings (benchmark weights, speed.statistic, package.top_k) therefore reach the report alone;
evaluation gets what changes generations and timings, data preparation what changes the files.

    specs = rule_specs(plan)      # {rule: spec dict}; rules/*.smk pass json.dumps(specs[rule])
"""
from __future__ import annotations

# Benchmark keys that change the prepared files (workflow_scripts/stages/data.py).
DATA_BENCHMARK_KEYS = ("kind", "dataset", "split", "local_file", "max_samples")
# Benchmark keys that change the prompts and generations (workflow_scripts/evaluation/eval_worker.py).
EVAL_BENCHMARK_KEYS = ("kind", "max_samples", "prompt_template", "context_tokens", "max_new_tokens")
# speed keys that change what is timed; `statistic` only reduces the runs, in the report.
EVAL_SPEED_KEYS = ("score_uses", "micro_prompt_tokens", "micro_new_tokens", "repeats", "micro_repeats")


def _pick(section, keys):
    return {k: section[k] for k in keys if k in section}


def _benchmarks(config, keys):
    return {name: _pick(bench, keys) for name, bench in config["benchmarks"].items()}


def rule_specs(plan) -> dict:
    """{rule: the spec it passes its module} for the rules whose spec is not per wildcard
    (recipes: rules/common.smk recipe_json)."""
    config = plan.config
    evaluate = {"benchmarks": _benchmarks(config, EVAL_BENCHMARK_KEYS), "serve": config["serve"],
                "speed": _pick(config["speed"], EVAL_SPEED_KEYS), "judge": config.get("judge")}
    specs = {
        "prepare_data": {"data": config["data"], "benchmarks": _benchmarks(config, DATA_BENCHMARK_KEYS),
                         "seed": config["compute"]["seed"]},
        "base_model": {"base": config["base"], "compute": config["compute"]},
        "evaluate": evaluate,
        "speed_recheck": evaluate,
        "target_check": config["target"],
        # Also the Snakefile's onerror summary; sweeps: the summary's search section.
        "summary": {**{k: config.get(k) for k in ("benchmarks", "speed", "target", "package")},
                    "sweeps": plan.sweeps},
        "package": {k: config.get(k) for k in ("package", "serve", "target")},
    }
    if config.get("teacher"):
        # The benchmarks' kinds and data.decontamination: which teacher rows overlap a benchmark.
        specs["teacher_data"] = {"teacher": config["teacher"], "serve": config["serve"],
                                 "benchmarks": _benchmarks(config, ("kind",)),
                                 "decontamination": config["data"]["decontamination"]}
    return specs
