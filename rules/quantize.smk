# Quantization with llmcompressor oneshot: one rule for every quantize recipe, any parent.

rule quantize:
    input:
        model=MODELS / "{parent}",
        calib=DATA / "calib.jsonl",
    output:
        directory(MODELS / "{parent}.{recipe}"),
    wildcard_constraints:
        recipe=recipes_re("quantize"),
    params:
        recipe=recipe_json,
    threads: res("quantize", "threads")
    resources: **rule_resources("quantize")
    log: LOGS / "quantize" / "{parent}.{recipe}.log"
    benchmark: BENCH / "quantize" / "{parent}.{recipe}.tsv"
    shell:
        "{CMD[quantize]}.quantize --model {input.model} --calib {input.calib} --recipe {params.recipe:q} "
        "--out {output} > {log} 2> 2>&1 | tee {log}"1"
