"""Categorical columns (issue 18 §1): declared or inferred at load, free text refused, native
categories in XGBoost, one indicator per category for linear parts, encoded by the model's own
categories at prediction, and a category the model never saw reported and scored as missing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from deeppcos.data import load_cohort
from deeppcos.exceptions import SchemaError
from deeppcos.fusion.grading import severity_inputs
from deeppcos.tabular.branch import TabularBranch, TabularParams
from deeppcos.tabular.categories import CATEGORIES_ATTR, encode, label_of, one_hot
from tests.conftest import SHARED_DATA, write_tabular_config

SITES = ["north", "south", "east"]


def _table(n: int = 160, seed: int = 0) -> pd.DataFrame:
    """Patients whose PCOS rate depends on their site (east high) and a little on LH."""
    rng = np.random.default_rng(seed)
    site = rng.choice(SITES, n)
    risk = np.where(site == "east", 0.8, 0.15)
    label = (rng.random(n) < risk).astype(int)
    return pd.DataFrame(
        {
            "patient_id": [f"P{i:03d}" for i in range(n)],
            "pcos": label,
            "site_code": site,
            "lh_iu_l": rng.normal(6 + 2 * label, 2).round(1),
        }
    )


def _load(folder: Path, table: pd.DataFrame, **patients):
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "patients.csv", index=False)
    spec = {"name": "cat", "patients": {"path": "patients.csv", "label_column": "pcos", **patients}}
    (folder / "cohort.yaml").write_text(yaml.safe_dump(spec))
    return load_cohort(folder / "cohort.yaml")


def _fit(cohort) -> TabularBranch:
    params = TabularParams(n_estimators=30, early_stopping_rounds=None, n_jobs=1)
    return TabularBranch(params, seed=0).fit(cohort, list(cohort.patients["patient_id"]))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory):
    return _load(tmp_path_factory.mktemp("cat"), _table())


@pytest.fixture(scope="module")
def branch(cohort) -> TabularBranch:
    return _fit(cohort)


def test_text_with_few_values_is_inferred_and_said_so(cohort) -> None:
    assert cohort.categorical_columns == ["site_code"]
    assert list(cohort.patients["site_code"].cat.categories) == sorted(SITES)
    (entry,) = cohort.report.by_action("categorical")
    assert entry.column == "site_code" and "east, north, south" in entry.message


def test_declared_categories_keep_their_order_and_report_outsiders(tmp_path: Path) -> None:
    table = _table(20)
    table.loc[3, "site_code"] = "west"
    cohort = _load(tmp_path, table, categorical={"site_code": ["south", "north", "east"]})
    column = cohort.patients["site_code"]
    assert list(column.cat.categories) == ["south", "north", "east"]
    assert pd.isna(column.iloc[3])
    (entry,) = [e for e in cohort.report.by_action("coerced") if e.column == "site_code"]
    assert entry.found == "west" and entry.row == 4  # the spreadsheet's row (1 = first)


def test_free_text_declared_as_categories_is_refused(tmp_path: Path) -> None:
    table = _table(40)
    table["note"] = [f"seen on day {i}" for i in range(40)]
    with pytest.raises(SchemaError, match=r"column 'note' has 40 distinct values.*max_categories"):
        _load(tmp_path, table, categorical=["note"], max_categories=20)


def test_a_text_column_listed_as_numeric_says_how_to_declare_it(tmp_path: Path) -> None:
    with pytest.raises(
        SchemaError, match=r"'site_code' should hold numbers.*patients\.categorical"
    ):
        _load(tmp_path, _table(20), feature_columns=["site_code", "lh_iu_l"])


def test_xgboost_splits_the_codes_as_categories(branch: TabularBranch, cohort) -> None:
    assert branch.categories_ == {"site_code": ["east", "north", "south"]}
    types = dict(zip(branch.booster_.feature_names, branch.booster_.feature_types, strict=True))
    assert types == {"site_code": "c", "lh_iu_l": "q"}
    p = branch.predict_proba(cohort).to_numpy()
    east = (cohort.patients["site_code"] == "east").to_numpy()
    assert p[east].mean() > p[~east].mean() + 0.3  # the site's signal was learned


def test_prediction_encodes_by_label_not_by_the_new_cohorts_order(
    branch: TabularBranch, cohort, tmp_path: Path
) -> None:
    """A new cohort whose data bring the categories in another order (only two of them, say)
    scores each patient as the same patient in the training cohort."""
    table = _table()[lambda t: t["site_code"] != "north"].drop(columns="pcos")
    new = _load(tmp_path, table.assign(pcos=np.nan))
    assert list(new.patients["site_code"].cat.categories) == ["east", "south"]
    ids = list(new.patients["patient_id"])
    expected = branch.predict_proba(cohort, ids).to_numpy()
    np.testing.assert_allclose(branch.predict_proba(new, ids).to_numpy(), expected)


def test_an_unseen_category_is_missing_and_reported_once(branch: TabularBranch, tmp_path) -> None:
    table = _table(6)
    table.loc[0, "site_code"] = "west"
    new = _load(tmp_path, table)
    design = branch.design_matrix(new)
    assert math.isnan(design.iloc[0]["site_code"])
    branch.predict_proba(new)  # scored again (predict, then explain): reported once
    (entry,) = new.report.by_action("unseen_category")
    assert (entry.row, entry.column, entry.found) == ("P000", "site_code", "west")
    assert entry.expected == "east, north, south"
    missing_site = table.assign(site_code=np.nan)
    np.testing.assert_allclose(
        branch.predict_proba(new).iloc[0],
        branch.predict_design(
            encode(missing_site.set_index("patient_id"), branch.categories_)[branch.feature_names_]
        ).iloc[0],
    )


def test_save_and_load_keep_the_categories(branch: TabularBranch, cohort, tmp_path) -> None:
    loaded = TabularBranch.load(branch.save(tmp_path / "tabular"))
    assert loaded.categories_ == branch.categories_
    np.testing.assert_array_equal(loaded.predict_proba(cohort), branch.predict_proba(cohort))


def test_linear_parts_see_one_indicator_per_category(branch: TabularBranch, cohort) -> None:
    design = branch.design_matrix(cohort)
    assert design.attrs[CATEGORIES_ATTR] == branch.categories_
    x = severity_inputs(design, None, [], design.index)
    assert [c for c in x.columns if c.startswith("site_code")] == [
        "site_code=east",
        "site_code=north",
        "site_code=south",
    ]
    first = cohort.patients["site_code"].iloc[0]
    assert x.iloc[0][f"site_code={first}"] == 1.0 and x.iloc[0].filter(like="site_code").sum() == 1
    assert one_hot(design, {}) is design
    assert label_of(branch.categories_, "site_code", 2.0) == "south"
    assert label_of(branch.categories_, "lh_iu_l", 2.0) is None


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tabular_run(tmp_path_factory.mktemp("cat-run"))


def test_an_explanation_names_the_category(run: Path) -> None:
    """'site code = east: raised the risk by …', not the category's code."""
    from deeppcos.explain.patient import explain_patient
    from deeppcos.inference.predictor import load_run

    predictor = load_run(run)
    cohort = predictor.cohort()
    east = cohort.patients.loc[cohort.patients["site_code"] == "east", "patient_id"].iloc[0]
    expl = explain_patient(predictor, str(east), cohort, saliency=None)
    (site,) = [f for f in expl.features if f.name == "site_code"]
    assert site.display == "site code = east" and site.category == "east"
    assert site.sentence(None).startswith("site code = east: raised the risk by")


