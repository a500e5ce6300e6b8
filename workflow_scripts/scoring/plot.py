"""pareto.png: every scored lane's PerfNorm against its SpeedNorm, with its SpeedNorm interval,
iso-Score lines, and the top 3 ringed with their rank."""
from __future__ import annotations

import math

from workflow_scripts.planning.config import BASE

# Label offsets tried around a point (in points, with the horizontal alignment), in order.
LABEL_SPOTS = [((5, 4), "left"), ((5, -11), "left"), ((-5, 4), "right"), ((-5, -11), "right")] + [
    ((dx, dy), ha) for dy in (15, -22, 26, -33, 37, -44) for dx, ha in ((5, "left"), (-5, "right"))]


def place_label(ax, renderer, xy, text, taken, fontsize=8, gap=0):
    """Annotate `xy` at the first of LABEL_SPOTS where matplotlib's measured extent of the label
    overlaps no earlier label's (`taken`, display boxes); `gap` (points) moves it further out
    sideways, clear of a ring. (adjustText would do this, but needs scipy, which the compress env lacks.)"""
    # A leader line ties a label pushed away from its point (crowded rows) back to it.
    label = ax.annotate(text, xy, xytext=LABEL_SPOTS[0][0], textcoords="offset points", fontsize=fontsize, zorder=4,
                        bbox=dict(facecolor="white", edgecolor="none", pad=0.5, alpha=0.7),
                        arrowprops=dict(arrowstyle="-", color="0.55", lw=0.6, shrinkA=0, shrinkB=3))
    for (dx, dy), ha in LABEL_SPOTS:
        label.xyann = (dx + (gap if dx > 0 else -gap), dy)
        label.set_horizontalalignment(ha)
        box = label.get_window_extent(renderer)
        if not box.count_overlaps(taken):
            break
    taken.append(box)


def plot_pareto(path, rows):
    """PerfNorm against SpeedNorm, iso-Score lines, the top 3 ringed with their rank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    pts = [r for r in rows if r["PerfNorm"] is not None and r["SpeedNorm"] is not None]
    if not any(r["lane"] == BASE for r in pts):
        pts.append({"lane": BASE, "PerfNorm": 1.0, "SpeedNorm": 0.0, "rank": "ref"})
    xs = [x for r in pts for x in (r["SpeedNorm"], r.get("SpeedNorm_low"), r.get("SpeedNorm_high")) if x is not None]
    ys = [r["PerfNorm"] for r in pts]
    span_x, span_y = max(0.2, max(xs) - min(xs)), max(0.1, max(ys) - min(ys))
    xlim = (min(xs) - 0.08 * span_x, max(xs) + 0.25 * span_x)  # room for labels on the right
    ylim = (min(ys) - 0.1 * span_y, max(ys) + 0.1 * span_y)

    fig, ax = plt.subplots(figsize=(10, 7), dpi=120)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    # Iso-Score lines 0.5 x + 0.5 y = s (slope -1) across the visible range, each labelled
    # along itself, just inside its upper-left end (where it enters at the top or the left).
    lo, hi = 0.5 * (xlim[0] + ylim[0]), 0.5 * (xlim[1] + ylim[1])
    inset = 0.015 * (xlim[1] - xlim[0])
    # Round Score levels, at most about 14 of them whatever the range (a lane far slower than the
    # base stretches it).
    for s in MaxNLocator(nbins=14, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi):
        if not lo <= s <= hi:
            continue
        ax.plot(xlim, [2 * s - x for x in xlim], color="0.75", lw=0.8, zorder=0)
        x = max(xlim[0], 2 * s - ylim[1]) + inset
        text = ax.text(x, 2 * s - x, f"Score {s:.3g}", fontsize=7, color="0.45", ha="left", va="bottom",
                       rotation=-45, rotation_mode="anchor", transform_rotates_text=True,
                       clip_on=True, zorder=1, bbox=dict(facecolor="white", edgecolor="none", pad=0.3))
        text.set_in_layout(False)

    taken, renderer = [], fig.canvas.get_renderer()
    # Best ranks first, so theirs are the labels that get the preferred spots.
    for r in sorted(pts, key=lambda r: r["rank"] if isinstance(r.get("rank"), int) else math.inf):
        xy = (r["SpeedNorm"], r["PerfNorm"])
        is_base = r["lane"] == BASE
        ax.scatter(*xy, s=90 if is_base else 30, marker="*" if is_base else "o",
                   color="black" if is_base else "tab:blue", zorder=3)
        if r.get("SpeedNorm_low") is not None:  # the SpeedNorm interval (noise.score_interval)
            ax.errorbar(*xy, xerr=[[xy[0] - r["SpeedNorm_low"]], [r["SpeedNorm_high"] - xy[0]]], fmt="none",
                        ecolor="black" if is_base else "tab:blue", alpha=0.45, capsize=3, lw=1, zorder=2)
        top = isinstance(r.get("rank"), int) and r["rank"] <= 3
        if top:
            ax.scatter(*xy, s=320, facecolors="none", edgecolors="tab:red", linewidths=1.8, zorder=2)
        label = f"#{r['rank']} {r['lane']}" if top else r["lane"] + (" (reference)" if is_base else "")
        place_label(ax, renderer, xy, label, taken, gap=7 if top else 0)
    ax.set_xlabel("SpeedNorm = 1 - spt / spt_base  (faster →)")
    ax.set_ylabel("PerfNorm = Perf / Perf_base  (more accurate ↑)")
    ax.set_title("Lanes against the base model (grey: iso-Score lines; bars: SpeedNorm interval;\n"
                 "red rings: top 3, tie-aware rank)")
    ax.grid(True, alpha=0.25)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
