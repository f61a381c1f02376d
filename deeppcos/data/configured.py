"""The cohort a run config names, and the label corrections a run may apply to it: what
training, prediction (a run's own cohort, re-read and checked) and tuning all start from."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from deeppcos.config import RunConfig
from deeppcos.data.cohort import Cohort
from deeppcos.data.loaders import load_cohort
from deeppcos.data.spec import spec_from_dict
from deeppcos.exceptions import ConfigError

__all__ = ["SYNTHETIC_MARKER", "apply_label_corrections", "cohort_for"]

SYNTHETIC_MARKER = "deeppcos-synthetic.json"


def cohort_for(config: RunConfig, progress: Callable[[int, int], None] | None = None) -> Cohort:
    """The config's cohort; a synthetic one is generated on first use (and when its settings
    change)."""
    if config.synthetic is not None:
        return load_cohort(_synthetic_spec(config, progress))
    if config.cohort_spec is not None:
        return load_cohort(config.resolve(config.cohort_spec))
    assert config.cohort is not None
    return load_cohort(spec_from_dict(config.cohort, base_dir=config.base_dir, source=config.name))


def _synthetic_spec(config: RunConfig, progress: Callable[[int, int], None] | None) -> Path:
    from deeppcos.data.synthetic import generate_cohort

    source = config.synthetic
    assert source is not None
    folder = config.resolve(source.folder)
    settings = source.model_dump(mode="json", exclude={"folder"})
    marker = folder / SYNTHETIC_MARKER
    spec = folder / "cohort.yaml"
    if spec.is_file() and marker.is_file() and json.loads(marker.read_text()) == settings:
        return spec
    spec = generate_cohort(
        folder,
        n_patients=source.patients,
        seed=source.seed,
        image_size=source.image_size,
        with_ultrasound_columns=source.with_ultrasound_columns,
        progress=progress,
    )
    marker.write_text(json.dumps(settings))
    return spec


def apply_label_corrections(cohort: Cohort, corrections: pd.Series | None) -> dict[str, Any] | None:
    """Replace labels in place (the loaded cohort only; files are untouched); say what changed.

    A run trained with corrections keeps them in ``label_corrections.csv``; its predictor
    re-applies them when it loads the cohort, so evaluation scores the corrected labels."""
    if corrections is None or corrections.empty:
        return None
    patients = cohort.patients
    unknown = sorted(set(corrections.index.astype(str)) - set(patients["patient_id"]))
    if unknown:
        raise ConfigError(
            f"label corrections name {len(unknown)} patient(s) not in cohort "
            f"{cohort.spec.name!r}: {unknown[:10]}"
        )
    rows = patients["patient_id"].isin(corrections.index.astype(str))
    before = patients.loc[rows, ["patient_id", "label"]].set_index("patient_id")["label"]
    after = corrections.astype("Int8").reindex(before.index)
    patients.loc[rows, "label"] = after.to_numpy()
    changed = before.index[(before.astype("Float64") != after.astype("Float64")).fillna(True)]
    return {
        "patients_with_corrections": int(rows.sum()),
        "labels_changed": {str(p): [_int(before[p]), _int(after[p])] for p in changed},
    }


def _int(value: Any) -> int | None:
    return None if pd.isna(value) else int(value)
