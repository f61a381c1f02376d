"""The global view: what the models rely on across a cohort.

* **Importance**: mean |SHAP| of each tabular feature for the tabular branch (its own logit
  units), and mean |contribution| of each feature and of the ultrasound images to the *fused*
  score (what the final prediction relies on; under late fusion a feature's fused contribution is
  the meta-learner's tabular weight times its SHAP value).
* **Beeswarm** and **dependence** plots of the tabular branch's SHAP values (shap's own plots on
  the :class:`shap.Explanation` of :mod:`deeppcos.explain.tabular`); dependence plots for the top
  features, coloured by the feature shap finds interacting most.
* **Modality shares**: per patient, the ultrasound images' and the tabular data's contributions to
  the fused score, and how the share of the images is distributed.

Figures are PNG files written with matplotlib and closed after use; ``global.json`` holds the
numbers behind them. Labels speak the cohort's words (its label, its kind of images); the
images' input keeps the name ``ultrasound`` in the tables and ``global.json`` whatever the kind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from deeppcos.exceptions import SchemaError
from deeppcos.explain.fusion import ULTRASOUND, ExplainedPredictions, explain_predictions
from deeppcos.explain.wording import CohortWords, feature_label, predictor_words

if TYPE_CHECKING:
    import shap
    from matplotlib.figure import Figure

__all__ = ["PARTS", "GlobalExplanation", "global_explanation", "write_global_view"]

PARTS = ("all", "development", "test")
TOP_IMPORTANCE = 15


@dataclass
class GlobalExplanation:
    """Explanations of many patients' predictions (one run, one cohort)."""

    explained: ExplainedPredictions
    cohort: str
    run: str
    part: str
    labels: pd.Series  # the cohort's labels for these patients (NaN where unknown)
    words: CohortWords = field(default_factory=CohortWords)  # the cohort's label and images

    @property
    def tabular_shap(self) -> shap.Explanation | None:
        """The tabular branch's SHAP values of the patients it scores (some tabular data)."""
        values = self.explained.tabular_shap
        if values is None:
            return None
        scored = self.explained.predictions["p_tabular"].notna().to_numpy()
        return values[scored]

    def importance(self) -> pd.DataFrame:
        """Per input (tabular features and ``ultrasound``): ``mean_abs_shap`` (tabular branch,
        NaN for ultrasound) and ``mean_abs_fused`` / ``mean_fused`` (the score that reached the
        patient, whichever route scored her), in logit points, averaged over the patients who
        have that input's modality; sorted by ``mean_abs_fused``."""
        attribution = self.explained.attribution
        frame = attribution.frame.dropna(how="all")
        columns = [ULTRASOUND, *attribution.features]
        out = pd.DataFrame(
            {
                "mean_abs_fused": frame[columns].abs().mean(),
                "mean_fused": frame[columns].mean(),
            }
        )
        branch = self.tabular_shap
        if branch is not None and len(branch.values):
            mean_abs = np.abs(np.asarray(branch.values)).mean(axis=0)
            out["mean_abs_shap"] = pd.Series(mean_abs, index=list(branch.feature_names))
        else:
            out["mean_abs_shap"] = np.nan
        out.index.name = "input"
        return out.sort_values("mean_abs_fused", ascending=False)

    def modality_summary(self) -> dict[str, Any]:
        shares = self.explained.attribution.modality_shares().dropna(subset=["logit"])
        routes = self.explained.predictions["modalities"].value_counts().to_dict()
        fraction = shares["ultrasound_fraction"].dropna()
        return {
            "patients": len(self.explained.predictions),
            "scored": len(shares),
            "modalities": {str(k): int(v) for k, v in routes.items()},
            # None, not NaN (invalid JSON), for a modality the run or its patients lack.
            "mean_abs_logit": {
                name: _finite(shares[column].abs().mean())
                for name, column in (("ultrasound", ULTRASOUND), ("tabular", "tabular"))
            },
            "ultrasound_fraction": {
                "median": float(fraction.median()) if len(fraction) else None,
                "quartiles": [float(fraction.quantile(q)) for q in (0.25, 0.75)]
                if len(fraction)
                else None,
            },
        }

    def to_dict(self) -> dict[str, Any]:
        importance = self.importance()
        return {
            "run": self.run,
            "cohort": self.cohort,
            "part": self.part,
            "fusion_method": self.explained.attribution.method,
            "importance": json.loads(importance.reset_index().to_json(orient="records")),
            "modality_shares": self.modality_summary(),
            **self.words.to_dict(),
        }


