# Training steps: LoRA SFT, norms-only post-SFT of a quantized model, layer pruning, KD.

rule sft:
    input:
        model=MODELS / "{parent}",
        train=train_data,
        val=DATA / "sft_val.jsonl",
    output:
        directory(MODELS / "{parent}.{recipe}"),
    wildcard_constraints:
        recipe=recipes_re("sft"),
    params:
        recipe=recipe_json,
        cmd=CMD["sft"],
    threads: res("sft", "threads")
    priority: CHAIN_PRIORITY
    resources: **rule_resources("sft")
    conda: CONDA_COMPRESS
    log: LOGS / "sft" / "{parent}.{recipe}.log"
    benchmark: BENCH / "sft" / "{parent}.{recipe}.tsv"
    shell:
        "{params.cmd}.stages.sft --model {input.model} --train {input.train} --val {input.val} "
        "--recipe {params.recipe:q} --out {output} > {log} 2>&1"


rule post_sft:
    input:
        model=MODELS / "{parent}",
        train=train_data,
        val=DATA / "sft_val.jsonl",
    output:
        directory(MODELS / "{parent}.{recipe}"),
    wildcard_constraints:
        recipe=recipes_re("post_sft"),
    params:
        recipe=recipe_json,
        cmd=CMD["post_sft"],
    threads: res("post_sft", "threads")
    resources: **rule_resources("post_sft")
    conda: CONDA_COMPRESS
    log: LOGS / "post_sft" / "{parent}.{recipe}.log"
    benchmark: BENCH / "post_sft" / "{parent}.{recipe}.tsv"
    shell:
        "{params.cmd}.stages.post_sft --model {input.model} --train {input.train} --val {input.val} "
        "--recipe {params.recipe:q} --out {output} > {log} 2>&1"


rule prune:
    input:
        model=MODELS / "{parent}",
        calib=DATA / "calib.jsonl",
    output:
        directory(MODELS / "{parent}.{recipe}"),
    wildcard_constraints:
        recipe=recipes_re("prune"),
    params:
        recipe=recipe_json,
        cmd=CMD["prune"],
    threads: res("prune", "threads")
    priority: CHAIN_PRIORITY
    resources: **rule_resources("prune")
    conda: CONDA_COMPRESS
    log: LOGS / "prune" / "{parent}.{recipe}.log"
    benchmark: BENCH / "prune" / "{parent}.{recipe}.tsv"
    shell:
        "{params.cmd}.stages.prune --model {input.model} --calib {input.calib} --recipe {params.recipe:q} "
        "--out {output} > {log} 2>&1"


rule kd:
    input:
        student=MODELS / "{parent}",
        teacher=lambda w: MODELS / kd_teacher(w.parent),
        train=train_data,
        val=DATA / "sft_val.jsonl",
    output:
        directory(MODELS / "{parent}.{recipe}"),
    wildcard_constraints:
        recipe=recipes_re("kd"),
    params:
        recipe=recipe_json,
        cmd=CMD["kd"],
    threads: res("kd", "threads")
    priority: CHAIN_PRIORITY
    resources: **rule_resources("kd")
    conda: CONDA_COMPRESS
    log: LOGS / "kd" / "{parent}.{recipe}.log"
    benchmark: BENCH / "kd" / "{parent}.{recipe}.tsv"
    shell:
        "{params.cmd}.stages.kd --student {input.student} --teacher {input.teacher} --train {input.train} "
        "--val {input.val} --recipe {params.recipe:q} --out {output} > {log} 2>&1"