def test_service_accepts_a_category_and_reports_an_unseen_one(run: Path) -> None:
    from fastapi.testclient import TestClient

    from deeppcos.inference.serve import create_app

    client = TestClient(create_app(run))
    schema = {f["name"]: f for f in client.get("/model").json()["input_schema"]["features"]}
    assert schema["site_code"]["categories"] == ["east", "north", "south"]
    patients = [
        {"patient_id": "a", "features": {"site_code": "east", "lh_iu_l": 7.0}},
        {"patient_id": "b", "features": {"site_code": "west", "lh_iu_l": 7.0}},
    ]
    body = client.post("/predict", json={"patients": patients}).json()
    unseen = [e for e in body["report"] if e["action"] == "unseen_category"]
    assert [(str(e["row"]), e["column"], e["found"]) for e in unseen] == [
        ("1", "site_code", "west")
    ]
    assert body["predictions"][0]["risk"] > body["predictions"][1]["risk"]
    refused = client.post(
        "/predict", json={"patients": [{"patient_id": "c", "features": {"lh_iu_l": "high"}}]}
    )
    assert refused.status_code == 422 and "not text" in refused.text


def _tabular_run(tmp_path: Path) -> Path:
    from deeppcos.config import load_config
    from deeppcos.pipeline.training import train

    cohort_folder = tmp_path / "cohort"
    _load(cohort_folder, _table())
    config = write_tabular_config(tmp_path, cohort_folder / "cohort.yaml", "cat")
    return train(load_config(config), tmp_path / "run")


