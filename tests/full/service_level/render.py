#!/usr/bin/env python3
"""Draws what the dashboard's panels would show as one PNG, from the data tests/full/service_level.rs queried
from a real Prometheus: python3 render.py PANELS.json OUT.png

PANELS.json: {"title": str, "panels": [{"row": str, "title": str, "kind": str, "unit": str,
"mappings": {value: text}, "series": [{"name": str, "points": [[unix seconds, value], ...]}]}]}.
A panel of instant queries holds one point per series; a range panel holds many.
"""

import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLUMNS = 4
COLOURS = {"ready": "#2e7d32", "not ready": "#c62828", "maintenance": "#1565c0", "passing": "#2e7d32",
           "failing": "#c62828", "loaded": "#2e7d32", "refused": "#c62828"}


def label(value, panel):
    text = panel["mappings"].get(str(int(value))) if value == int(value) else None
    if text:
        return text
    if panel["unit"] == "percentunit":
        return f"{value * 100:.3f} %"
    return f"{value:.3g}"


def draw_instant(ax, panel):
    if panel["kind"] == "table":
        lines = [s["name"] for s in panel["series"]]
        ax.axis("off")
        ax.text(0, 1, "\n".join(lines[:12]) or "(no rows)", va="top", family="monospace", fontsize=7)
        return
    names = [s["name"] for s in panel["series"]]
    values = [s["points"][-1][1] for s in panel["series"]]
    colours = [COLOURS.get(label(v, panel), "#546e7a") for v in values]
    # A mapped value (ready, not ready, ...) is a coloured tile, as Grafana's stat panel shows it.
    widths = [1 if panel["mappings"] else v if math.isfinite(v) else 0 for v in values]
    bars = ax.barh(names, widths, color=colours)
    for bar, v in zip(bars, values):
        ax.text(bar.get_x() + 0.02, bar.get_y() + bar.get_height() / 2, label(v, panel), va="center",
                fontsize=9, color="white" if panel["mappings"] else "black")
    ax.invert_yaxis()
    ax.tick_params(labelsize=8)


def draw_range(ax, panel):
    start = min((p[0] for s in panel["series"] for p in s["points"]), default=0)
    for s in panel["series"]:
        xs = [p[0] - start for p in s["points"]]
        ys = [p[1] for p in s["points"]]
        ax.step(xs, ys, where="post", label=s["name"], linewidth=1.2)
    ax.set_xlabel("seconds", fontsize=7)
    ax.tick_params(labelsize=7)
    if panel["mappings"]:
        ticks = sorted(int(v) for v in panel["mappings"])
        ax.set_yticks(ticks, [panel["mappings"][str(t)] for t in ticks])
    ax.legend(fontsize=6, loc="best")


def main():
    data = json.load(open(sys.argv[1]))
    panels = data["panels"]
    rows = math.ceil(len(panels) / COLUMNS)
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(5 * COLUMNS, 3.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        ax.set_title(f"{panel['row']}: {panel['title']}", fontsize=9)
        instant = all(len(s["points"]) == 1 for s in panel["series"])
        (draw_instant if instant else draw_range)(ax, panel)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(data["title"], fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(sys.argv[2], dpi=80)


if __name__ == "__main__":
    main()
