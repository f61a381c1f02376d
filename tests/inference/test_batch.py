"""Batch scoring: chunked streaming equals whole-table prediction; Dask equals single-process."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deeppcos.exceptions import ConfigError, DataFileError, SchemaError
from deeppcos.inference.batch import count_rows, iter_chunks, score_table


def _table(run: Path, copies: int = 5) -> pd.DataFrame:
    """The run's synthetic patients repeated under new ids (a larger table to stream)."""
    source = pd.read_csv(run.parent / "cohort" / "patients.csv")
    return pd.concat(
        [source.assign(patient_id=source["patient_id"] + f"-{k}") for k in range(copies)],
        ignore_index=True,
    )


def _whole(run: Path, path: Path) -> pd.DataFrame:
    """What the library gives for the whole table in one go (the reference)."""
    from deeppcos.data.loaders import load_cohort
    from deeppcos.data.spec import spec_from_dict
    from deeppcos.inference.predictor import load_run

    spec = spec_from_dict(
        {
            "name": "whole",
            "patients": {
                "path": str(path),
                "label_column": "pcos",
                "severity_column": "severity",
                "severity_levels": ["none", "mild", "moderate", "severe"],
                "group_column": "site",
            },
        }
    )
    return load_run(run).predict(load_cohort(spec))


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a["patient_id"]) == list(b["patient_id"])
    for column in ("p_tabular", "probability", "risk"):
        np.testing.assert_allclose(a[column].astype(float), b[column].astype(float), rtol=1e-12)
    assert list(a["modalities"]) == list(b["modalities"])
    assert a["decision"].astype("boolean").equals(b["decision"].astype("boolean"))
    assert list(a["severity"].astype("string")) == list(b["severity"].astype("string"))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_chunked_scoring_equals_whole_table(tabular_run: Path, tmp_path: Path, suffix: str) -> None:
    table = _table(tabular_run)
    path = tmp_path / f"patients{suffix}"
    if suffix == ".csv":
        table.to_csv(path, index=False)
    else:
        table.to_parquet(path, index=False)
    ticks: list[tuple[int, int | None]] = []
    result = score_table(
        tabular_run,
        path,
        tmp_path / "out.parquet",
        chunk_size=37,
        progress=lambda d, t: ticks.append((d, t)),
    )
    out = pd.read_parquet(result.out)
    assert result.patients == len(table) == len(out) and result.chunks == -(-len(table) // 37)
    assert ticks[-1] == (len(table), len(table))
    _same(out, _whole(tabular_run, path if suffix == ".csv" else _as_csv(table, tmp_path)))
    assert sum(result.modalities.values()) == len(table)
    assert not (tmp_path / "out.parquet.partial").exists()


def _as_csv(table: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "same.csv"
    table.to_csv(path, index=False)
    return path


def test_bad_cells_are_reported_with_their_file_row(tabular_run: Path, tmp_path: Path) -> None:
    table = _table(tabular_run, 2).astype({"lh_iu_l": object})
    table.loc[100, "lh_iu_l"] = "oops"
    table.loc[101, "fsh_iu_l"] = 5052.0
    path = tmp_path / "patients.csv"
    table.to_csv(path, index=False)
    result = score_table(tabular_run, path, tmp_path / "out.parquet", chunk_size=30)
    report = pd.read_csv(result.report_csv)
    coerced = report[report["action"] == "coerced"].iloc[0]
    assert (coerced["row"], coerced["column"], coerced["found"]) == (101, "lh_iu_l", "oops")
    assert report[report["action"] == "out_of_range"].iloc[0]["row"] == 102
    warnings = {k: v for k, v in result.report_counts.items() if not k.startswith("info/")}
    assert warnings == {"warning/coerced": 1, "warning/out_of_range": 1}
    assert result.report_counts["info/dropped_column"] == result.chunks  # the severity grade


def test_repeated_id_across_chunks_is_an_error(tabular_run: Path, tmp_path: Path) -> None:
    table = _table(tabular_run, 2)
    table.loc[len(table) - 1, "patient_id"] = table.loc[0, "patient_id"]
    path = tmp_path / "patients.csv"
    table.to_csv(path, index=False)
    with pytest.raises(SchemaError, match=rf"row {len(table)} already appeared"):
        score_table(tabular_run, path, tmp_path / "out.parquet", chunk_size=50)
    # What was scored before the error is kept apart, never under the final name.
    assert not (tmp_path / "out.parquet").exists()
    assert (tmp_path / "out.parquet.partial").exists()


def test_images_manifest_is_joined_per_chunk(tabular_run: Path, tmp_path: Path) -> None:
    cohort = tabular_run.parent / "cohort"
    manifest = pd.read_csv(cohort / "images.csv")
    extra = pd.DataFrame([{"image_id": "x", "patient_id": "NOBODY", "path": manifest["path"][0]}])
    pd.concat([manifest, extra]).to_csv(tmp_path / "images.csv", index=False)
    # A copy, not a symlink: images that resolve outside the manifest's folder are refused.
    shutil.copytree(cohort / "images", tmp_path / "images")
    result = score_table(
        tabular_run,
        cohort / "patients.csv",
        tmp_path / "out.parquet",
        images=tmp_path / "images.csv",
        chunk_size=25,
    )
    report = pd.read_csv(result.report_csv)
    unused = report[report["action"] == "excluded_image"]
    assert list(unused["found"]) == ["NOBODY"]
    assert result.patients == len(pd.read_csv(cohort / "patients.csv"))


def test_inputs_are_checked(tabular_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Parquet"):
        score_table(tabular_run, tmp_path / "x.csv", tmp_path / "out.csv")
    with pytest.raises(DataFileError, match="not found"):
        score_table(tabular_run, tmp_path / "x.csv", tmp_path / "out.parquet")
    (tmp_path / "x.xlsx").write_bytes(b"")
    with pytest.raises(DataFileError, match="streams"):
        list(iter_chunks(tmp_path / "x.xlsx", 10))
    with pytest.raises(ConfigError, match="chunk_size"):
        score_table(tabular_run, tmp_path / "x.csv", tmp_path / "out.parquet", chunk_size=0)


def test_count_rows(tmp_path: Path) -> None:
    pd.DataFrame({"patient_id": list("abc")}).to_csv(tmp_path / "t.csv", index=False)
    assert count_rows(tmp_path / "t.csv") == 3


@pytest.mark.slow
def test_dask_local_cluster_equals_single_process(tabular_run: Path, tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    path = tmp_path / "patients.csv"
    _table(tabular_run, 4).to_csv(path, index=False)
    single = score_table(tabular_run, path, tmp_path / "single.parquet", chunk_size=40)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        result = score_table(
            tabular_run, path, tmp_path / "dask.parquet", chunk_size=40, client=client
        )
        loads = client.run(
            lambda: __import__("deeppcos.inference.batch").inference.batch.loaded_runs()
        )
    assert result.workers == 2 and result.chunks == single.chunks > 2
    pd.testing.assert_frame_equal(pd.read_parquet(result.out), pd.read_parquet(single.out))
    # One model load per worker process, however many chunks it scored.
    assert sorted(sum(counts.values()) for counts in loads.values()) == [1, 1]
