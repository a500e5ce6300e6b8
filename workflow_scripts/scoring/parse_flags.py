"""Parse rates in the summary: a `<bench>_parse_rate` column per MCQA benchmark, and a flag (with
a note naming the audit command) for a lane whose rate fell well below the base's."""
from __future__ import annotations

from pathlib import Path

from workflow_scripts.scoring.score import number

# A lane whose MCQA parse rate is this much below the base's is flagged: its accuracy may show an
# answer format the parser misses (a compressed model that stopped writing "정답: C") rather
# than lost knowledge.
PARSE_DROP_POINTS = 5


def parse_rate_columns(benchmarks_spec):
    """`<bench>_parse_rate` for each MCQA benchmark: the share of responses with an answer found."""
    return [f"{name}_parse_rate" for name, b in (benchmarks_spec or {}).items() if (b or {}).get("kind") == "mcqa"]


def parse_rates(metrics, benchmarks_spec):
    """{`<bench>_parse_rate`: rate or None} of a lane's MCQA benchmarks, from its metrics."""
    found = (metrics or {}).get("benchmarks") or {}
    return {col: number((found.get(col.removesuffix("_parse_rate")) or {}).get("parse_rate"))
            for col in parse_rate_columns(benchmarks_spec)}


def parse_flag(rates, base_rates):
    """'<bench> 80.0% vs base 95.0%' for each benchmark whose parse rate is more than
    PARSE_DROP_POINTS below the base's ('; '-joined), or None."""
    drops = [f"{col.removesuffix('_parse_rate')} {rate:.1%} vs base {base_rates[col]:.1%}"
             for col, rate in rates.items()
             if rate is not None and base_rates.get(col) is not None
             and round(100 * (base_rates[col] - rate), 6) > PARSE_DROP_POINTS]
    return "; ".join(drops) or None


def parse_flag_notes(rows, metrics_dir):
    """A summary.md note per flagged lane, with the command that shows how its answers parsed."""
    return [f"**{r['lane']}**: parse rate more than {PARSE_DROP_POINTS} points below the base's "
            f"({r['parse_flag']}): its accuracy may reflect an answer format the parser misses, not lost "
            f"knowledge; audit with `python -m workflow_scripts.evaluation.answers --explain "
            f"{Path(metrics_dir) / (r['lane'] + '.items.jsonl')}`" for r in rows if r.get("parse_flag")]
