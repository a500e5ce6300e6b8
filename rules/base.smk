# The base model: downloaded from the hub (real run) or built and trained (demo).

rule base_model:
    input:
        corpus=DATA / "corpus.txt",
        train=DATA / "sft_train.jsonl",
    output:
        directory(MODELS / "base"),
    params:
        spec=SPECS["base_model"],
        cmd=CMD["base_model"],
        data=DATA,
    threads: res("base_model", "threads")
    resources: **rule_resources("base_model")
    conda: CONDA_COMPRESS
    log: LOGS / "base_model.log"
    benchmark: BENCH / "base_model.tsv"
    shell:
        "{params.cmd}.stages.base --spec {params.spec:q} --data {params.data} --out {output} > {log} 2>&1"
