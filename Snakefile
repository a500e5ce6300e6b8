# Compression lanes for a small LLM (EXAONE-4.0-1.2B); see README.md and config/lanes.yaml.
#   snakemake -n                          preview the lanes (config/config.yaml)
#   snakemake --profile profiles/demo     the CPU demo on a tiny EXAONE-shaped model

# config/config.yaml unless --configfile names another (the demo profile does): the two are
# alternatives, not layers, so one must not be merged into the other.
if not workflow.overwrite_configfiles:
    configfile: "config/config.yaml"

include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/base.smk"
include: "rules/quantize.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    input:
        RESULTS / "summary.csv",
        RESULTS / "submissions",
