"""Stages of the compression workflow; each module has a small CLI (python -m workflow_scripts.<stage>)."""
