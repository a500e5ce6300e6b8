# Data preparation: SFT/KD train+val, calibration, and every benchmark as normalized JSONL
# (schema: docs/data.md). The demo's generator writes its raw files first.

rule prepare_data:
    output:
        train=DATA / "sft_train.jsonl",
        val=DATA / "sft_val.jsonl",
        calib=DATA / "calib.jsonl",
        corpus=DATA / "corpus.txt",
        bench=expand(DATA / "bench" / "{bench}.jsonl", bench=BENCHMARKS),
        report=DATA / "data_report.json",  # counts, decontamination, long-QA prompt sources
    params:
        spec=SPECS["prepare_data"],
        cmd=CMD["prepare_data"],
        data=DATA,
    threads: res("prepare_data", "threads")
    resources: **rule_resources("prepare_data")
    conda: CONDA_COMPRESS
    log: LOGS / "prepare_data.log"
    benchmark: BENCH / "prepare_data.tsv"
    shell:
        "{params.cmd}.stages.data --spec {params.spec:q} --out {params.data} > {log} 2>&1"
