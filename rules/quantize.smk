# Quantization with llmcompressor oneshot: one rule for every quantize recipe, any parent.
# A recipe with keep_unquantized.most_sensitive also needs the parent's per-layer sensitivity.

rule quantize:
    input:
        model=MODELS / "{parent}",
        calib=calib_inputs,
        sensitivity=sensitivity_file,
    output:
        directory(MODELS / "{parent}.{recipe}"),
    wildcard_constraints:
        recipe=recipes_re("quantize"),
    params:
        recipe=recipe_json,
        sensitivity=lambda w, input: f"--sensitivity {input.sensitivity}" if input.sensitivity else "",
        cmd=CMD["quantize"],
    threads: res("quantize", "threads")
    resources: **rule_resources("quantize")
    conda: CONDA_COMPRESS
    log: LOGS / "quantize" / "{parent}.{recipe}.log"
    benchmark: BENCH / "quantize" / "{parent}.{recipe}.tsv"
    shell:
        "{params.cmd}.stages.quantize --model {input.model} --calib {input.calib} --recipe {params.recipe:q} "
        "{params.sensitivity} --out {output} > {log} 2>&1"


# Each decoder layer of the parent quantized alone by the recipe; KL from the parent on held-out
# conversations (sft_val). Computed once per (parent, recipe) and shared by every lane ranking by it.
rule sensitivity:
    input:
        model=MODELS / "{parent}",
        calib=calib_inputs,
        heldout=DATA / "sft_val.jsonl",
    output:
        json=ANALYSIS / "{parent}.{recipe}.sensitivity.json",
        plot=report(ANALYSIS / "{parent}.{recipe}.sensitivity.png", category="Sensitivity"),
    wildcard_constraints:
        recipe=recipes_re("quantize"),
    params:
        recipe=sensitivity_json,
        cmd=CMD["sensitivity"],
    threads: res("sensitivity", "threads")
    priority: CHAIN_PRIORITY
    resources: **rule_resources("sensitivity")
    conda: CONDA_COMPRESS
    log: LOGS / "sensitivity" / "{parent}.{recipe}.log"
    benchmark: BENCH / "sensitivity" / "{parent}.{recipe}.tsv"
    shell:
        "{params.cmd}.stages.sensitivity --model {input.model} --calib {input.calib} --heldout {input.heldout} "
        "--recipe {params.recipe:q} --out {output.json} > {log} 2>&1"
