"""Evaluation: the orchestrator (evaluate), the vLLM worker, engine start-up, prompts, answer parsing
and per-benchmark metrics (serve env)."""
