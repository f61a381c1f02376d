"""Charts of one patient's explanation, drawn with matplotlib's object API (no pyplot state, so
nothing is left open), shared by the HTML report (as PNG) and the PDF report (as vector)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from deeppcos.explain.wording import format_value

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from deeppcos.explain.patient import PatientExplanation

__all__ = ["LOWER", "RAISE", "contributions_figure", "draw_contributions", "draw_shares"]

RAISE = "#c0392b"  # raises the risk
LOWER = "#2471a3"  # lowers it
NEUTRAL = "#7f8c8d"


def _bars(expl: PatientExplanation, k: int) -> list[tuple[str, float, bool]]:
    """(label, logit points, is the ultrasound bar) for the top ``k`` features, the
    ultrasound images, and the rest of the features summed."""
    shares = expl.shares
    bars: list[tuple[str, float, bool]] = []
    if expl.prediction.get("p_image") is not None or shares.get("ultrasound"):
        label = "Ultrasound images" if expl.prediction.get("p_image") is not None else "No scan"
        bars.append((label, float(shares.get("ultrasound", 0.0)), True))
    top = expl.top_features(k)
    for effect in top:
        value = format_value(effect.name, effect.value)
        bars.append((f"{effect.label} = {value}", effect.logit, False))
    shown = {e.name for e in top}
    rest = [e.logit for e in expl.features if e.name not in shown]
    other = sum(rest) + shares.get("tabular_missing", 0.0) + shares.get("tabular_adjustment", 0.0)
    if rest and abs(other) >= 0.005:
        bars.append((f"{len(rest)} other tabular inputs", other, False))
    elif shares.get("tabular_missing"):
        bars.append(("No laboratory data", shares["tabular_missing"], False))
    return sorted(bars, key=lambda b: abs(b[1]))


def draw_contributions(ax: Axes, expl: PatientExplanation, k: int = 8) -> None:
    """Horizontal bars: each contribution to the fused score in logit points."""
    bars = _bars(expl, k)
    if not bars:
        ax.text(0.5, 0.5, "no prediction to explain", ha="center", va="center")
        ax.set_axis_off()
        return
    labels = [b[0] for b in bars]
    values = [b[1] for b in bars]
    colours = [RAISE if v > 0 else LOWER for v in values]
    positions = range(len(bars))
    ax.barh(positions, values, color=colours, height=0.65)
    for pos, (_, value, image) in zip(positions, bars, strict=True):
        if image:
            ax.barh(pos, value, color="none", edgecolor="black", hatch="//", height=0.65)
    ax.set_yticks(list(positions), labels, fontsize=8)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("contribution to the score (logit points; + raises, − lowers the risk)")
    bias = expl.shares.get("bias", 0.0)
    ax.set_title(
        f"score {expl.logit:+.2f} = baseline {bias:+.2f} + contributions", fontsize=9, loc="left"
    )
    ax.grid(axis="x", alpha=0.3)
    span = max(abs(v) for v in values) or 1.0
    ax.set_xlim(-1.15 * span, 1.15 * span)


def draw_shares(ax: Axes, expl: PatientExplanation) -> None:
    """Two bars: the ultrasound images' and the labs' total contributions."""
    shares = expl.shares
    names = ["Ultrasound images", "Tabular data (labs, history, signs)"]
    values = [float(shares.get("ultrasound", 0.0)), float(shares.get("tabular", 0.0))]
    colours = [RAISE if v > 0 else LOWER for v in values]
    ax.barh([1, 0], values, color=colours, height=0.55)
    ax.set_yticks([1, 0], names, fontsize=8)
    ax.axvline(0.0, color="black", linewidth=0.8)
    for y, v in zip([1, 0], values, strict=True):
        ax.text(v, y, f" {v:+.2f} ", va="center", ha="left" if v >= 0 else "right", fontsize=8)
    span = max(abs(v) for v in values) or 1.0
    ax.set_xlim(-1.4 * span, 1.4 * span)
    ax.set_xlabel("logit points")
    ax.grid(axis="x", alpha=0.3)


def contributions_figure(expl: PatientExplanation, k: int = 8) -> Figure:
    from matplotlib.figure import Figure

    n = len(_bars(expl, k))
    figure = Figure(figsize=(7.5, 0.8 + 0.32 * max(n, 2)), dpi=110, layout="constrained")
    draw_contributions(figure.add_subplot(), expl, k)
    return figure


def shares_figure(expl: PatientExplanation) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 1.5), dpi=110, layout="constrained")
    draw_shares(figure.add_subplot(), expl)
    return figure


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
