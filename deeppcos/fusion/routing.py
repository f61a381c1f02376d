"""Which model scores a patient, and how its score becomes a calibrated risk.

**A missing modality is not evidence.** Whether a woman had a scan or labs says something about
the clinic that saw her, not about her ovaries, so no model here learns an effect of a *whole
modality* being absent. Instead each patient is *routed* by the modalities she has:

* every modality the run has (``"tabular+image"`` in a two-branch run, ``"tabular"`` in a
  tabular-only run): the **fusion model** (late or intermediate, whichever won on validation),
  fitted only on development patients who have all of them;
* one modality of a two-branch run (``"tabular"`` or ``"image"``): that **branch alone**, the
  single-modality model, trained and cross-validated on every development patient who has the
  modality;
* neither: no prediction (``"none"``).

Each route has its own calibrator, fitted on that route's *out-of-fold* scores: the fusion's on
the patients with every modality, a branch's on every development patient with that modality.
So a patient without images gets exactly the calibrated risk of the labs-only model, and one
without labs that of the image-only model. The decision threshold is one number on the
calibrated risk, chosen on the pooled out-of-fold risks of all routes.

Missing *lab values* inside the table are a different matter (a clinic orders a test when it
suspects something) and stay the tabular booster's business: it learns a default direction
for each missing feature, and the explanations say when the *absence* of a measurement moved
the score.

Whether missingness of a modality is related to the label in the development data is still
measured (:func:`missingness_report`) and reported in ``metrics.json`` and the model card, so a
reader knows when the groups differ; the models never use it.

Persistence: ``fusion/routes.json`` (plain JSON: the calibrators' numbers, base rates and
counts); no pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deeppcos._version import __version__
from deeppcos.exceptions import SchemaError
from deeppcos.fusion.calibration import Calibrator, choose_calibrator
from deeppcos.fusion.late import (
    MODALITIES,
    check_format,
    load_json,
    modality_label,
    write_json,
)

__all__ = [
    "NONE",
    "RouteModel",
    "Router",
    "full_route",
    "missingness_report",
    "routes_of",
]

NONE = "none"
ROUTES_FILE = "routes.json"
FORMAT = "deeppcos.routes"
FORMAT_VERSION = 1
FISHER_ALPHA = 0.05


def full_route(modalities: Sequence[str]) -> str:
    """The route of a patient with every modality of the run (``"tabular+image"``, …)."""
    ordered = [m for m in MODALITIES if m in modalities]
    if not ordered:
        raise SchemaError(f"no known modality among {list(modalities)}; known: {MODALITIES}")
    return "+".join(ordered)


def routes_of(frame: pd.DataFrame, modalities: Sequence[str]) -> np.ndarray:
    """Per row of ``frame`` (``p_<modality>`` columns, NaN = missing): the route label.

    Only the run's ``modalities`` count: a ``p_image`` column in a tabular-only run is ignored.
    """
    present = {
        m: (frame[f"p_{m}"].notna().to_numpy() if f"p_{m}" in frame and m in modalities else None)
        for m in MODALITIES
    }
    n = len(frame)
    tabular = present["tabular"] if present["tabular"] is not None else np.zeros(n, dtype=bool)
    image = present["image"] if present["image"] is not None else np.zeros(n, dtype=bool)
    return np.array(modality_label(tabular, image), dtype=object)


@dataclass
class RouteModel:
    """How one route's patients are scored: ``scorer`` is ``"fusion"`` (the run's fusion model)
    or ``"branch"`` (the single branch of that modality); ``base_rate`` is the share of
    positives among the patients its calibrator was fitted on (the explanations' baseline for a
    branch without its own); ``n``/``positives`` count them."""

    scorer: str
    calibrator: Calibrator
    base_rate: float
    n: int
    positives: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "scorer": self.scorer,
            "calibrator": self.calibrator.to_dict(),
            "base_rate": self.base_rate,
            "n": self.n,
            "positives": self.positives,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RouteModel:
        scorer = str(data["scorer"])
        if scorer not in ("fusion", "branch"):
            raise SchemaError(f"unknown scorer {scorer!r} (expected 'fusion' or 'branch')")
        return cls(
            scorer=scorer,
            calibrator=Calibrator.from_dict(data["calibrator"]),
            base_rate=float(data["base_rate"]),
            n=int(data["n"]),
            positives=int(data["positives"]),
        )


class Router:
    """Routes patients to the fusion model or a single branch, and calibrates each route.

    ``modalities``: the run's branches; ``routes``: route label → :class:`RouteModel`. The full
    route is always present; single-modality routes exist in runs with two branches.
    """

    def __init__(self, modalities: Sequence[str], routes: dict[str, RouteModel]) -> None:
        self.modalities = [m for m in MODALITIES if m in modalities]
        self.routes = dict(routes)
        self.full = full_route(self.modalities)
        if self.full not in self.routes:
            raise SchemaError(f"the routes lack the full route {self.full!r}: {list(routes)}")

    # --- fitting -----------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        branch_oof: pd.DataFrame,
        fused_oof: np.ndarray,
        labels: np.ndarray,
        modalities: Sequence[str],
        seed: int = 0,
    ) -> Router:
        """Calibrate every route on out-of-fold scores.

        ``branch_oof``: ``p_<modality>`` out-of-fold per development patient; ``fused_oof``: the
        fusion's out-of-fold probability (NaN off the full route); ``labels``: 0/1/NaN, same
        rows.
        """
        modalities = [m for m in MODALITIES if m in modalities]
        full = full_route(modalities)
        routes = {full: _route_model("fusion", labels, fused_oof, seed)}
        if len(modalities) > 1:
            for m in modalities:
                p = branch_oof[f"p_{m}"].to_numpy(dtype="float64")
                routes[m] = _route_model("branch", labels, p, seed)
        return cls(modalities, routes)

    # --- scoring -----------------------------------------------------------------------------

    def route(self, branch_outputs: pd.DataFrame) -> np.ndarray:
        """The route of each row (``"none"`` where the patient has no modality of the run)."""
        return routes_of(branch_outputs, self.modalities)

    def score(
        self, branch_outputs: pd.DataFrame, fused: np.ndarray, routes: np.ndarray
    ) -> np.ndarray:
        """The uncalibrated probability of each row's own route: the fusion's on the full route,
        the branch's own on a single-modality route, NaN on ``"none"``."""
        fused = np.asarray(fused, dtype="float64")
        out = np.full(len(routes), np.nan)
        for route, model in self.routes.items():
            rows = routes == route
            if not rows.any():
                continue
            if model.scorer == "fusion":
                out[rows] = fused[rows]
            else:
                out[rows] = branch_outputs[f"p_{route}"].to_numpy(dtype="float64")[rows]
        return out

    def calibrate(self, probability: np.ndarray, routes: np.ndarray) -> np.ndarray:
        """Each row's probability through its route's calibrator (NaN stays NaN)."""
        probability = np.asarray(probability, dtype="float64")
        out = np.full(len(probability), np.nan)
        for route, model in self.routes.items():
            rows = routes == route
            if rows.any():
                out[rows] = model.calibrator.transform(probability[rows])
        return out

    def calibrator(self, route: str) -> Calibrator | None:
        model = self.routes.get(route)
        return model.calibrator if model is not None else None

    def describe(self, route: str, fusion_method: str) -> str:
        """What scored a patient on this route, in words."""
        model = self.routes.get(route)
        if model is None:
            return "no prediction (neither laboratory data nor images)"
        if model.scorer == "fusion":
            return f"{fusion_method} fusion of {' and '.join(self.modalities)}"
        return f"the {route} model alone"

    # --- persistence -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "deeppcos_version": __version__,
            "modalities": self.modalities,
            "full_route": self.full,
            "routes": {route: model.to_dict() for route, model in self.routes.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Router:
        check_format(data, FORMAT, FORMAT_VERSION, "routing")
        try:
            routes = {str(k): RouteModel.from_dict(v) for k, v in dict(data["routes"]).items()}
            return cls(list(data["modalities"]), routes)
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"invalid routing parameters: {exc!r}") from exc

    def save(self, folder: Path | str) -> Path:
        path = Path(folder) / ROUTES_FILE
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, folder: Path | str) -> Router:
        return load_json(Path(folder) / ROUTES_FILE, cls.from_dict, "deeppcos train")


