"""Run folders: everything one training produced, written so that an interrupted run never
looks complete.

A run is written into ``.<name>.partial`` beside its final place and renamed into place only
after ``run.json`` (the completion record) is written, so a folder named ``<name>`` with a
``run.json`` is always whole. Ctrl-C leaves only the ``.partial`` folder, which the next run of
the same name replaces.

Layout::

    run.json             completion record: status, timings, versions, cohort fingerprint
    config.yaml          the resolved config
    cohort.json          the cohort's summary (counts, labels, load-report counts, fingerprint)
    split.json           patient -> part (fold0..k-1, test, unlabelled)
    metrics.json         out-of-fold metrics per branch (keys documented in README)
    oof_predictions.csv  patient_id, fold, label, p_tabular, p_image, route, p_fusion, risk
                         (out-of-fold only), severity grades when graded
    oof_embeddings.parquet  patient_id + image embedding columns (out-of-fold)
    tabular/             model.ubj + tabular_branch.json (XGBoost's own format, no pickle)
    image/               model.keras + image_branch.json (Keras's own format, no pickle)
    curves/              training histories (JSON) and their plots (PNG)
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from deeppcos import __version__
from deeppcos.exceptions import RunError

RUN_RECORD = "run.json"
# 2: patients routed by the modalities they have (fusion/routes.json); severity given PCOS
FORMAT_VERSION = 2


def _versions() -> dict[str, str]:
    out = {"deeppcos": __version__, "python": platform.python_version()}
    for package in ("numpy", "pandas", "scikit-learn", "xgboost", "keras", "tensorflow-cpu"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return out


class RunWriter:
    """Writes a run into a hidden partial folder and publishes it atomically on ``finish``."""

    def __init__(self, out: Path | str, *, overwrite: bool = False) -> None:
        self.final = Path(out).resolve()
        if (self.final / RUN_RECORD).exists() and not overwrite:
            raise RunError(
                f"{self.final}: a complete run is already there; pass --overwrite "
                "or choose another --out"
            )
        if (
            self.final.exists()
            and not (self.final / RUN_RECORD).exists()
            and any(self.final.iterdir())
        ):
            raise RunError(f"{self.final}: exists and is not a deeppcos run; choose another --out")
        self.root = self.final.parent / f".{self.final.name}.partial"
        if self.root.exists():
            shutil.rmtree(self.root)  # what an interrupted run of the same name left
        self.root.mkdir(parents=True)
        self.started = time.time()

    def path(self, relative: str) -> Path:
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def folder(self, relative: str) -> Path:
        target = self.root / relative
        target.mkdir(parents=True, exist_ok=True)
        return target

    def write_json(self, relative: str, data: Any) -> Path:
        target = self.path(relative)
        target.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
        return target

    def write_yaml(self, relative: str, data: Any) -> Path:
        target = self.path(relative)
        target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return target

    def write_frame(self, relative: str, frame: pd.DataFrame) -> Path:
        target = self.path(relative)
        if target.suffix == ".parquet":
            frame.to_parquet(target, index=False)
        else:
            frame.to_csv(target, index=False)
        return target

    def finish(self, record: dict[str, Any]) -> Path:
        """Write the completion record, then move the run into its final place."""
        self.write_json(
            RUN_RECORD,
            {
                "status": "complete",
                "format_version": FORMAT_VERSION,
                "name": self.final.name,  # the caller's record names the run (its config)
                "folder": self.final.name,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.started)),
                "seconds": round(time.time() - self.started, 1),
                "versions": _versions(),
                **record,
            },
        )
        if self.final.exists():
            shutil.rmtree(self.final)
        self.root.rename(self.final)
        return self.final


def read_run_record(run: Path | str) -> dict[str, Any]:
    """The completion record of a run folder; a clear error when it is missing or incomplete."""
    run = Path(run)
    if not run.is_dir():
        raise RunError(f"{run}: run folder not found")
    record = run / RUN_RECORD
    if not record.is_file():
        raise RunError(f"{run}: not a complete run (no {RUN_RECORD}); was training interrupted?")
    data = json.loads(record.read_text(encoding="utf-8"))
    version = data.get("format_version", 0)
    if version > FORMAT_VERSION:
        raise RunError(f"{run}: written by a newer deeppcos (format {version})")
    if version < FORMAT_VERSION:
        raise RunError(
            f"{run}: written by an older deeppcos (run format {version}; this version reads "
            f"{FORMAT_VERSION}); train it again with --overwrite"
        )
    return data


def run_title(run: Path | str, record: dict[str, Any]) -> str:
    """How reports name a run: its config's name, and the folder when that differs."""
    name = str(record.get("name") or Path(run).name)
    folder = Path(run).name
    return name if name == folder else f"{name} (folder {folder})"


def read_metrics(run: Path | str) -> dict[str, Any]:
    read_run_record(run)
    return json.loads((Path(run) / "metrics.json").read_text(encoding="utf-8"))
