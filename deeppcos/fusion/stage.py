"""The fusion stage's cross-validation: late and intermediate fusion scored on the same folds.

Both methods are assessed on the development patients' patient-grouped folds, so the one that
wins on validation can be chosen honestly (``deeppcos train`` with ``fusion.method: best``):

* **Late fusion** stacks the branches' *out-of-fold* probabilities; its own quality comes from a
  second level of cross-validation over the same folds (:func:`late.cross_val_fusion_oof`).
* **Intermediate fusion** joins image embeddings to the tabular features. Embeddings of
  different fold models live in different coordinate spaces, so they cannot be pooled into one
  out-of-fold table. Instead, fold k's image model (trained without fold k) embeds *every*
  development patient; an intermediate model is fitted on the other folds' embeddings and
  predicts fold k from the same model's embeddings. Fold k never influenced either model, so the
  prediction is out of fold. The training rows' embeddings come from a network that saw them
  (tighter than on new patients), exactly as after the refit, where the final image model embeds
  every development patient for the final intermediate model: cross-validation measures that
  same procedure.

Either method models only the patients who have *every* modality of the run (the full route
of :mod:`deeppcos.fusion.routing`): it is fitted on them and scores them, and a patient missing a
modality gets NaN here, because she is scored by the other branch alone.

The branch outputs are collected by ``deeppcos.pipeline.training.collect_fusion_inputs``; this
module only needs frames, so tuning can re-score the fusion many times without retraining a branch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deeppcos.exceptions import ConfigError, SchemaError
from deeppcos.fusion.intermediate import IntermediateFusion
from deeppcos.fusion.late import LateFusion, cross_val_fusion_oof, out_of_fold

__all__ = [
    "METHODS",
    "FusionInputs",
    "available_methods",
    "fusion_oof",
    "intermediate_model",
    "late_model",
]

METHODS: tuple[str, ...] = ("late", "intermediate")
LATE_PARAMS = frozenset({"C", "class_weight"})
INTERMEDIATE_PARAMS = frozenset(IntermediateFusion().get_params()) - {"seed"}


@dataclass
class FusionInputs:
    """What the fusion stage needs from the branches, for the development patients.

    ``oof``: indexed by ``patient_id``; ``fold``, ``label`` and ``p_<branch>`` (out-of-fold
    probabilities) for every enabled branch. ``tabular``: the tabular branch's design matrix
    (same index), or ``None`` without that branch. ``fold_embeddings``: fold value → per-patient
    image embeddings of every development patient from that fold's image model (index
    ``patient_id``, columns ``img_emb_*``; a NaN row for a patient without images), or ``None``.
    """

    oof: pd.DataFrame
    tabular: pd.DataFrame | None = None
    fold_embeddings: dict[Any, pd.DataFrame] | None = field(default=None)

    @property
    def branches(self) -> list[str]:
        return [c.removeprefix("p_") for c in self.oof.columns if c.startswith("p_")]

    @property
    def labels(self) -> np.ndarray:
        return self.oof["label"].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)

    @property
    def folds(self) -> np.ndarray:
        return self.oof["fold"].to_numpy()

    @property
    def complete(self) -> np.ndarray:
        """Whether each patient has every branch's prediction (the fusion's patients)."""
        return self.oof[[f"p_{b}" for b in self.branches]].notna().all(axis=1).to_numpy()


def available_methods(inputs: FusionInputs) -> list[str]:
    """Late fusion always; intermediate fusion needs both tabular features and embeddings."""
    if inputs.tabular is not None and inputs.fold_embeddings:
        return list(METHODS)
    return ["late"]


def late_model(params: Mapping[str, Any] | None = None) -> LateFusion:
    return LateFusion(**_checked(params, LATE_PARAMS, "late"))


def intermediate_model(
    params: Mapping[str, Any] | None = None, seed: int = 0
) -> IntermediateFusion:
    """An intermediate fusion model; no early stopping (no rows are left to stop on inside a
    cross-validation fold), so ``n_estimators`` is the number of rounds."""
    checked = _checked(params, INTERMEDIATE_PARAMS, "intermediate")
    settings = {"early_stopping_rounds": None, **checked}
    return IntermediateFusion(**settings, seed=seed)


def fusion_oof(
    inputs: FusionInputs,
    method: str,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Out-of-fold fused probabilities of the development patients (order of ``inputs.oof``);
    NaN for a patient who lacks a modality (see the module notes)."""
    if method not in available_methods(inputs):
        raise ConfigError(
            f"fusion method {method!r} is not available here; choose one of "
            f"{available_methods(inputs)} (intermediate fusion needs both branches)"
        )
    return fusion_method(method).oof(inputs, params, seed)


