"""Scoring: the contest Score, timing noise and intervals, and the ranked report (stdlib + matplotlib)."""