def _route_model(scorer: str, labels: np.ndarray, p: np.ndarray, seed: int) -> RouteModel:
    rows = ~np.isnan(labels) & ~np.isnan(p)
    y = labels[rows]
    if len(np.unique(y)) < 2:
        raise SchemaError(
            f"the {scorer} route has {int(rows.sum())} labelled development patients of one "
            "class only; it cannot be calibrated"
        )
    calibrator = choose_calibrator(y, p[rows], seed=seed)
    return RouteModel(scorer, calibrator, float(y.mean()), int(rows.sum()), int(y.sum()))


# --- is missingness informative? -----------------------------------------------------------------


def missingness_report(
    labels: np.ndarray, branch_outputs: pd.DataFrame, modalities: Sequence[str]
) -> dict[str, Any]:
    """Per modality of a two-branch run: how many labelled development patients lack it, the
    share of positives with and without it, and Fisher's exact test of the 2 × 2 table.

    Reported, never used by a model: see the module notes.
    """
    from scipy.stats import fisher_exact

    out: dict[str, Any] = {}
    if len(modalities) < 2:
        return out
    labelled = ~np.isnan(labels)
    y = labels[labelled].astype(int)
    for m in modalities:
        has = branch_outputs[f"p_{m}"].notna().to_numpy()[labelled]
        table = [
            [int(((y == 1) & has).sum()), int(((y == 0) & has).sum())],
            [int(((y == 1) & ~has).sum()), int(((y == 0) & ~has).sum())],
        ]
        with_m, without = sum(table[0]), sum(table[1])
        p_value = float(fisher_exact(table)[1]) if with_m and without else None
        out[m] = {
            "with": with_m,
            "without": without,
            "positive_share_with": table[0][0] / with_m if with_m else None,
            "positive_share_without": table[1][0] / without if without else None,
            "fisher_p": p_value,
            "informative": p_value is not None and p_value < FISHER_ALPHA,
        }
    return out