def _intermediate_oof(
    inputs: FusionInputs, params: Mapping[str, Any] | None, seed: int
) -> np.ndarray:
    assert inputs.tabular is not None and inputs.fold_embeddings is not None
    tabular = inputs.tabular.reindex(inputs.oof.index)
    fold_embeddings = inputs.fold_embeddings
    labels = inputs.labels
    folds = inputs.folds
    missing = sorted(set(pd.unique(folds)) - set(fold_embeddings), key=str)
    if missing:
        raise SchemaError(f"no image embeddings for fold(s) {missing}")

    complete = inputs.complete

    def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        embeddings = fold_embeddings[folds[test[0]]].reindex(inputs.oof.index)
        train = train[complete[train]]
        model = intermediate_model(params, seed).fit(
            tabular.iloc[train], embeddings.iloc[train], labels[train]
        )
        p = np.asarray(model.predict_proba(tabular.iloc[test], embeddings.iloc[test]))
        return np.where(complete[test], p, np.nan)

    return out_of_fold(folds, len(tabular), fit_predict)


def _checked(params: Mapping[str, Any] | None, allowed: frozenset[str], method: str) -> dict:
    params = dict(params or {})
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(
            f"fusion.{method}: unknown parameter(s) {unknown}; allowed: {sorted(allowed)}"
        )
    return params


# --- the fusion methods, in one registry -------------------------------------------------------


@dataclass(frozen=True)
class FusionMethod:
    """One fusion method and what it needs: ``needs_embeddings`` (intermediate fusion reads the
    tabular design matrix and the image embeddings; late fusion only the branches'
    probabilities), how to make one from its settings, score it out of fold, fit the final model
    and load a saved one. Training, prediction and tuning look a method up here by its name;
    training embeds every development patient when a method that may run needs embeddings, and
    the explanation words and splits the score of such a method as one model's
    (``deeppcos.explain.fusion.reads_embeddings``)."""

    name: str
    needs_embeddings: bool
    make: Callable[[Mapping[str, Any] | None, int], Any]
    load: Callable[[Path], Any]
    oof: Callable[[FusionInputs, Mapping[str, Any] | None, int], np.ndarray]
    card_sentence: str = ""  # what the model card says of the method, under its limits


def _late_oof(inputs: FusionInputs, params: Mapping[str, Any] | None, seed: int) -> np.ndarray:
    frame = inputs.oof[[f"p_{b}" for b in inputs.branches]]
    return cross_val_fusion_oof(frame, inputs.labels, inputs.folds, lambda: late_model(params))


FUSION_METHODS: dict[str, FusionMethod] = {
    "late": FusionMethod(
        "late",
        needs_embeddings=False,
        make=lambda params, seed: late_model(params),
        load=LateFusion.load,
        oof=_late_oof,
        card_sentence="Late fusion (chosen on validation): the branch outputs of patients who "
        "have every modality are stacked.",
    ),
    "intermediate": FusionMethod(
        "intermediate",
        needs_embeddings=True,
        make=intermediate_model,
        load=IntermediateFusion.load,
        oof=_intermediate_oof,
        card_sentence="Intermediate fusion (chosen on validation): image embeddings (PCA) and "
        "tabular features in one booster, for patients who have every modality.",
    ),
}


def fusion_method(name: str) -> FusionMethod:
    """The registered method called ``name``; a ConfigError naming the methods otherwise."""
    method = FUSION_METHODS.get(name)
    if method is None:
        raise ConfigError(f"unknown fusion method {name!r}; the methods are {list(FUSION_METHODS)}")
    return method


def fused_probability(
    method: str,
    model: Any,
    branch_probabilities: pd.DataFrame,
    tabular: pd.DataFrame | None,
    embeddings: pd.DataFrame | None,
) -> np.ndarray:
    """A fitted fusion model's probability for rows that have every modality: from the branch
    probabilities (late) or from the design matrix and embeddings (intermediate)."""
    if fusion_method(method).needs_embeddings:
        assert tabular is not None  # a method on embeddings runs with both branches
        return np.asarray(model.predict_proba(tabular, embeddings))
    return np.asarray(model.predict_proba(branch_probabilities))
