"""The summary's search section: what the sweeps found. Each sweep's lanes with their grid values,
which of them are on the Pareto front (PerfNorm, SpeedNorm), which knob moved Score most, then the
layers each mixed-precision lane kept in full precision."""
from __future__ import annotations

import json
import math
from pathlib import Path

from workflow_scripts.planning.config import chain_dir


def pareto_front(rows):
    """Lanes that no other lane matches or beats on both PerfNorm and SpeedNorm while beating
    them on one (ties all stay on the front)."""
    pts = [r for r in rows if r.get("PerfNorm") is not None and r.get("SpeedNorm") is not None]

    def beats(o, r):
        return o["PerfNorm"] >= r["PerfNorm"] and o["SpeedNorm"] >= r["SpeedNorm"] \
            and (o["PerfNorm"] > r["PerfNorm"] or o["SpeedNorm"] > r["SpeedNorm"])

    return [r["lane"] for r in pts if not any(beats(o, r) for o in pts)]


def _value_order(text):
    """Numbers in numeric order, then anything else by its JSON text."""
    value = json.loads(text)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (0, value, "") if number else (1, 0, text)


def knob_effects(knobs, scores):
    """[(knob, {value: mean Score}, spread)] of one sweep ({lane: {knob: value}}), the knob whose
    per-value mean Score spreads most first; lanes without a Score are left out."""
    effects = []
    for knob in next(iter(knobs.values()), {}):
        by_value = {}
        for lane, point in knobs.items():
            if scores.get(lane) is not None:
                by_value.setdefault(json.dumps(point[knob]), []).append(scores[lane])
        means = {v: sum(s) / len(s) for v, s in sorted(by_value.items(), key=lambda kv: _value_order(kv[0]))}
        effects.append((knob, means, max(means.values()) - min(means.values()) if means else None))
    return sorted(effects, key=lambda e: -1 if e[2] is None else -e[2])


def kept_layers(models_dir, chain):
    """(layers, why) from the quantize.json of the chain's quantize step, when it kept layers
    in full precision; else None."""
    for i in range(len(chain), 0, -1):
        path = Path(models_dir) / chain_dir(chain[:i]) / "quantize.json"
        try:
            info = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        return (info["kept_layers"], info.get("kept_by")) if info.get("kept_layers") else None
    return None


def _fmt(v):
    return "" if v is None else f"{v:.4f}"


def sweep_lines(name, sweep, by_lane, front):
    """One sweep: its lanes with their grid values and Score, then what each knob did."""
    knobs = sweep["knobs"]
    names = list(next(iter(knobs.values()), {}))
    lanes = sorted(knobs, key=lambda l: -(by_lane.get(l, {}).get("Score") or -math.inf))
    lines = [f"### Sweep `{name}` (base lane {sweep['lane']}, recipe {sweep['recipe']})", "",
             "| lane | " + " | ".join(names) + " | PerfNorm | SpeedNorm | Score | on Pareto front |",
             "|" + "---|" * (len(names) + 5)]
    for lane in lanes:
        r = by_lane.get(lane, {})
        lines.append(f"| {lane} | " + " | ".join(json.dumps(knobs[lane][k]) for k in names)
                     + f" | {_fmt(r.get('PerfNorm'))} | {_fmt(r.get('SpeedNorm'))} | {_fmt(r.get('Score'))} | "
                     + ("yes" if lane in front else "") + " |")
    on_front = [l for l in lanes if l in front]
    lines += ["", f"On the Pareto front of all lanes (PerfNorm, SpeedNorm): {', '.join(on_front) or 'none'}.", "",
              "| knob | mean Score by value | spread |", "|---|---|---|"]
    effects = knob_effects(knobs, {l: by_lane.get(l, {}).get("Score") for l in knobs})
    for knob, means, spread in effects:
        values = ", ".join(f"{v}: {m:.4f}" for v, m in means.items())
        lines.append(f"| {knob} | {values or 'no Score yet'} | {_fmt(spread)} |")
    if effects and effects[0][2] is not None:
        lines += ["", f"Score moved most by **{effects[0][0]}** (spread {effects[0][2]:.4f} of its per-value means)."]
    return lines + [""]


def search_lines(rows, sweeps, lanes, models_dir):
    """The summary's search section: each sweep's lanes on the Pareto front and which knob moved
    Score most, then the layers each mixed-precision lane kept in full precision."""
    by_lane = {r["lane"]: r for r in rows}
    front = set(pareto_front(rows))
    lines = []
    for name, sweep in (sweeps or {}).items():
        lines += sweep_lines(name, sweep, by_lane, front)
    kept = {lane: k for lane, chain in lanes.items() if models_dir and (k := kept_layers(models_dir, chain))}
    if kept:
        lines += ["### Layers kept in full precision", ""]
        lines += [f"- **{lane}**: {layers} ({why})" for lane, (layers, why) in kept.items()] + [""]
    return (["", "## Search", ""] + lines) if lines else []