def missingness_sentence(
    modality: str, entry: dict[str, Any], label_name: str, noun: str | None = None
) -> str:
    """The report's sentence for one modality's entry of :func:`missingness_report`. ``noun``
    names the modality in the cohort's words ('chest X-ray images'); by default 'ultrasound
    images' / 'laboratory data' for a PCOS label, else 'images' / 'tabular data'."""
    if noun is None:
        pcos = label_name.strip().lower() == "pcos"
        nouns = {
            "image": "ultrasound images" if pcos else "images",
            "tabular": "laboratory data" if pcos else "tabular data",
        }
        noun = nouns.get(modality, modality)
    if not entry.get("without"):
        return f"Every development patient had {noun}."
    share_with = _percent(entry.get("positive_share_with"))
    share_without = _percent(entry.get("positive_share_without"))
    p_value = entry.get("fisher_p")
    head = (
        f"{entry['without']} of {entry['with'] + entry['without']} development patients had no "
        f"{noun}: {label_name} in {share_without} of them against {share_with} of those with "
        f"{noun} (Fisher's exact test p = {p_value:.2g})"
    )
    if entry.get("informative"):
        return (
            head + ". Having them or not is related to the label in this cohort; the model does "
            "not use that (a missing modality is not evidence), so the risk of a patient without "
            f"{noun} comes from the patient's other data alone."
        )
    return head + ": no sign that having them is related to the label."


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"
