"""A record over time: one JSONL row of headline figures per evaluation, and its plot.

`cai eval --history FILE.jsonl` appends a row per evaluation and redraws `FILE.png`; `cai iterate`
keeps `DIR/history.jsonl` in the same format (plus the iteration's own fields) and draws
`DIR/curve.png`. Each figure carries what says how far to trust it: the win rate its interval
and the `signal` verdict, the judge its calibration, so a curve of noise reads as noise.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

from cai.atomic import write_atomic

# The figures plotted, in panel order: (key, label, interval key).
PANELS = (("win_rate", "win rate vs baseline", "win_rate_ci"), ("harmlessness", "harmlessness", None),
          ("over_refusal", "over-refusal", None))


def headline(metrics: dict) -> dict:
    """The figures of one `cai eval` metrics.json that a history row keeps."""
    rel = metrics.get("judge_reliability") or {}
    cal = rel.get("calibration") or {}
    return {
        "model": metrics.get("model"),
        "baseline": metrics.get("baseline"),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n": metrics.get("n"),
        "win_rate": metrics.get("win_rate"),
        "win_rate_ci": metrics.get("win_rate_ci"),
        "signal": metrics.get("signal"),  # True, False (no signal) or None (not measured: judge uncalibrated)
        "signal_reasons": metrics.get("signal_reasons") or [],
        "harmlessness": metrics.get("harmlessness"),
        "harmlessness_baseline": metrics.get("harmlessness_baseline"),
        "over_refusal": metrics.get("over_refusal"),
        "over_refusal_baseline": metrics.get("over_refusal_baseline"),
        "refusal_reader": metrics.get("refusal_reader"),
        "compliance": {pid: {"rate_a": c.get("rate_a"), "rate_b": c.get("rate_b"), "n": c.get("n")}
                       for pid, c in (metrics.get("compliance") or {}).items()},
        "judge_reliability": {"agreement": cal.get("agreement"), "balanced_agreement": cal.get("balanced_agreement"),
                              "below_floor": cal.get("below_floor"),
                              "position_consistency": rel.get("position_consistency"),
                              "refusal_undecided": rel.get("refusal_undecided")},
        "eval": metrics.get("out"),
    }


def read(path: Path) -> list[dict]:
    """The rows of a history file; a torn last line (a crash mid-write) is left out."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def append(path: Path, row: dict) -> None:
    """Add one row; the file is rewritten whole and atomically, so a crash leaves the old or the new one."""
    rows = read(path) + [row]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _num(x) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def plot(rows: list[dict], path: Path, *, x_key: str | None = None, title: str = "") -> None:
    """The curve of `figure`, written to `path`."""
    fig = figure(rows, x_key=x_key, title=title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def figure(rows: list[dict], *, x_key: str | None = None, title: str = ""):
    """One panel per figure (and one for per-principle compliance when any row has it), one point
    per row. Win rates without signal are drawn hollow and labelled so."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    xs = [r.get(x_key) if x_key else i + 1 for i, r in enumerate(rows)]
    principles = sorted({p for r in rows for p in (r.get("compliance") or {})})
    panels = len(PANELS) + (1 if principles else 0)
    fig = Figure(figsize=(3.6 * panels, 3.4))
    FigureCanvasAgg(fig)
    for k, (key, label, ci_key) in enumerate(PANELS):
        ax = fig.add_subplot(1, panels, k + 1)
        ys = [_num(r.get(key)) for r in rows]
        if ci_key:
            lo = [max(0.0, y - _num((r.get(ci_key) or [None, None])[0])) for y, r in zip(ys, rows)]
            hi = [max(0.0, _num((r.get(ci_key) or [None, None])[1]) - y) for y, r in zip(ys, rows)]
            ax.errorbar(xs, ys, yerr=[[0 if math.isnan(v) else v for v in lo], [0 if math.isnan(v) else v for v in hi]],
                        color="#4c72b0", capsize=4, linestyle="-", marker="o")
            marked = False
            for which, mark, edge in ((False, "no signal (noise)", "#c44e52"),
                                      (None, "signal not measured", "#8c8c8c")):
                points = [(x, y) for x, y, r in zip(xs, ys, rows) if r.get("signal") is which and not math.isnan(y)]
                if points:
                    ax.scatter(*zip(*points), s=90, facecolors="white", edgecolors=edge, zorder=3, label=mark)
                    marked = True
            if marked:  # a legend without a marked point is matplotlib's warning on the user's terminal
                ax.legend(fontsize=7, loc="lower right")
            ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        else:
            ax.plot(xs, ys, marker="o", color="#4c72b0", label="model")
            base = [_num(r.get(f"{key}_baseline")) for r in rows]
            if not all(math.isnan(b) for b in base):
                ax.plot(xs, base, marker="x", color="grey", linestyle=":", label="baseline")
                ax.legend(fontsize=7)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel(x_key or "evaluation", fontsize=8)
        ax.set_xticks(xs)
    if principles:
        ax = fig.add_subplot(1, panels, panels)
        for pid in principles:
            ax.plot(xs, [_num(((r.get("compliance") or {}).get(pid) or {}).get("rate_a")) for r in rows],
                    marker="o", label=pid)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("compliance by principle", fontsize=9)
        ax.set_xlabel(x_key or "evaluation", fontsize=8)
        ax.set_xticks(xs)
        ax.legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
