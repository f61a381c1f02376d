"""Batch scoring at scale: a large patients table scored in chunks, with bounded memory.

``score_table(run, patients, out)`` streams a CSV/TSV (pandas ``chunksize``) or Parquet file
(pyarrow ``iter_batches``) chunk by chunk. Each chunk is read exactly as ``deeppcos predict``
reads a whole table (``Cohort.from_frames``: ids, numbers, plausible ranges, all reported), joined
with its rows of the images manifest (the images are probed with the project's image checks),
scored by one predictor loaded once, and committed as one Parquet file per chunk. Memory is
bounded by the chunk size and the images manifest (one short row per image), not by the number
of patients; a set of the ids seen is kept to refuse an id that repeats across chunks (~100
bytes a patient).

Every load-report entry goes to ``<out>.report.csv`` as it happens. Each scored chunk is
committed to its own Parquet file in the folder ``<out>.partial/`` (written under a hidden
temporary name, then renamed into place), so however the run ends (Ctrl-C, SIGTERM, SIGKILL, a
crash) every finished chunk is kept, readable (``pd.read_parquet("<out>.partial")``). Run again
with the same input, run, chunk size and output, it resumes: committed chunks are not scored
again (their report entries are replayed), the rest are. The output is assembled from the chunks
under a temporary name and renamed into place only when complete; then the folder is removed.

**Distributed** (``client=`` a ``distributed.Client``, or ``scheduler=`` an address such as
``tcp://10.0.0.5:8786``, a scheduler file, or ``local:N`` for a local cluster of N processes):
one task per chunk; each worker process loads the model once (:func:`cached_predictor`, keyed by
the run path) and keeps it; the client reads the chunks, keeps at most ``max_in_flight`` tasks
running and writes the results in input order, so the output equals the single-process one.
Workers need the run folder and the image files at the same paths (a shared file system).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from deeppcos.data.cohort import Cohort
from deeppcos.data.report import LoadReport
from deeppcos.data.spec import CohortSpec, PatientsSpec, spec_from_dict
from deeppcos.exceptions import ConfigError, DataFileError, EmptyCohortError, SchemaError
from deeppcos.inference.cluster import dask_client
from deeppcos.runs.csvsafe import csv_text
from deeppcos.runs.reader import Run

__all__ = [
    "BatchResult",
    "cached_predictor",
    "iter_chunks",
    "loaded_runs",
    "model_inputs",
    "score_chunk",
    "score_table",
]

Progress = Callable[[int, int | None], None]
STREAMABLE = {".csv": ",", ".tsv": "\t", ".parquet": None}
DEFAULT_CHUNK_SIZE = 10_000

Job = tuple[CohortSpec, pd.DataFrame, "pd.DataFrame | None", str, "str | None"]
_LOADS: Counter[str] = Counter()  # run path -> times loaded in this process (for checks)


@dataclass
class BatchResult:
    out: Path
    patients: int
    chunks: int
    seconds: float
    modalities: dict[str, int]
    report_csv: Path
    report_counts: dict[str, int] = field(default_factory=dict)
    workers: int = 1
    resumed: int = 0  # chunks an interrupted run had committed, kept rather than scored again

    @property
    def patients_per_second(self) -> float:
        return self.patients / self.seconds if self.seconds else float("nan")


# --- the model, once per process ------------------------------------------------------------


@lru_cache(maxsize=4)
def cached_predictor(run: str):  # -> Predictor
    """The run's predictor, loaded once per process and kept (a Dask worker's model cache)."""
    from deeppcos.inference.predictor import load_run

    _LOADS[run] += 1
    return load_run(run)


def model_inputs(predictor: Any) -> list[str]:
    """The tabular model's input columns (derived ones included), or [] without that branch."""
    tabular = predictor.branches.get("tabular")
    return list(tabular.feature_names_) if tabular is not None else []


def loaded_runs() -> dict[str, int]:
    """How many times each run was loaded in this process (run on workers to check caching)."""
    return dict(_LOADS)


# --- reading in chunks ------------------------------------------------------------------------


def iter_chunks(path: Path, chunk_size: int) -> Iterator[pd.DataFrame]:
    """The table in chunks of raw cells, indexed by their row in the file (1 = first data row)."""
    kind = path.suffix.lower()
    if kind not in STREAMABLE:
        raise DataFileError(
            f"{path}: batch scoring streams {sorted(STREAMABLE)} files; convert {kind!r} first "
            "(or score it without --chunk-size)"
        )
    if not path.is_file():
        raise DataFileError(f"{path}: patients table not found")
    start = 1
    for chunk in _raw_chunks(path, kind, chunk_size):
        chunk.columns = [str(c) for c in chunk.columns]
        chunk.index = pd.RangeIndex(start, start + len(chunk), name="row")
        start += len(chunk)
        yield chunk