@pytest.mark.usefixtures("shared_data")
def test_real_tables_sex_and_blood_group_are_categories(tmp_path: Path) -> None:
    """The NIH chest X-ray table's F/M and the Kaggle table's blood-group codes."""
    nih = SHARED_DATA / "chestxr8-seed-sample" / "Data_Entry_2017_v2020_subset.csv"
    spec = {
        "name": "nih",
        "label_name": "finding",
        "patients": {
            "path": str(nih),
            "id_column": "Image Index",
            "label_column": None,
            "rename": {"Patient Age": "age_years", "Patient Gender": "sex"},
            "feature_columns": ["age_years", "sex"],
            "categorical": ["sex"],
        },
    }
    (tmp_path / "nih.yaml").write_text(yaml.safe_dump(spec))
    chest = load_cohort(tmp_path / "nih.yaml")
    raw = pd.read_csv(nih)
    assert chest.patients["sex"].value_counts().to_dict() == (
        raw["Patient Gender"].value_counts().to_dict()
    )
    from tests.conftest import REPO

    kaggle = load_cohort(REPO / "configs" / "pcos-kaggle-tabular.yaml")
    groups = kaggle.patients["blood_group"]
    assert list(groups.cat.categories) == ["A+", "A-", "B+", "B-", "O+", "O-", "AB+", "AB-"]
    assert groups.value_counts()["O+"] == 206 and groups.notna().sum() == 541


def test_dashboard_shows_a_category_by_label(cohort) -> None:
    from dashboards import analysis, figures

    figure = figures.distribution_figure(cohort.patients, "site_code", "pcos")
    bars = {
        trace.name.split(" (")[0]: dict(zip(trace.x, trace.y, strict=True)) for trace in figure.data
    }
    assert set(bars) == {"no pcos", "pcos"}
    assert bars["pcos"]["east"] > bars["no pcos"]["east"]  # the site's signal, in % of the group
    assert abs(sum(bars["pcos"].values()) - 100) < 1e-6
    assert "site_code" not in set(analysis.correlations(cohort.patients, ["site_code", "lh_iu_l"]))


def test_external_case_mix_compares_each_category(run: Path, tmp_path: Path) -> None:
    """Another clinic's patients with more 'east' (and a site never seen): each category is
    a share in both cohorts with its standardised difference; the unseen one is listed."""
    from deeppcos.evaluation.external import external_validation

    table = _table(120, seed=5)
    table.loc[:59, "site_code"] = "east"
    table.loc[60:64, "site_code"] = "west"
    _load(tmp_path / "other", table)
    report = external_validation(run, tmp_path / "other" / "cohort.yaml", tmp_path / "report")
    rows = {r["feature"]: r for r in report["case_mix"]["table"]}
    east = rows["site_code=east"]
    assert east["external_mean"] > east["internal_mean"] + 0.2
    assert (
        east["standardised_difference"] > 0.5
        and "site_code=east" in (report["case_mix"]["large_shifts"])
    )
    assert rows["site_code=west"]["internal_mean"] == 0.0


def test_batch_chunks_read_categories_as_the_run_does(run: Path, tmp_path: Path) -> None:
    """Chunks of three rows: the run's categories are declared, none inferred from so few rows;
    an unseen one is reported; scores equal scoring the whole table at once."""
    from deeppcos.data import Cohort
    from deeppcos.inference.batch import score_table
    from deeppcos.inference.predictor import load_run

    table = _table(9, seed=3).drop(columns="pcos")
    table.loc[4, "site_code"] = "west"
    table.to_csv(tmp_path / "new.csv", index=False)
    result = score_table(run, tmp_path / "new.csv", tmp_path / "out.parquet", chunk_size=3)
    scored = pd.read_parquet(tmp_path / "out.parquet").set_index("patient_id")
    report = pd.read_csv(result.report_csv)
    (west,) = report[report["found"] == "west"].itertuples()
    assert west.column == "site_code" and "categories" in west.message
    whole = load_run(run).predict(
        Cohort.from_frames(table, spec={"name": "w", "patients": {"label_column": None}})
    )
    np.testing.assert_allclose(
        scored.loc[whole["patient_id"], "risk"].to_numpy(), whole["risk"].to_numpy()
    )
