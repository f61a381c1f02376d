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

The files are named in :mod:`deeppcos.runs.layout`, which lays the folder out.
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
from deeppcos.exceptions import RunError
from deeppcos.runs.csvsafe import write_csv
from deeppcos.runs.layout import RunFiles

RUN_RECORD = RunFiles.RECORD
# What a run folder may hold (module notes, evaluation/ and optional files): a folder holding
# nothing else but no run.json is an interrupted run (an older deeppcos deleted the old run
# before moving the new one in), which --overwrite may replace.
RUN_ENTRIES = frozenset(
    {
        RunFiles.CONFIG,
        RunFiles.COHORT,
        RunFiles.SPLIT,
        RunFiles.LOAD_REPORT,
        RunFiles.METRICS,
        RunFiles.OOF_PREDICTIONS,
        RunFiles.OOF_EMBEDDINGS,
        RunFiles.LABEL_CORRECTIONS,
        "tabular",  # the branches' folders, named after them
        "image",
        RunFiles.CURVES,
        RunFiles.FUSION,
        RunFiles.SEVERITY,
        RunFiles.EVALUATION,
        f".{RunFiles.EVALUATION}.partial",
        f".{RunFiles.EVALUATION}.replaced",
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
        staging_folder(self.final)  # = self.root, emptied of what an interrupted run left
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
        publish_folder(self.root, self.final)
        return self.final


def staging_folder(final: Path) -> Path:
    """A fresh hidden ``.<name>.partial`` beside ``final`` to write a folder into (what an
    interrupted write of the same name left there is removed)."""
    partial = _partial(final)
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    return partial


def publish_folder(partial: Path, final: Path) -> None:
    """Move a finished ``partial`` folder to ``final`` by renames only: the folder in place is
    moved aside, the new one renamed in, the old one deleted; a kill never leaves a half-deleted
    folder in place (:func:`recover` finishes or undoes the step)."""
    aside = _aside(final)
    if aside.exists():
        shutil.rmtree(aside)
    if final.exists():
        final.rename(aside)
    partial.rename(final)
    if aside.exists():
        shutil.rmtree(aside)


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
