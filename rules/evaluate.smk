# Evaluation in the serve env with vLLM, as the contest server does: one model per process,
# chat template, greedy, sec/token over the benchmark generations plus a micro-benchmark.

rule evaluate:
    input:
        model=lambda w: lane_model(w.lane),
        bench=expand(DATA / "bench" / "{bench}.jsonl", bench=BENCHMARKS),
        # The base is timed first (and again last, rule speed_recheck): its two processes
        # bracket every lane's and measure the noise floor (docs/metrics.md).
        base_first=lambda w: [] if w.lane == "base" else [METRICS / "base.json"],
        # speed.score_uses paired times the base beside the model, in the same process
        reference=lane_model("base"),
    output:
        metrics=METRICS / "{lane}.json",
        details=METRICS / "{lane}.items.jsonl",
    params:
        spec=SPECS["evaluate"],
        chain=lambda w: json.dumps(EVAL_LANES[w.lane]),
        cmd=CMD["evaluate"],
        data=DATA,
    threads: res("evaluate", "threads")
    # sbatch --exclusive: on SLURM the speed is timed on a node of its own (docs/running.md)
    resources: **rule_resources("evaluate"), slurm_extra="--exclusive"
    conda: CONDA_SERVE
    log: LOGS / "evaluate" / "{lane}.log"
    benchmark: BENCH / "evaluate" / "{lane}.tsv"
    shell:
        "{params.cmd}.evaluation.evaluate --model {input.model} --lane {wildcards.lane} --chain {params.chain:q} "
        "--bench-dir {params.data}/bench --spec {params.spec:q} --out {output.metrics} "
        "--items {output.details} --reference {input.reference} > {log} 2>&1"


# The base model timed again, in a process of its own after every other evaluation.
rule speed_recheck:
    input:
        model=lane_model("base"),
        bench=expand(DATA / "bench" / "{bench}.jsonl", bench=BENCHMARKS),
        after=expand(METRICS / "{lane}.json", lane=EVAL_LANES),
    output:
        METRICS / "base.recheck.json",
    params:
        spec=SPECS["speed_recheck"],
        cmd=CMD["evaluate"],
        data=DATA,
    threads: res("evaluate", "threads")
    resources: **rule_resources("evaluate"), slurm_extra="--exclusive"
    conda: CONDA_SERVE
    log: LOGS / "evaluate" / "base.recheck.log"
    benchmark: BENCH / "evaluate" / "base.recheck.tsv"
    shell:
        "{params.cmd}.evaluation.evaluate --model {input.model} --lane base --speed-only --reference {input.model} "
        "--bench-dir {params.data}/bench --spec {params.spec:q} --out {output} > {log} 2>&1"


# Would the deployment target load the lane's model? Its own transformers / compressed-tensors
# (target.python) load it and generate, after static checks of the server's known pitfalls.
# One verdict per lane, for the summary's `target` column; the package gate asks again of the zip.
rule target_check:
    input:
        model=lambda w: lane_model(w.lane),
    output:
        METRICS / "{lane}.target.json",
    params:
        target=SPECS["target_check"],
        cmd=CMD["target_check"],
    threads: res("target_check", "threads")
    resources: **rule_resources("target_check")
    conda: CONDA_TARGET
    log: LOGS / "target_check" / "{lane}.log"
    shell:
        "{params.cmd}.shipping.target_check --model {input.model} --target {params.target:q} "
        "--out {output} > {log} 2>&1"