def global_explanation(
    predictor: Any,
    cohort: Any = None,
    *,
    part: str = "all",
    patient_ids: list[str] | None = None,
) -> GlobalExplanation:
    """Explain every patient of ``part`` of the run's split (``all``, ``development`` or
    ``test``; the split applies to the run's own cohort) or the given ``patient_ids``."""
    cohort = cohort if cohort is not None else predictor.cohort()
    ids = patient_ids if patient_ids is not None else _part_ids(predictor, cohort, part)
    if not ids:
        raise SchemaError(f"run {predictor.run}: no patients to explain in part {part!r}")
    explained = explain_predictions(predictor, cohort, ids)
    labels = cohort.patients.set_index(cohort.patients["patient_id"].astype(str)).get("label")
    index = explained.predictions.index
    labels = labels.reindex(index) if labels is not None else pd.Series(np.nan, index=index)
    return GlobalExplanation(
        explained,
        cohort.spec.name,
        predictor.name,
        part,
        labels.astype(float),
        predictor_words(predictor, cohort.spec),
    )


def _part_ids(predictor: Any, cohort: Any, part: str) -> list[str]:
    ids = [str(i) for i in cohort.patients["patient_id"]]
    if part == "all":
        return ids
    if part not in PARTS:
        raise SchemaError(f"part must be one of {list(PARTS)}; got {part!r}")
    assignments = predictor.split_assignments
    if not assignments:
        raise SchemaError(f"run {predictor.name}: no split recorded; use part 'all'")
    wanted = (lambda p: p == "test") if part == "test" else (lambda p: str(p).startswith("fold"))
    return [i for i in ids if wanted(assignments.get(i, ""))]


# --- figures ------------------------------------------------------------------------------------


