"""Run folders: everything one training produced, written so that an interrupted run never
looks complete.

A run is written into ``.<name>.partial`` beside its final place and renamed into place only
after ``run.json`` (the completion record) is written, so a folder named ``<name>`` with a
``run.json`` is always whole. Ctrl-C leaves only the ``.partial`` folder, which the next run of
the same name replaces.

``--overwrite`` replaces a run by renames only, never by deleting it first: the old run is moved
aside to ``.<name>.replaced``, the new one renamed into place, then the old one deleted. A kill
at any step leaves the old run whole (in place or aside) or the new one in place; the next
``RunWriter`` of that name finishes or undoes the step before anything else (:func:`recover`).

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

from deeppcos._version import __version__
from deeppcos.runs.csvsafe import write_csv
from deeppcos.exceptions import RunError

RUN_RECORD = "run.json"
# What a run folder may hold (module notes, evaluation/ and optional files): a folder holding
# nothing else but no run.json is an interrupted run (an older deeppcos deleted the old run
# before moving the new one in), which --overwrite may replace.
RUN_ENTRIES = frozenset(
    {
        "config.yaml",
        "cohort.json",
        "split.json",
        "load_report.csv",
        "metrics.json",
        "oof_predictions.csv",
        "oof_embeddings.parquet",
        "label_corrections.csv",
        "tabular",
        "image",
        "curves",
        "fusion",
        "severity",
        "evaluation",
        ".evaluation.partial",
        ".evaluation.replaced",
    }
)
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
        self.root = _partial(self.final)
        self.aside = _aside(self.final)
        recover(self.final)  # a replace a kill interrupted: finished or undone first
        if (self.final / RUN_RECORD).exists() and not overwrite:
            raise RunError(
                f"{self.final}: a complete run is already there; pass --overwrite "
                "or choose another --out"
            )
        _check_replaceable(self.final, overwrite)
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
            write_csv(frame, target, index=False)
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
        # Renames only: the old run is never half deleted while it is the run in place.
        if self.final.exists():
            self.final.rename(self.aside)
        self.root.rename(self.final)
        if self.aside.exists():
            shutil.rmtree(self.aside)
        return self.final


def _partial(final: Path) -> Path:
    return final.parent / f".{final.name}.partial"


def _aside(final: Path) -> Path:
    return final.parent / f".{final.name}.replaced"


def recover(final: Path) -> None:
    """Finish or undo a replace that a kill interrupted (``RunWriter.finish``):

    - the old run aside and nothing in place: the new run, if complete (``run.json`` is written
      before any rename), moves in; otherwise the old run moves back;
    - a run in place and the old one (or what is left of it) aside: the old one is deleted.
    """
    aside, partial = _aside(final), _partial(final)
    if not aside.exists():
        return
    if not final.exists():
        source = partial if (partial / RUN_RECORD).is_file() else aside
        source.rename(final)
    if aside.exists():
        shutil.rmtree(aside)


def _check_replaceable(final: Path, overwrite: bool) -> None:
    """A folder at ``out`` that is neither empty nor a complete run is replaced only when it
    holds nothing but run files (an interrupted run) and --overwrite was given."""
    if not final.exists() or (final / RUN_RECORD).exists() or not any(final.iterdir()):
        return
    names = {p.name for p in final.iterdir()}
    if not names <= RUN_ENTRIES:
        raise RunError(
            f"{final}: exists and is not a deeppcos run (it holds {sorted(names - RUN_ENTRIES)[:5]}"
            "); choose another --out"
        )
    if not overwrite:
        raise RunError(
            f"{final}: an incomplete run (no {RUN_RECORD}; was a replace interrupted?); pass "
            "--overwrite to replace it, or choose another --out"
        )


def read_run_record(run: Path | str) -> dict[str, Any]:
    """The completion record of a run folder; a clear error when it is missing or incomplete."""
    run = Path(run)
    if not run.is_dir():
        if _aside(run.resolve()).is_dir():
            raise RunError(
                f"{run}: run folder not found; a 'train --overwrite' was interrupted and left it "
                f"at {_aside(run.resolve())}; run the same train command again to finish"
            )
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


def run_title(run: Path | str | None, record: dict[str, Any]) -> str:
    """How reports name a run: its config's name, and the folder when that differs (a model
    fitted in memory and not saved has no folder)."""
    if run is None:
        return f"{record.get('name') or 'model'} (not saved)"
    name = str(record.get("name") or Path(run).name)
    folder = Path(run).name
    return name if name == folder else f"{name} (folder {folder})"


def read_metrics(run: Path | str) -> dict[str, Any]:
    read_run_record(run)
    return json.loads((Path(run) / "metrics.json").read_text(encoding="utf-8"))
