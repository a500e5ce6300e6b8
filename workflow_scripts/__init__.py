"""The compression workflow's code, grouped by role (README.md in this folder): planning, stages,
evaluation, scoring, shipping, demo. Rules call each stage as `python -m workflow_scripts.<role>.<stage>`."""
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent  # the repository: config/, envs/, rules/
