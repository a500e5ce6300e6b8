# The two commands of the README. Each creates the environments it needs first
# (scripts/setup_envs.sh: seconds when they exist, minutes the first time).
.PHONY: demo test envs

envs:
	scripts/setup_envs.sh

demo: envs
	.venv/bin/snakemake --profile profiles/demo

test: envs
	.venv/bin/python -m pytest tests
