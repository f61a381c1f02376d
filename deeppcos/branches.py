"""The kinds of branch a run can have, in one registry: what each one's settings are, how a new
one is made, how a saved one loads, and whether it holds patients out to stop on. Training,
prediction and tuning look a branch up here by its name (``tabular``, ``image``) instead of
each spelling out the kinds; a new kind of branch is one :class:`BranchKind` and one entry.

Every branch follows :class:`Branch`: ``fit(cohort, train_ids, val_ids)``,
``predict_proba(cohort, patient_ids)`` (P(label = 1) per patient), ``save(folder)`` and the
class's ``load(folder)``. The model classes are imported when a kind is used, so looking one up
imports neither XGBoost's branch nor TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from deeppcos.exceptions import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from deeppcos.data.cohort import Cohort

__all__ = ["BRANCHES", "Branch", "BranchKind", "branch_kind"]


class Branch(Protocol):
    """What a branch of a run does (the tabular and the image branch both)."""

    def fit(
        self, cohort: Cohort, train_ids: Sequence[str], val_ids: Sequence[str] | None = None
    ) -> Branch: ...

    def predict_proba(
        self, cohort: Cohort, patient_ids: Sequence[str] | None = None
    ) -> pd.Series: ...

    def save(self, folder: Path | str) -> Path: ...


@dataclass(frozen=True)
class BranchKind:
    """One kind of branch: its settings model, a new unfitted branch, a saved one loaded, and
    whether training holds patients out for early stopping (``early_stops``).

    What a kind adds beyond :class:`Branch` is flagged here, so training asks the kind rather
    than its name: ``embeds`` (``predict_patients`` also returns per-patient embeddings),
    ``designs`` (``design_matrix`` gives the model's inputs; both are what a fusion method that
    needs embeddings reads) and ``fit_progress`` (``fit`` takes a progress callback as its fourth
    argument; given the branch's settings, it says what that callback counts)."""

    name: str
    params_model: Callable[[], type[BaseModel]]
    # Any, not Branch: training also reads what a kind adds beyond the protocol (the tabular
    # design matrix and rounds kept, the image embeddings).
    new: Callable[[Any, int], Any]
    load: Callable[[Path], Any]
    early_stops: Callable[[Any], bool]
    embeds: bool  # it also returns per-patient embeddings (intermediate fusion's input)
    designs: bool = False  # it gives its design matrix (intermediate fusion's tabular input)
    fit_progress: Callable[[Any], str] | None = None  # what fit's progress counts; None: none


def _tabular_params() -> type[BaseModel]:
    from deeppcos.tabular.branch import TabularParams

    return TabularParams


def _new_tabular(params: Any, seed: int) -> Branch:
    from deeppcos.tabular.branch import TabularBranch

    return TabularBranch(params, seed=seed)


def _load_tabular(folder: Path) -> Any:
    from deeppcos.tabular.branch import TabularBranch

    return TabularBranch.load(folder)


def _image_params() -> type[BaseModel]:
    from deeppcos.image.params import ImageParams  # no TensorFlow import: validation is cheap

    return ImageParams


def _new_image(params: Any, seed: int) -> Branch:
    from deeppcos.image.branch import ImageBranch

    return ImageBranch(params, seed=seed)


def _load_image(folder: Path) -> Any:
    # Loaded at first use: a run scoring labs-only patients never imports TensorFlow.
    from deeppcos.image.lazy import LazyImageBranch

    return LazyImageBranch(folder)


BRANCHES: dict[str, BranchKind] = {
    "tabular": BranchKind(
        "tabular",
        _tabular_params,
        _new_tabular,
        _load_tabular,
        # A booster set to a fixed number of rounds trains on every training patient.
        early_stops=lambda params: params.early_stopping_rounds is not None,
        embeds=False,
        designs=True,
    ),
    "image": BranchKind(
        "image",
        _image_params,
        _new_image,
        _load_image,
        # A frozen-embedding head has nothing to stop: it trains on every training patient.
        early_stops=lambda params: not params.frozen,
        embeds=True,
        # A frozen backbone embeds the images once; a trained network reports its epochs.
        fit_progress=lambda params: "images embedded" if params.frozen else "epochs",
    ),
}


def branch_kind(name: str) -> BranchKind:
    """The registered kind called ``name``; a ConfigError naming the kinds otherwise."""
    kind = BRANCHES.get(name)
    if kind is None:
        raise ConfigError(f"unknown branch {name!r}; the branches are {sorted(BRANCHES)}")
    return kind
