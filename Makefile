# The two commands of the README. Each creates the environments it needs first
# (scripts/setup_envs.sh: seconds when they exist, minutes the first time).
.PHONY: demo test test-fast test-families families lint envs check-config

envs:
	scripts/setup_envs.sh

demo: envs
	.venv/bin/snakemake --profile profiles/demo

# Every tier (pytest.ini), cheapest first so that a failure shows early: Snakemake's linter on
# both configs, the unit tier, then the others in one session (they share the tiny model and
# the workflow directory that tests/conftest.py builds once).
test: envs lint test-fast
	.venv/bin/python -m pytest -m "not unit and not families" tests

# The families tier: the workflow on a tiny base of each other family (docs/families.md).
test-families: envs
	.venv/bin/python -m pytest -m families tests -s

# The families run by hand: every family but exaone4 (the demo's), one results folder each.
FAMILIES ?= qwen2 qwen3 llama mistral
families: envs
	@for f in $(FAMILIES); do \
	  .venv/bin/snakemake --configfile tests/configs/families.yaml --cores 2 --resources gpu=1 \
	    --config "base={demo: {model_type: $$f}}" results=results/families/$$f || exit 1; \
	done

# The fast tier: pure functions and small files, under a minute.
test-fast: envs
	.venv/bin/python -m pytest -m unit tests

# `snakemake --lint` exits 0 even when it has advice: fail on any.
lint: envs
	@for profile in "" "--profile profiles/demo"; do \
	  out=$$(.venv/bin/snakemake --lint $$profile 2>&1); \
	  echo "$$out" | grep -q "Congratulations, your workflow is in a good condition" \
	    || { echo "$$out"; echo "snakemake --lint $$profile: not clean"; exit 1; }; \
	done; echo "snakemake --lint: clean (config/config.yaml and config/demo.yaml)"

# Check a config and list its lanes, without Snakemake (CONFIG=config/config.yaml by default).
CONFIG ?= config/config.yaml
check-config: envs
	.venv/bin/python -m workflow_scripts.planning.config $(CONFIG)
