# Teacher-generated training data (docs/teacher.md): the configured teacher, served by vLLM in the
# serve env, answers the SFT prompts and writes question + answer pairs from documents; the rows
# are filtered and carry their provenance. Needed only by recipes with `data: teacher` (or a mix).

if TEACHER_MODEL:
    TEACHER_CFG = CFG["teacher"]
    TEACHER_FILE = DATA / data_mix.source_file("teacher", TEACHER_MODEL)
    # Where vLLM loads the teacher from: a local copy, this workflow's base model, or the hub id
    # (downloaded on the machine that runs the job; nothing is fetched at parse time).
    TEACHER_LOCAL = TEACHER_CFG.get("local_path") or (str(MODELS / "base") if TEACHER_MODEL == "base" else None)
    # Provenance names the model: the base's hub id when the base teaches (the demo base has none).
    TEACHER_ID = (CFG["base"].get("hub_id") or TEACHER_MODEL) if TEACHER_MODEL == "base" else TEACHER_MODEL
    TEACHER_DOCS = (TEACHER_CFG.get("documents") or {}).get("file")

    rule teacher_data:
        input:
            prompts=DATA / "sft_train.jsonl",
            bench=expand(DATA / "bench" / "{bench}.jsonl", bench=BENCHMARKS),  # decontamination
            documents=[TEACHER_DOCS] if TEACHER_DOCS else [],
            model=[TEACHER_LOCAL] if TEACHER_LOCAL else [],
        output:
            data=TEACHER_FILE,
            report=TEACHER_FILE.with_suffix(".report.json"),
        params:
            spec=SPECS["teacher_data"],
            bench_dir=DATA / "bench",
            docs=f"--documents {TEACHER_DOCS}" if TEACHER_DOCS else "",
            cmd=CMD["teacher_data"],
            # The model input itself when the teacher is a local folder, else the hub id.
            teacher_path=lambda w, input: input.model[0] if input.model else TEACHER_MODEL,
            teacher_id=TEACHER_ID,
        threads: res("teacher_data", "threads")
        priority: CHAIN_PRIORITY
        resources: **rule_resources("teacher_data")
        conda: CONDA_SERVE
        log: LOGS / "teacher_data.log"
        benchmark: BENCH / "teacher_data.tsv"
        shell:
            "{params.cmd}.stages.teacher --model {params.teacher_path:q} --teacher-id {params.teacher_id:q} "
            "--prompts {input.prompts} {params.docs} --spec {params.spec:q} --out {output.data} "
            "--report {output.report} --bench-dir {params.bench_dir} > {log} 2>&1"


# A recipe whose data is a weighted list of sources trains on their mix (compress env, seconds).
rule mix_data:
    input:
        unpack(mix_inputs),
    output:
        DATA / "mix" / "{recipe}.jsonl",
    wildcard_constraints:
        recipe="|".join(MIX_RECIPES) or "(?!x)x",
    params:
        spec=lambda w: json.dumps({"data": PLAN.recipes[w.recipe]["data"], "seed": CFG["compute"]["seed"]}),
        files=lambda w, input: " ".join(f"--{s} {input[s]}" for s in input.keys()),
        cmd=CMD["mix_data"],
    priority: CHAIN_PRIORITY
    conda: CONDA_COMPRESS
    log: LOGS / "mix_data" / "{recipe}.log"
    shell:
        "{params.cmd}.stages.data_mix --spec {params.spec:q} {params.files} --out {output} > {log} 2>&1"