def _raw_chunks(path: Path, kind: str, chunk_size: int) -> Iterator[pd.DataFrame]:
    try:
        if kind == ".parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_size):
                yield batch.to_pandas()
        else:
            reader = pd.read_csv(
                path,
                dtype=str,
                sep=STREAMABLE[kind],
                keep_default_na=False,
                na_values=[""],
                chunksize=chunk_size,
            )
            with reader:
                yield from reader
    except (OSError, ValueError) as exc:
        raise DataFileError(
            f"{path}: could not read the table ({type(exc).__name__}: {exc})"
        ) from exc


def count_rows(path: Path) -> int | None:
    """Rows in the table, for the progress bar: Parquet metadata, or newlines of a CSV."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    lines = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            lines += block.count(b"\n")
    return max(lines - 1, 0)  # the header (quoted newlines make this an estimate)


def chunk_spec(
    training: CohortSpec | None,
    columns: list[str],
    name: str,
    categories: dict[str, list[str]] | None = None,
) -> CohortSpec:
    """How a chunk's columns are read: the training cohort's ``tables`` layout (renames, dropped
    and declared feature columns; label and site only when present, a grade ignored), else
    canonical names. ``categories`` (the run's categorical inputs) are declared, and nothing
    else is inferred to be one: a few rows must not decide what a column is."""
    from deeppcos.inference.scoring import run_categories, run_kind

    renames = training.patients.rename if training and training.patients else {}
    present = {renames.get(c.strip(), c.strip()) for c in columns}
    fixed = run_categories(categories or {}, present)
    kind = run_kind(training)
    if training is not None and training.format == "tables" and training.patients is not None:
        known = training.patients
        # As ``deeppcos.inference.scoring`` reads a whole table: label and site kept when present, a
        # severity grade ignored (it is what is predicted).
        severity = [known.severity_column] if known.severity_column in present else []
        patients = known.model_copy(
            update={
                "path": None,
                "label_column": known.label_column if known.label_column in present else None,
                "severity_column": None,
                "severity_levels": None,
                "group_column": known.group_column if known.group_column in present else None,
                "drop_columns": [*known.drop_columns, *severity],
                **fixed,
            }
        )
        return spec_from_dict(
            {
                "name": name,
                "patients": patients.model_dump(),
                "range_policy": training.range_policy,
                **kind,
            }
        )
    if training is not None and training.format != "tables" and training.patients is not None:
        raise ConfigError(
            f"the run was trained on a {training.format!r} cohort; batch scoring streams tables "
            "with canonical column names or in a 'tables' layout. Convert the table, or score it "
            "whole with 'deeppcos predict' (without --chunk-size)"
        )
    canonical = PatientsSpec(label_column=None, **fixed).model_dump()
    return spec_from_dict({"name": name, "patients": canonical, **kind})


def load_images_manifest(
    images: Path, report: LoadReport, workdir: Path
) -> tuple[pd.DataFrame, str]:
    """The images manifest (a file, or a folder laid out as ``deeppcos.inference.scoring``
    describes), paths made absolute; held in memory (one short row per image)."""
    from deeppcos.data.loaders import read_manifest
    from deeppcos.inference.scoring import images_spec

    ispec = images_spec(images, workdir)
    spec = spec_from_dict({"name": "images", "images": ispec.model_dump()})
    return read_manifest(spec, ispec, report)


# --- scoring one chunk ------------------------------------------------------------------------


def score_chunk(
    predictor: Any,
    spec: CohortSpec,
    raw: pd.DataFrame,
    images: pd.DataFrame | None,
    file: str,
    manifest_file: str | None = None,
) -> tuple[pd.DataFrame, LoadReport]:
    """Predictions for one chunk of raw rows (and its images), and what reading it reported.

    The chunk is read by :meth:`Cohort.from_frames`, as a whole table is: its report entries
    name ``file`` and the rows of the file (the chunk's index); its images are rows of the
    manifest ``load_images_manifest`` read (paths resolved there, not again)."""
    report = LoadReport()
    try:
        cohort = Cohort.from_frames(
            raw,
            images if images is not None and len(images) else None,
            spec,
            source=file,
            images_source=manifest_file,
            rows="index",
            images_resolved=True,
            report=report,
        )
    except EmptyCohortError:  # every row of this chunk was left out (each one reported)
        return pd.DataFrame(), report
    return predictor.predict(cohort), report


def _score_task(
    run: str,
    spec: CohortSpec,
    raw: pd.DataFrame,
    images: pd.DataFrame | None,
    file: str,
    manifest_file: str | None,
) -> tuple[pd.DataFrame, LoadReport]:
    return score_chunk(cached_predictor(run), spec, raw, images, file, manifest_file)


# --- the output -------------------------------------------------------------------------------


RESUME_FILE = "_resume.json"  # "_" and "." files are skipped by Parquet dataset readers


class _Output:
    """The chunks, each committed to its own Parquet file in ``<out>.partial/``; the report CSV
    written as it goes; the output assembled from the chunks when complete.

    Chunk ``i`` is committed by renaming ``chunk-<i>.parquet`` (or, when every row of it was
    left out, ``_chunk-<i>.empty``) into place, after its report text (``_chunk-<i>.report.csv``)
    and counts (``_chunk-<i>.json``): a chunk is there whole, with its report, or not at all."""

    def __init__(self, out: Path, report_csv: Path, identity: dict[str, Any]) -> None:
        self.out = out
        self.partial = out.with_name(out.name + ".partial")
        self.report_csv = report_csv
        self.rows = 0
        self.resumed = 0
        self.modalities: Counter[str] = Counter()
        self.report_counts: Counter[str] = Counter()
        self.with_rows: list[int] = []  # committed chunks that hold predictions, in input order
        discarded = self._open(identity)
        # The report starts afresh on every run; committed chunks replay theirs in order.
        self.report_csv.write_text(csv_text(LoadReport().to_frame(), index=False))
        if discarded:
            note = LoadReport()
            note.add("info", "note", discarded, file=str(self.partial))
            self.report(note)

    def _open(self, identity: dict[str, Any]) -> str | None:
        """Make the chunk folder ready; return why chunks left there were discarded, if so."""
        reason = None
        if self.partial.is_file() or self.partial.is_symlink():
            self.partial.unlink()  # an older deeppcos's single file: not resumable
            reason = "an unfinished single-file output of an older deeppcos was discarded"
        elif self.partial.is_dir() and _read_json(self.partial / RESUME_FILE) != identity:
            shutil.rmtree(self.partial)
            reason = (
                "chunks left by an interrupted run of another input, run or chunk size were "
                "discarded; scoring started again"
            )
        self.partial.mkdir(parents=True, exist_ok=True)
        if not (self.partial / RESUME_FILE).is_file():
            _commit_text(self.partial / RESUME_FILE, json.dumps(identity, indent=1))
        return reason

    def _name(self, index: int, suffix: str) -> Path:
        prefix = "chunk" if suffix == ".parquet" else "_chunk"
        return self.partial / f"{prefix}-{index:06d}{suffix}"

    def committed(self, index: int) -> bool:
        return self._name(index, ".json").is_file() and (
            self._name(index, ".parquet").is_file() or self._name(index, ".empty").is_file()
        )

    def write(self, index: int, predictions: pd.DataFrame, report: LoadReport) -> None:
        """Append the chunk's report, then commit the chunk."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        text = csv_text(report.to_frame(), index=False, header=False) if len(report) else ""
        self._append(text)
        counts = {
            "rows": len(predictions),
            "modalities": dict(Counter(predictions["modalities"].astype(str)))
            if len(predictions)
            else {},
            "report_counts": report.counts(),
        }
        _commit_text(self._name(index, ".report.csv"), text)
        _commit_text(self._name(index, ".json"), json.dumps(counts))
        if predictions.empty:
            _commit_text(self._name(index, ".empty"), "")
        else:
            table = pa.Table.from_pandas(_plain(predictions), preserve_index=False)
            _commit(self._name(index, ".parquet"), lambda tmp: pq.write_table(table, tmp))
        self._add(index, counts)

    def keep(self, index: int) -> None:
        """A chunk an interrupted run committed: replay its report, count it, do not score it."""
        self._append(self._name(index, ".report.csv").read_text(encoding="utf-8"))
        self.resumed += 1
        self._add(index, json.loads(self._name(index, ".json").read_text(encoding="utf-8")))

    def _add(self, index: int, counts: dict[str, Any]) -> None:
        self.report_counts.update(counts["report_counts"])
        if counts["rows"]:
            self.rows += counts["rows"]
            self.modalities.update(counts["modalities"])
            self.with_rows.append(index)

    def report(self, report: LoadReport) -> None:
        """Entries that belong to no chunk (the images manifest's): counted and appended."""
        self.report_counts.update(report.counts())
        if len(report):
            self._append(csv_text(report.to_frame(), index=False, header=False))

    def _append(self, text: str) -> None:
        with self.report_csv.open("a", encoding="utf-8", newline="") as handle:
            handle.write(text)

    def finish(self) -> None:
        """Assemble the chunks, in input order, into ``out`` (under a temporary name, renamed
        into place), then remove the chunk folder."""
        import pyarrow.parquet as pq

        if not self.with_rows:
            shutil.rmtree(self.partial)  # nothing scored that is worth keeping
            raise SchemaError(f"{self.out}: no patient rows to score")

        def assemble(tmp: Path) -> None:
            writer: Any = None
            try:
                for index in self.with_rows:
                    table = pq.read_table(self._name(index, ".parquet"))
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, table.schema)
                    elif table.schema != writer.schema:
                        table = table.select(writer.schema.names).cast(writer.schema)
                    writer.write_table(table)
            finally:
                if writer is not None:
                    writer.close()

        _commit(self.out, assemble)
        shutil.rmtree(self.partial)


def _commit(target: Path, write: Callable[[Path], object]) -> None:
    """Write ``target`` through ``write(temporary path)``, flush it to disk, then rename it into
    place: a reader (or a rerun after a kill) sees the whole file or none of it."""
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        write(tmp)
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _commit_text(target: Path, text: str) -> None:
    _commit(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _identity(
    run: Path, patients: Path, chunk_size: int, manifest: pd.DataFrame | None
) -> dict[str, Any]:
    """What the committed chunks depend on: a rerun resumes them only when all of it matches."""
    stat = patients.stat()
    record = Run(run).record_file
    images = None
    if manifest is not None:
        hashed = pd.util.hash_pandas_object(manifest.astype(str), index=False)
        images = hashlib.sha256(hashed.to_numpy().tobytes()).hexdigest()
    return {
        "format": 1,
        "input": str(patients.resolve()),
        "input_bytes": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "chunk_size": chunk_size,
        "run": str(run),
        "run_record": hashlib.sha256(record.read_bytes()).hexdigest() if record.is_file() else None,
        "images": images,
    }


def _plain(predictions: pd.DataFrame) -> pd.DataFrame:
    """Categoricals and objects as strings, so every chunk has the same Arrow schema."""
    out = predictions.copy()
    for column in out.columns:
        if isinstance(out[column].dtype, pd.CategoricalDtype) or out[column].dtype == object:
            out[column] = out[column].astype("string")
    return out


# --- the driver -------------------------------------------------------------------------------


def score_table(
    run: Path | str,
    patients: Path | str,
    out: Path | str,
    *,
    images: Path | str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
    client: Any = None,
    scheduler: str | None = None,
    max_in_flight: int | None = None,
) -> BatchResult:
    """Score ``patients`` (CSV/TSV/Parquet) in chunks into the Parquet file ``out``."""
    import tempfile

    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be at least 1, got {chunk_size}")
    run, patients, out = Path(run).resolve(), Path(patients), Path(out)
    if out.suffix.lower() != ".parquet":
        raise ConfigError(f"{out}: batch scoring writes Parquet; name the output *.parquet")
    if patients.suffix.lower() not in STREAMABLE:
        raise DataFileError(
            f"{patients}: batch scoring streams {sorted(STREAMABLE)} files; convert it first "
            "(or score it without --chunk-size)"
        )
    if not patients.is_file():
        raise DataFileError(f"{patients}: patients table not found")
    started = time.perf_counter()
    predictor = cached_predictor(str(run))  # on the client too: fails early on a bad run
    report_csv = out.with_name(out.stem + ".report.csv")
    with tempfile.TemporaryDirectory() as workdir:
        manifest, manifest_file = (None, None)
        manifest_report = LoadReport()
        if images is not None:
            manifest, manifest_file = load_images_manifest(
                Path(images), manifest_report, Path(workdir)
            )
        output = _Output(out, report_csv, _identity(run, patients, chunk_size, manifest))
        output.report(manifest_report)
        jobs = _Chunks(predictor, patients, chunk_size, manifest, manifest_file)
        total = count_rows(patients)
        workers = 1
        # Whatever stops this (an error, Ctrl-C, a kill), the committed chunks stay on disk.
        if client is None and scheduler is None:
            for index, job in enumerate(jobs):
                if output.committed(index):
                    output.keep(index)
                else:
                    output.write(index, *score_chunk(predictor, *job))
                _tick(progress, output.rows, total)
        else:
            workers = _distributed(
                str(run), jobs, output, client, scheduler, max_in_flight, progress, total
            )
        if manifest is not None:
            _unused_images(manifest, jobs.seen, output, manifest_file)
        output.finish()
    return BatchResult(
        out=out,
        patients=output.rows,
        chunks=jobs.chunks,
        seconds=time.perf_counter() - started,
        modalities=dict(output.modalities),
        report_csv=report_csv,
        report_counts=dict(output.report_counts),
        workers=workers,
        resumed=output.resumed,
    )


def _tick(progress: Progress | None, done: int, total: int | None) -> None:
    if progress is not None:
        progress(done, total)


class _Chunks:
    """Yields (spec, raw chunk, its images, file, manifest file) per chunk; refuses ids that
    repeat across chunks (within a chunk, ``Cohort.from_frames`` does)."""

    def __init__(
        self,
        predictor: Any,
        patients: Path,
        chunk_size: int,
        manifest: pd.DataFrame | None,
        manifest_file: str | None,
    ) -> None:
        self.training = _training_spec(predictor)
        tabular = predictor.branches.get("tabular")
        self.categories: dict[str, list[str]] = dict(getattr(tabular, "categories_", {}))
        self.patients, self.chunk_size = patients, chunk_size
        self.manifest, self.manifest_file = manifest, manifest_file
        self.by_patient = (
            manifest.groupby(manifest["patient_id"].astype(str), sort=False).indices
            if manifest is not None
            else {}
        )
        self.seen: set[str] = set()
        self.chunks = 0
        self.spec: CohortSpec | None = None

    def __iter__(self) -> Iterator[Job]:
        file = str(self.patients)
        for raw in iter_chunks(self.patients, self.chunk_size):
            if self.spec is None:
                self.spec = chunk_spec(
                    self.training, list(raw.columns), self.patients.name, self.categories
                )
            assert self.spec.patients is not None
            ids = self._new_ids(raw, self.spec.patients.id_column, file)
            self.chunks += 1
            yield self.spec, raw, self._images_of(ids), file, self.manifest_file

    def _new_ids(self, raw: pd.DataFrame, id_column: str, file: str) -> list[str]:
        from deeppcos.data.cohort import id_text

        if id_column not in raw:
            raise SchemaError(
                f"{file}: no id column {id_column!r}; the table has {list(raw.columns)}"
            )
        ids = [id_text(v) for v in raw[id_column]]
        for row, pid in zip(raw.index, ids, strict=True):
            if pid and pid in self.seen:
                raise SchemaError(
                    f"{file}: patient id {pid!r} at row {row} already appeared in an earlier row; "
                    "the table must hold one row per patient"
                )
        self.seen.update(p for p in ids if p)
        return ids

    def _images_of(self, ids: list[str]) -> pd.DataFrame | None:
        if self.manifest is None:
            return None
        rows = [i for pid in ids for i in self.by_patient.get(pid, ())]
        return self.manifest.iloc[sorted(rows)]


def _training_spec(predictor: Any) -> CohortSpec | None:
    try:
        return predictor.training_spec()
    except AttributeError:  # a predictor without the training layout: canonical names
        return None


def _unused_images(
    manifest: pd.DataFrame, seen: set[str], output: _Output, manifest_file: str | None
) -> None:
    """Images of patients absent from the table: left out, and listed in the report."""
    report = LoadReport()
    unused = manifest[~manifest["patient_id"].astype(str).isin(seen)]
    for row, value in unused["patient_id"].items():
        report.add(
            "excluded",
            "excluded_image",
            "patient id not in the patients table",
            file=manifest_file,
            row=row,
            column="patient_id",
            found=value,
        )
    if len(report):
        output.report(report)


def _distributed(
    run: str,
    jobs: _Chunks,
    output: _Output,
    client: Any,
    scheduler: str | None,
    max_in_flight: int | None,
    progress: Progress | None,
    total: int | None,
) -> int:
    """One Dask task per chunk, at most ``max_in_flight`` at once, written in input order;
    chunks an interrupted run committed are kept, not submitted."""
    own, cluster = dask_client(client, scheduler)
    try:
        workers = max(1, len(own.scheduler_info(n_workers=-1).get("workers", {})))
        window = max_in_flight or 2 * workers
        pending: deque[tuple[int, Any]] = deque()
        for index, job in enumerate(jobs):
            if output.committed(index):
                pending.append((index, None))
            else:
                pending.append((index, own.submit(_score_task, run, *job, pure=False)))
            if len(pending) >= window:
                _store(pending.popleft(), output)
                _tick(progress, output.rows, total)
        while pending:
            _store(pending.popleft(), output)
            _tick(progress, output.rows, total)
        return workers
    finally:
        if client is None:
            own.close()
            if cluster is not None:
                cluster.close()


def _store(item: tuple[int, Any], output: _Output) -> None:
    index, task = item
    if task is None:
        output.keep(index)
    else:
        output.write(index, *task.result())
