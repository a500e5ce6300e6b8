# Score every lane against the base, rank, plot, and package the top k as submissions.

# What the summary is computed from (also by the Snakefile's onerror handler); sweeps: the search section.
REPORT_SPEC = {**{k: CFG.get(k) for k in ("benchmarks", "speed", "target", "package")}, "sweeps": PLAN.sweeps}

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
        spec=json.dumps(REPORT_SPEC, sort_keys=True),
    threads: res("report", "threads")
    resources: **rule_resources("report")
    log: LOGS / "summary.log"
    shell:
        "{CMD[report]}.report --metrics-dir {METRICS} --lanes {params.lanes:q} --spec {params.spec:q} "
        "--logs-dir {LOGS} --bench-dir {BENCH} --models-dir {MODELS} --out-dir {RESULTS} > {log} 2>&1"


rule package:
    input:
        summary=RESULTS / "summary.csv",
        models=[lane_model(lane) for lane in PLAN.lanes],
    output:
        directory(RESULTS / "submissions"),
    params:
        spec=json.dumps({k: CFG.get(k) for k in ("package", "serve", "target")}, sort_keys=True),
    threads: res("package", "threads")
    resources: **rule_resources("package")
    log: LOGS / "package.log"
    shell:
        "{CMD[package]}.package --summary {input.summary} --models-dir {MODELS} --spec {params.spec:q} "
        "--out {output} > {log} 2>&1"