def write_global_view(expl: GlobalExplanation, out: Path | str, top: int = 4) -> dict[str, Path]:
    """Write the PNGs and ``global.json`` into ``out``; return ``{name: path}``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {"importance": _save(_importance_figure(expl), out / "importance.png")}
    written["modality_shares"] = _save(_shares_figure(expl), out / "modality_shares.png")
    branch = expl.tabular_shap
    if branch is not None and len(branch.values) >= 2:
        names = list(branch.feature_names)
        readable = _readable(branch)
        written["beeswarm"] = _beeswarm(readable, out / "beeswarm.png")
        order = np.argsort(-np.abs(np.asarray(branch.values)).mean(axis=0))
        for k in order[:top]:
            path = out / f"dependence_{names[k]}.png"
            written[f"dependence_{names[k]}"] = _dependence(readable, int(k), path)
    data = expl.to_dict()
    data["figures"] = {k: p.name for k, p in written.items()}
    (out / "global.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    written["json"] = out / "global.json"
    return written


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=110)
    return path


def _importance_figure(expl: GlobalExplanation) -> Figure:
    from matplotlib.figure import Figure

    table = expl.importance()
    figure = Figure(figsize=(11, 5.5), layout="constrained")
    left, right = figure.subplots(1, 2)
    fused = table["mean_abs_fused"].head(TOP_IMPORTANCE)[::-1]
    colours = ["#7d3c98" if name == ULTRASOUND else "#2471a3" for name in fused.index]
    right.barh([_label(n, expl.words) for n in fused.index], fused.to_numpy(), color=colours)
    right.set_title(f"Fused score ({expl.explained.attribution.method} fusion)", fontsize=10)
    right.set_xlabel("mean |contribution| (logit points)")
    branch = table["mean_abs_shap"].dropna().sort_values(ascending=False).head(TOP_IMPORTANCE)
    if len(branch):
        names = [_label(n, expl.words) for n in branch.index[::-1]]
        left.barh(names, branch.to_numpy()[::-1], color="#2471a3")
        left.set_xlabel("mean |SHAP value| (logit points of the tabular branch)")
    else:
        left.text(0.5, 0.5, "no tabular branch", ha="center", va="center")
    left.set_title("Tabular branch", fontsize=10)
    for axes in (left, right):
        axes.tick_params(axis="y", labelsize=8)
        axes.grid(axis="x", alpha=0.3)
    figure.suptitle(
        f"What the models rely on: {expl.cohort}, {expl.part} ({len(expl.labels)} patients)"
    )
    return figure


def _label(name: str, words: CohortWords | None = None) -> str:
    return (words or CohortWords()).images_title if name == ULTRASOUND else feature_label(name)


def _shares_figure(expl: GlobalExplanation) -> Figure:
    from matplotlib.figure import Figure

    shares = expl.explained.attribution.modality_shares()
    shares = shares.assign(label=expl.labels.reindex(shares.index)).dropna(subset=["logit"])
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    scatter, histogram = figure.subplots(1, 2)
    words = expl.words
    for value, colour, name in ((0.0, "#2471a3", words.no_label), (1.0, "#c0392b", words.label)):
        rows = shares[shares["label"] == value]
        scatter.scatter(rows["tabular"], rows[ULTRASOUND], s=12, alpha=0.7, c=colour, label=name)
    unknown = shares[shares["label"].isna()]
    if len(unknown):
        scatter.scatter(
            unknown["tabular"], unknown[ULTRASOUND], s=12, c="#7f8c8d", label="no label"
        )
    scatter.axhline(0, color="black", linewidth=0.6)
    scatter.axvline(0, color="black", linewidth=0.6)
    scatter.set_xlabel("tabular data's contribution (logit points)")
    scatter.set_ylabel(f"{words.images}' contribution (logit points)")
    scatter.set_title("Per patient: the two modalities' contributions", fontsize=10)
    scatter.legend(fontsize=8)
    fraction = shares["ultrasound_fraction"].dropna()
    histogram.hist(fraction, bins=np.linspace(0, 1, 21), color="#7d3c98")
    histogram.set_xlabel("images' share of |images| + |tabular|")
    histogram.set_ylabel("patients")
    histogram.set_title(
        f"Images' share of the evidence (median {fraction.median():.0%})"
        if len(fraction)
        else "Images' share of the evidence",
        fontsize=10,
    )
    return figure


def _beeswarm(branch: shap.Explanation, path: Path) -> Path:
    import matplotlib.pyplot as plt
    import shap

    figure = plt.figure(figsize=(9, 6.5))
    try:
        shap.plots.beeswarm(branch, max_display=TOP_IMPORTANCE, show=False, plot_size=None)
        figure.suptitle("Tabular branch: SHAP values per patient (logit points)", fontsize=11)
        figure.savefig(path, dpi=110, bbox_inches="tight")
    finally:
        plt.close(figure)
    return path


def _readable(branch: shap.Explanation) -> shap.Explanation:
    """The same values with readable feature names, for plots."""
    import shap

    return shap.Explanation(
        values=branch.values,
        base_values=branch.base_values,
        data=branch.data,
        feature_names=[feature_label(n) for n in branch.feature_names],
    )


def _dependence(branch: shap.Explanation, column: int, path: Path) -> Path:
    import matplotlib.pyplot as plt
    import shap

    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    try:
        shap.plots.scatter(branch[:, column], color=branch, ax=axes, show=False)
        axes.set_title(f"{branch.feature_names[column]}: dependence (tabular branch)", fontsize=10)
        figure.savefig(path, dpi=110, bbox_inches="tight")
    finally:
        plt.close(figure)
    return path


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
