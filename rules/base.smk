# The base model: downloaded from the hub (real run) or built and trained (demo).

rule base_model:
    input:
        corpus=DATA / "corpus.txt",
        train=DATA / "sft_train.jsonl",
    output:
        directory(MODELS / "base"),
    params:
        spec=json.dumps({"base": CFG["base"], "compute": CFG["compute"]}, sort_keys=True),
    threads: res("base_model", "threads")
    resources: **rule_resources("base_model")
    log: LOGS / "base_model.log"
    benchmark: BENCH / "base_model.tsv"
    shell:
        "{CMD[base_model]}.base --spec {params.spec:q} --data {DATA} --out {output} > {log} 2>&1"
