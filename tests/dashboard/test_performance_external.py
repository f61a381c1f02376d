"""The Performance page with external validations (``deeppcos evaluate RUN --cohort SPEC``):
a report is picked and shown beside the internal figures — AUCs with intervals side by side,
calibration, the decision at the run's threshold, case mix, contamination, recalibration."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from dashboards import external as ext
from tests.dashboard.dashboard_helpers import no_exception, texts

OTHER = "other clinic"


@pytest.fixture(scope="module")
def validated(tabular_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Copies of the session's tabular run, each with two external reports: another synthetic
    clinic recalibrated on half its patients, and the run's own cohort (contaminated). One copy
    evaluated on its locked test part, one not (a few seconds)."""
    from deeppcos.data.synthetic import generate_cohort
    from deeppcos.evaluation.external import external_validation
    from deeppcos.pipeline.evaluate import evaluate_run

    folder = tmp_path_factory.mktemp("performance_external")
    generate_cohort(folder / "other", n_patients=120, seed=9, image_size=32)
    spec = {
        "name": OTHER,
        "patients": {
            "path": str(folder / "other" / "patients.csv"),
            "label_column": "pcos",
            "drop_columns": ["severity", "site"],
        },
    }
    (folder / "other.yaml").write_text(yaml.safe_dump(spec))
    runs = {}
    for name in ("evaluated", "unevaluated"):
        run = folder / name
        shutil.copytree(tabular_run, run)
        if name == "evaluated":
            evaluate_run(run)
        external_validation(run, folder / "other.yaml", recalibrate=0.5, check_contamination=False)
        runs[name] = run
    own = tabular_run.parent / "cohort" / "cohort.yaml"
    external_validation(runs["evaluated"], own)  # the development cohort: every image shared
    return runs


def _performance(app: Any, run: Path) -> Any:
    at = app(run).switch_page("views/performance.py").run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    return at


# Each table of the external section, by a column only it has (AppTest drops dataframe keys).
COLUMN = {
    "comparison": "internal: out of fold",
    "calibration": "ideal",
    "case mix": "standardised difference",
    "recalibration": "on the held-out part",
}


def _tables(at: Any) -> dict[str, pd.DataFrame]:
    out = {}
    for element in at.dataframe:
        frame = element.value
        for name, column in COLUMN.items():
            if column in frame.columns:
                assert name not in out, f"two {name} tables"
                out[name] = frame
    return out


def _frame(at: Any, name: str) -> pd.DataFrame:
    tables = _tables(at)
    assert name in tables, (name, list(tables))
    return tables[name]


def _chart_keys(at: Any) -> list[str]:
    from streamlit.elements.lib.utils import user_key_from_element_id

    return [user_key_from_element_id(c.proto.id) for c in at.get("plotly_chart")]


def _picker(at: Any) -> Any:
    return next(s for s in at.selectbox if s.label == "External cohort")


def _report(run: Path, cohort: str) -> tuple[Path, dict[str, Any]]:
    for folder in ext.report_folders(run):
        report = json.loads((folder / "metrics.json").read_text())
        if report["cohort"] == cohort:
            return folder, report
    raise AssertionError(cohort)


