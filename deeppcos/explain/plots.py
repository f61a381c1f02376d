"""Charts of one patient's explanation, drawn with matplotlib's object API (no pyplot state, so
nothing is left open), shared by the HTML report (as PNG) and the PDF report (as vector)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from deeppcos.explain.fusion import reads_embeddings
from deeppcos.explain.wording import CohortWords

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from deeppcos.explain.patient import PatientExplanation

__all__ = ["LOWER", "RAISE", "contributions_figure", "draw_contributions", "draw_shares"]

RAISE = "#c0392b"  # raises the risk
LOWER = "#2471a3"  # lowers it
NEUTRAL = "#7f8c8d"


def _words(expl: Any) -> CohortWords:
    """The explanation's cohort words (PCOS and ultrasound for an object without them)."""
    words = getattr(expl, "words", None)
    return words if isinstance(words, CohortWords) else CohortWords()


def _bars(expl: PatientExplanation, k: int) -> list[tuple[str, float, str]]:
    """(label, logit points, kind) for the images when she has them (kind ``"image"``, named
    by the cohort's modality), the top ``k`` features (``"measured"``, or ``"absent"`` for a
    test not done) and the rest of the features summed (``"rest"``). The images' share is
    ``shares["ultrasound"]`` whatever the modality (the key the formats keep)."""
    shares = expl.shares
    bars: list[tuple[str, float, str]] = []
    if "ultrasound" in shares:
        bars.append((_words(expl).images_title, float(shares["ultrasound"]), "image"))
    top = expl.top_features(k)
    bars += [(e.display, e.logit, "measured" if e.measured else "absent") for e in top]
    shown = {e.name for e in top}
    rest = [e.logit for e in expl.features if e.name not in shown]
    other = sum(rest) + shares.get("tabular_adjustment", 0.0)
    if rest and abs(other) >= 0.005:
        bars.append((f"{len(rest)} other tabular inputs", other, "rest"))
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
    # The images' bar is hatched; a test not done is dotted: its bar is the effect of the
    # absence, not a finding.
    hatches = {"image": ("black", "//"), "absent": ("white", "..")}
    for pos, (_, value, kind) in zip(positions, bars, strict=True):
        if kind in hatches:
            edge, hatch = hatches[kind]
            ax.barh(pos, value, color="none", edgecolor=edge, hatch=hatch, height=0.65)
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


SHARE_NAMES = {"ultrasound": "Ultrasound images", "tabular": "Tabular data (labs, history, signs)"}


def share_names(words: CohortWords) -> dict[str, str]:
    """The modality bars' names in the cohort's words (keys as in ``expl.shares``)."""
    table = "Tabular data (labs, history, signs)" if words.pcos else "Tabular data"
    return {"ultrasound": words.images_title, "tabular": table}


def draw_shares(ax: Axes, expl: PatientExplanation) -> None:
    """One bar per modality she has: its total contribution."""
    shares = expl.shares
    labels = share_names(_words(expl))
    present = [key for key in labels if key in shares]
    names = [labels[key] for key in present]
    values = [float(shares[key]) for key in present]
    colours = [RAISE if v > 0 else LOWER for v in values]
    positions = list(range(len(values)))[::-1]
    ax.barh(positions, values, color=colours, height=0.55)
    ax.set_yticks(positions, names, fontsize=8)
    ax.axvline(0.0, color="black", linewidth=0.8)
    for y, v in zip(positions, values, strict=True):
        ax.text(v, y, f" {v:+.2f} ", va="center", ha="left" if v >= 0 else "right", fontsize=8)
    span = max((abs(v) for v in values), default=0.0) or 1.0
    ax.set_xlim(-1.4 * span, 1.4 * span)
    ax.set_xlabel(
        "logit points (parts of one model's score)"
        if reads_embeddings(getattr(expl, "fusion_method", None))
        else "logit points"
    )
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
