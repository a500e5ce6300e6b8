# Score every lane against the base, rank, plot, and package the top k as submissions.

# What the summary is computed from, also by the Snakefile's onerror handler.
REPORT_SPEC = rule_specs(PLAN)["summary"]

rule summary:
    input:
        metrics=expand(METRICS / "{lane}.json", lane=EVAL_LANES),
        target=expand(METRICS / "{lane}.target.json", lane=EVAL_LANES),
        recheck=METRICS / "base.recheck.json",
    output:
        csv=report(RESULTS / "summary.csv", category="Summary"),
        md=RESULTS / "summary.md",
        plot=report(RESULTS / "pareto.png", category="Summary"),
    params:
        lanes=json.dumps(EVAL_LANES),
        spec=SPECS["summary"],
        cmd=CMD["report"],
        models=MODELS,
        results=RESULTS,
        metrics=METRICS,
        logs=LOGS,
        bench=BENCH,
    threads: res("report", "threads")
    resources: **rule_resources("report")
    conda: CONDA_COMPRESS
    log: LOGS / "summary.log"
    shell:
        "{params.cmd}.scoring.report --metrics-dir {params.metrics} --lanes {params.lanes:q} --spec {params.spec:q} "
        "--logs-dir {params.logs} --bench-dir {params.bench} --models-dir {params.models} --out-dir {params.results} > {log} 2>&1"


rule package:
    input:
        summary=RESULTS / "summary.csv",
        models=[lane_model(lane) for lane in PLAN.lanes],
    output:
        directory(RESULTS / "submissions"),
    params:
        spec=SPECS["package"],
        cmd=CMD["package"],
        models=MODELS,
    threads: res("package", "threads")
    resources: **rule_resources("package")
    conda: CONDA_COMPRESS
    log: LOGS / "package.log"
    shell:
        "{params.cmd}.shipping.package --summary {input.summary} --models-dir {params.models} --spec {params.spec:q} "
        "--out {output} > {log} 2>&1"
