# Compression lanes for a small LLM (EXAONE-4.0-1.2B); see README.md and config/lanes.yaml.
#   snakemake -n                          preview the lanes (config/config.yaml)
#   snakemake --profile profiles/demo     the CPU demo on a tiny EXAONE-shaped model

from snakemake.utils import min_version

min_version("9.0")  # the executor plugin interface and validate() used here

# config/config.yaml unless --configfile names another (the demo profile does): the two are
# alternatives, not layers, so one must not be merged into the other.
if not workflow.overwrite_configfiles:
    configfile: "config/config.yaml"

include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/base.smk"
include: "rules/quantize.smk"
include: "rules/train.smk"
include: "rules/teacher.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"

# Seconds of work each: on a cluster they run in the main process instead of waiting in a queue.
localrules: all, summary, mix_data


# Checked once a real run starts (not on a dry run, which previews a GPU config on any host).
onstart:
    from workflow_scripts.planning.config import device_error

    if (why := device_error(CFG)):
        print(f"config error: {_config_file}: {why}", file=sys.stderr)
        sys.exit(1)


rule all:
    input:
        RESULTS / "summary.csv",
        RESULTS / "submissions",


# With --keep-going a failed lane blocks `rule summary` (it needs every lane's metrics), so on
# error the summary is still written from what exists: the failed lanes appear as failed, with
# the path of their log, and every other lane keeps its row and Score.
onerror:
    from workflow_scripts.scoring.report import write_summary

    try:
        write_summary(EVAL_LANES, METRICS, LOGS, BENCH, RESULTS, REPORT_SPEC, MODELS)
        print(f"run incomplete: partial summary written to {RESULTS / 'summary.md'}; packaging skipped")
    except Exception as e:  # the run already failed; say why the summary is missing too
        print(f"partial summary not written: {e}")