def test_an_external_report_is_shown_beside_the_internal_figures(
    app: Any, validated: dict[str, Path]
) -> None:
    run = validated["evaluated"]
    at = _performance(app, run)
    assert at.slider, "the internal page is still there"
    picker = _picker(at)
    assert len(picker.options) == 2
    chosen = next(o for o in picker.options if o.startswith(OTHER))
    assert "recalibrated on 50%" in chosen
    at = picker.select_index(picker.options.index(chosen)).run()
    no_exception(at)
    _, report = _report(run, OTHER)
    internal = json.loads((run / "evaluation" / "metrics.json").read_text())["fusion"]
    table = _frame(at, "comparison").set_index("measure")
    assert list(table.columns) == [
        "internal: out of fold",
        "internal: locked test part",
        f"external: {OTHER}",
    ]
    at_threshold = report["at_run_threshold"]
    for name, key in (
        ("ROC AUC", "roc_auc"),
        ("sensitivity at the run's threshold", "sensitivity"),
        ("Brier score", "brier"),
    ):
        entry = at_threshold[key]
        assert table.loc[name, f"external: {OTHER}"] == (
            f"{entry['value']:.3f} ({entry['ci'][0]:.3f}–{entry['ci'][1]:.3f})"
        )
        assert table.loc[name, "internal: locked test part"] == ext.with_ci(internal[key])
    assert table.loc["patients scored", f"external: {OTHER}"] == str(report["scored"])
    calibration = _frame(at, "calibration").set_index("measure")
    slope = report["calibration"]["slope"]
    assert calibration.loc["calibration slope", "here (95% CI)"] == ext.with_ci(slope)
    assert ext.with_ci(slope).startswith(f"{slope['value']:.3f} (")
    mix = _frame(at, "case mix")
    assert set(mix["model input"]) == {row["feature"] for row in report["case_mix"]["table"]}
    # Recalibration: before and after on the held-out part, the AUC said to be unchanged.
    recal = report["recalibration"]
    shown = _frame(at, "recalibration").set_index("on the held-out part")
    held = recal["held_out"]
    for name, pick in (
        ("calibration slope (1 = ideal)", lambda part: part["calibration"]["slope"]),
        ("Brier score", lambda part: part["brier"]),
    ):
        for when in ("before", "after"):
            entry = pick(held[when])
            assert shown.loc[name, f"{when} (95% CI)"] == (
                f"{entry['value']:.3f} ({entry['ci'][0]:.3f}–{entry['ci'][1]:.3f})"
            )
    words = texts(at)
    assert ext.part_sizes(recal).capitalize() in words
    assert "unchanged by the recalibration" in words
    assert "Contamination" not in words
    charts = _chart_keys(at)
    for key in ("external_roc", "external_calibration_figure", "external_recalibration_figure"):
        assert key in charts, charts
    assert at.image, "the report's decision curve"


def test_a_contaminated_report_says_so_first(app: Any, validated: dict[str, Path]) -> None:
    run = validated["evaluated"]
    at = _performance(app, run)
    picker = _picker(at)
    folder, report = next(
        (f, r) for f, r in (_report(run, c) for c in ("synthetic", OTHER)) if r["contamination"]
    )
    assert report["contamination"]["warning"]
    at = picker.select(folder.name).run()
    no_exception(at)
    warnings = [w.value for w in at.warning]
    assert any(report["contamination"]["warning"] in w for w in warnings), warnings
    assert "Logistic recalibration" not in texts(at)
    assert "recalibration" not in _tables(at) and "comparison" in _tables(at)


def test_an_unevaluated_run_shows_its_external_report_beside_out_of_fold_figures(
    app: Any, validated: dict[str, Path]
) -> None:
    at = _performance(app, validated["unevaluated"])
    words = texts(at)
    assert "has not been evaluated" in words and "External validation" in words
    table = _frame(at, "comparison")
    assert list(table.columns) == ["measure", "internal: out of fold", f"external: {OTHER}"]
    assert "recalibration" in _tables(at)


def test_a_run_without_external_reports_or_with_a_broken_one(
    app: Any, tabular_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tabular_run, run)
    at = _performance(app, run)
    assert "No external validation of this run yet" in texts(at)
    broken = run / "external" / "broken"
    broken.mkdir(parents=True)
    (broken / "metrics.json").write_text("{not json")
    at = _performance(app, run)
    assert any("cannot be shown" in w.value for w in at.warning)
    (broken / "metrics.json").write_text(json.dumps({"cohort": "old"}))
    at = _performance(app, run)
    assert any("not an external-validation report" in w.value for w in at.warning)


def test_the_helpers_read_what_the_report_writes(validated: dict[str, Path]) -> None:
    run = validated["evaluated"]
    folder, report = _report(run, OTHER)
    assert ext.read_report(folder) == report
    assert ext.label(folder, report) == f"{OTHER} ({report['scored']} scored), recalibrated on 50%"
    rows = ext.recalibration_rows(folder)
    split = report["recalibration"]["split"]
    assert (rows["part"] == "fit").sum() == split["fit"]["patients"]
    assert (rows["part"] == "held out").sum() == split["held out"]["patients"]
    table = ext.recalibration_table(report["recalibration"])
    assert table["after (95% CI)"].str.fullmatch(r"-?\d\.\d{3} \(-?\d\.\d{3}–-?\d\.\d{3}\)").all()
    mix = ext.case_mix_table(report)
    differences = mix["standardised difference"].abs().dropna().tolist()
    assert differences == sorted(differences, reverse=True)
    predictions = ext.predictions(folder)
    assert predictions is not None and len(predictions) == report["patients"]
