"""Patient-grouped, stratified k-fold splits with a locked test part.

Every unit of splitting is a *group*: by default one patient, and patients linked by duplicate or
near-duplicate images (the audit's ``patient_groups``) form one group, so no patient and no
duplicate cluster can sit in two parts. That rule is checked after the split is made, not assumed.
Patients without a label go to a separate ``unlabelled`` part: they can be scored, not trained on.
Patients the caller sets aside (``set_aside``: duplicate groups whose labels were shown to be
noise, ``split.label_noise: exclude``) go to a ``label_noise`` part: scored, never trained on or
evaluated, and the reasons kept with the split (``label_noise``).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deeppcos.exceptions import SplitError

TEST = "test"
UNLABELLED = "unlabelled"
LABEL_NOISE = "label_noise"


@dataclass(frozen=True)
class CohortSplit:
    """Which part each patient belongs to: ``fold0`` … ``fold{k-1}``, ``test``, ``unlabelled``
    or ``label_noise``; ``label_noise`` also holds, per group set aside, why (JSON records)."""

    assignments: pd.Series  # index patient_id, values part names
    n_folds: int
    seed: int
    test_fraction: float
    label_noise: list[dict[str, Any]] = field(default_factory=list)

    @property
    def test_ids(self) -> list[str]:
        return sorted(self.assignments.index[self.assignments == TEST])

    @property
    def set_aside_ids(self) -> list[str]:
        """Patients set aside as label noise (whole duplicate groups, any unlabelled members
        included): neither trained on nor evaluated."""
        return sorted(self.assignments.index[self.assignments == LABEL_NOISE])

    @property
    def development_ids(self) -> list[str]:
        """Every labelled patient outside the locked test part."""
        parts = self.assignments
        return sorted(parts.index[parts.str.startswith("fold")])

    def folds(self) -> list[tuple[list[str], list[str]]]:
        """(training ids, validation ids) for each cross-validation fold, test part excluded."""
        parts = self.assignments
        out = []
        for k in range(self.n_folds):
            name = f"fold{k}"
            out.append(
                (
                    sorted(parts.index[parts.str.startswith("fold") & (parts != name)]),
                    sorted(parts.index[parts == name]),
                )
            )
        return out

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "n_folds": self.n_folds,
            "seed": self.seed,
            "test_fraction": self.test_fraction,
            "assignments": self.assignments.to_dict(),
        }
        if self.label_noise:  # absent otherwise: older readers and files stay as they were
            out["label_noise"] = self.label_noise
        return out

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: Path | str) -> CohortSplit:
        data = json.loads(Path(path).read_text())
        series = pd.Series(data["assignments"], dtype="string").sort_index()
        return cls(
            series.rename_axis("patient_id"),
            int(data["n_folds"]),
            int(data["seed"]),
            float(data["test_fraction"]),
            list(data.get("label_noise", [])),
        )


def make_splits(
    patients: pd.DataFrame,
    *,
    n_folds: int = 5,
    test_fraction: float = 0.2,
    seed: int = 0,
    groups: pd.Series | None = None,
    set_aside: Collection[str] = (),
) -> CohortSplit:
    """Split labelled patients into a locked test part and ``n_folds`` grouped, stratified folds.

    ``groups`` maps patient_id to a group id (for example the audit's ``patient_groups``);
    patients missing from it form groups of their own. ``set_aside``: patient ids put in the
    ``label_noise`` part before splitting (whole groups: a group partly set aside is refused).
    """
    if not 2 <= n_folds <= 20:
        raise SplitError(f"n_folds must be between 2 and 20, got {n_folds}")
    if not 0.0 <= test_fraction < 0.9:
        raise SplitError(f"test_fraction must be in [0, 0.9), got {test_fraction}")
    if "label" not in patients:
        raise SplitError("the cohort has no label column; splits are stratified by label")
    ids = patients["patient_id"].astype(str).to_numpy()
    labels = patients["label"]
    group_of = _group_ids(ids, groups)
    parts = pd.Series(UNLABELLED, index=pd.Index(ids, name="patient_id"), dtype="string")
    aside = _set_aside(ids, group_of, set_aside)
    parts[aside] = LABEL_NOISE
    labelled = labels.notna().to_numpy() & ~aside
    y = labels[labelled].astype(int).to_numpy()
    idx = np.flatnonzero(labelled)
    if len(np.unique(y)) < 2:
        raise SplitError("a stratified split needs both classes; the labelled patients have one")
    minority_groups = min(len(np.unique(group_of[idx][y == c])) for c in (0, 1))
    needed = n_folds + (1 if test_fraction > 0 else 0)
    if minority_groups < needed:
        raise SplitError(
            f"only {minority_groups} independent groups in the smaller class; need at least "
            f"{needed} for {n_folds} folds{' plus a test part' if test_fraction else ''}"
        )
    develop = idx
    if test_fraction > 0:
        test_idx, develop = _first_fold(idx, y, group_of, round(1 / test_fraction), seed)
        parts.iloc[test_idx] = TEST
        y = labels.to_numpy()[develop].astype(int)
    splitter = _grouped_folds(n_folds, seed)
    for k, (_, val) in enumerate(splitter.split(develop, y, group_of[develop])):
        parts.iloc[develop[val]] = f"fold{k}"
    split = CohortSplit(parts.sort_index(), n_folds, seed, test_fraction)
    check_split(split, pd.Series(group_of, index=ids))
    return split


def _set_aside(ids: np.ndarray, group_of: np.ndarray, set_aside: Collection[str]) -> np.ndarray:
    """Mask of the patients set aside; every one must be known and its group wholly aside (a
    group split between training and the aside part would leak its duplicates)."""
    wanted = {str(p) for p in set_aside}
    mask = np.isin(ids, list(wanted))
    unknown = sorted(wanted - set(ids[mask]))
    if unknown:
        raise SplitError(f"patients to set aside are not in the cohort: {unknown[:10]}")
    partial = set(group_of[mask]) & set(group_of[~mask])
    if partial:
        raise SplitError(
            f"{len(partial)} duplicate group(s) only partly set aside, e.g. {sorted(partial)[0]!r}:"
            " set aside whole groups"
        )
    return mask


def _grouped_folds(n_splits: int, seed: int) -> Any:
    # Imported here: scikit-learn costs ~1 s to import, and every command that reads a cohort
    # imports this module while only training splits one (a cold `deeppcos explain` or
    # `predict` for one patient pays nothing for it).
    from sklearn.model_selection import StratifiedGroupKFold

    return StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)


def _group_ids(ids: np.ndarray, groups: pd.Series | None) -> np.ndarray:
    if groups is None:
        return ids.astype(object)
    mapped = pd.Series(ids).map(groups.astype(str).to_dict())
    # Patients the grouping does not know stand alone, under an id no real group can have.
    return mapped.fillna(pd.Series(["__self__" + i for i in ids])).to_numpy(dtype=object)


def _first_fold(
    idx: np.ndarray, y: np.ndarray, group_of: np.ndarray, n_splits: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    splitter = _grouped_folds(max(n_splits, 2), seed)
    rest, held = next(iter(splitter.split(idx, y, group_of[idx])))
    return idx[held], idx[rest]


def check_split(split: CohortSplit, groups: pd.Series | None = None) -> None:
    """Raise SplitError if any patient or group sits in more than one part."""
    parts = split.assignments
    if parts.index.duplicated().any():
        dupes = sorted(set(parts.index[parts.index.duplicated()]))[:10]
        raise SplitError(f"patients assigned to more than one part: {dupes}")
    if groups is None:
        return
    frame = pd.DataFrame({"part": parts, "group": groups.reindex(parts.index)}).dropna()
    spread = frame.groupby("group")["part"].nunique()
    bad = spread[spread > 1]
    if len(bad):
        example = frame[frame["group"] == bad.index[0]]
        raise SplitError(
            f"{len(bad)} group(s) of linked patients straddle parts, e.g. group {bad.index[0]!r}: "
            f"{example['part'].to_dict()}"
        )
