"""External validation: a run scored on another cohort read with its own spec."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from deeppcos.cli import app
from deeppcos.evaluation.external import external_validation, net_benefit
from deeppcos.exceptions import SchemaError


@pytest.fixture(scope="module")
def other_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another synthetic cohort (other seed), read through a spec that drops AMH, one of the
    model's inputs, and keeps only the older half of the women: another case mix."""
    from deeppcos.data.synthetic import generate_cohort

    folder = tmp_path_factory.mktemp("external")
    generate_cohort(folder / "cohort", n_patients=160, seed=9, image_size=32)
    table = pd.read_csv(folder / "cohort" / "patients.csv")
    older = table[table["age_years"] >= table["age_years"].median()]
    older.to_csv(folder / "older.csv", index=False)
    spec = {
        "name": "older women",
        "patients": {
            "path": str(folder / "older.csv"),
            "label_column": "pcos",
            "drop_columns": ["amh_ng_ml", "severity", "site"],
        },
    }
    path = folder / "older.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def run_copy(tabular_run: Path, tmp_path: Path) -> Path:
    """The session's tiny run, copied (its model card is written to), with a model card."""
    copy = tmp_path / "run"
    shutil.copytree(tabular_run, copy)
    (copy / "evaluation").mkdir(exist_ok=True)
    (copy / "evaluation" / "model_card.md").write_text("# Model card\n\nInternal figures.\n")
    return copy


def test_the_report_covers_discrimination_calibration_decision_and_case_mix(
    run_copy: Path, other_cohort: Path
) -> None:
    result = external_validation(run_copy, other_cohort)
    at = result["at_run_threshold"]
    low, high = at["roc_auc"]["ci"]
    assert low <= at["roc_auc"]["value"] <= high and at["roc_auc"]["value"] > 0.6
    calibration = result["calibration"]
    for key in ("in_the_large", "slope"):
        entry = calibration[key]
        assert entry["ci"][0] <= entry["value"] <= entry["ci"][1]
    assert 0 < result["threshold_for_target_sensitivity"]["threshold_here"] < 1
    mix = result["case_mix"]
    assert mix["absent_inputs"] == ["amh_ng_ml"]
    rows = {row["feature"]: row for row in mix["table"]}
    assert rows["amh_ng_ml"]["absent_here"] and rows["amh_ng_ml"]["external_missing"] == 1.0
    assert rows["age_years"]["standardised_difference"] > 0.5  # the older half
    assert "age_years" in mix["large_shifts"]
    folder = run_copy / "external" / "older-women"
    for name in (
        "metrics.json",
        "predictions.csv",
        "roc.png",
        "reliability.png",
        "decision_curve.png",
        "case_mix.csv",
        "model_card.md",
    ):
        assert (folder / name).is_file(), name
    assert json.loads((folder / "metrics.json").read_text())["cohort"] == "older women"


def test_the_model_card_gets_one_section_per_cohort(run_copy: Path, other_cohort: Path) -> None:
    external_validation(run_copy, other_cohort, check_contamination=False)
    external_validation(run_copy, other_cohort, check_contamination=False)  # again: replaced
    card = (run_copy / "evaluation" / "model_card.md").read_text()
    assert card.startswith("# Model card") and "Internal figures." in card
    assert card.count("## External validation: older women") == 1


def test_net_benefit_by_hand() -> None:
    y = np.array([1, 1, 0, 0, 0])
    risk = np.array([0.9, 0.2, 0.6, 0.1, 0.05])
    table = net_benefit(y, risk, np.array([0.5]))
    # At 50%: called 0.9 (TP) and 0.6 (FP): 1/5 − 1/5 × 1 = 0; everyone: 2/5 − 3/5 = −0.2.
    assert table.loc[0, "model"] == pytest.approx(0.0)
    assert table.loc[0, "treat_all"] == pytest.approx(-0.2)
    assert table.loc[0, "treat_none"] == 0


def test_the_bootstrap_fits_weigh_patients_as_if_their_rows_were_repeated() -> None:
    # The calibration intervals resample through the shared core as weights: a weighted fit
    # must be the fit on the resampled rows.
    from deeppcos.evaluation.external import _calibration, _intercept, _logistic, _logit

    rng = np.random.default_rng(0)
    risk = rng.uniform(0.05, 0.95, 80)
    y = (rng.random(80) < risk**1.5).astype(int)
    logit = _logit(risk)
    counts = np.bincount(rng.integers(0, 80, 80), minlength=80).astype(float)
    rows = np.repeat(np.arange(80), counts.astype(int))
    assert _logistic(y, logit, counts) == pytest.approx(_logistic(y[rows], logit[rows]), abs=1e-8)
    assert _intercept(y, logit, counts) == pytest.approx(_intercept(y[rows], logit[rows]), abs=1e-8)
    once, again = _calibration(y, risk, seed=4), _calibration(y, risk, seed=4)
    assert once == again  # seeded: reproducible
    for key in ("in_the_large", "slope"):
        low, high = once[key]["ci"]
        assert low <= once[key]["value"] <= high


def test_an_unlabelled_cohort_is_refused(tabular_run: Path, other_cohort: Path, tmp_path) -> None:
    spec = yaml.safe_load(other_cohort.read_text())
    spec["patients"]["label_column"] = None
    spec["patients"]["drop_columns"].append("pcos")
    path = tmp_path / "unlabelled.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SchemaError, match="no labels"):
        external_validation(tabular_run, path, tmp_path / "out")


def test_the_cli_prints_the_figures(run_copy: Path, other_cohort: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", str(run_copy), "--cohort", str(other_cohort)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the console wraps at 80 columns
    for words in ("ROC AUC", "calibration slope", "inputs absent here: amh_ng_ml", "report:"):
        assert words in text


# --- recalibration on a stated part, scored on the rest ------------------------------------------


@pytest.fixture(scope="module")
def recalibrated(
    tabular_run: Path, other_cohort: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict]:
    """The session's run copied, with a model card, validated once with --recalibrate 0.5."""
    run = tmp_path_factory.mktemp("recalibrated") / "run"
    shutil.copytree(tabular_run, run)
    (run / "evaluation").mkdir(exist_ok=True)
    (run / "evaluation" / "model_card.md").write_text("# Model card\n")
    result = external_validation(run, other_cohort, recalibrate=0.5, check_contamination=False)
    return run, result


def test_recalibration_is_fitted_on_its_part_and_scored_on_the_rest(
    recalibrated: tuple[Path, dict],
) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import brier_score_loss, roc_auc_score

    from deeppcos.evaluation.external import FIT, HELD_OUT

    run, result = recalibrated
    recal = result["recalibration"]
    folder = Path(result["folder"])
    table = pd.read_csv(folder / "recalibration_split.csv", dtype={"patient_id": str})
    # Every scored patient once, in one part; stratified: each class halved.
    assert table["patient_id"].is_unique and set(table["part"]) == {FIT, HELD_OUT}
    assert len(table) == result["scored"]
    for label in (0, 1):
        counts = table[table["label"] == label]["part"].value_counts()
        assert abs(counts[FIT] - counts[HELD_OUT]) <= 1
    fit, rest = table[table["part"] == FIT], table[table["part"] == HELD_OUT]
    split = recal["split"]
    assert split[FIT] == {"patients": len(fit), "positives": int(fit["label"].sum())}
    assert split[HELD_OUT] == {"patients": len(rest), "positives": int(rest["label"].sum())}
    assert split["seed"] == json.loads((run / "metrics.json").read_text())["seed"] == 3
    # The model of the calibration slope, fitted on the fitting part only.
    logit = np.log(fit["risk"] / (1 - fit["risk"])).to_numpy().reshape(-1, 1)
    model = LogisticRegression(C=np.inf, max_iter=1000).fit(logit, fit["label"])
    assert recal["coefficients"]["intercept"] == pytest.approx(model.intercept_[0], abs=1e-3)
    assert recal["coefficients"]["slope"] == pytest.approx(model.coef_[0, 0], abs=1e-3)
    # Scored on the rest: Brier before and after from the file, intervals around the values.
    held = recal["held_out"]
    y = rest["label"].to_numpy()
    for when, column in (("before", "risk"), ("after", "risk_recalibrated")):
        part = held[when]
        assert part["n"] == len(rest)
        assert part["brier"]["value"] == pytest.approx(brier_score_loss(y, rest[column]), abs=1e-5)
        for entry in (part["brier"], part["calibration"]["in_the_large"], part["sensitivity"]):
            assert entry["ci"][0] <= entry["value"] <= entry["ci"][1]
    # Recalibrating in the large on half the patients brings the rest's intercept toward 0.
    before, after = (held[w]["calibration"]["in_the_large"]["value"] for w in ("before", "after"))
    assert abs(after) < abs(before)
    # Discrimination: the same ranking, so the same AUC, given once and said to be unchanged.
    auc = held["discrimination"]["roc_auc"]["value"]
    assert auc == pytest.approx(roc_auc_score(y, rest["risk"]), abs=1e-9)
    assert auc == pytest.approx(roc_auc_score(y, rest["risk_recalibrated"]), abs=1e-9)
    assert "unchanged" in held["discrimination"]["note"] and "roc_auc" not in held["after"]
    cut = held["threshold_for_target_sensitivity"]
    assert cut["sensitivity"]["value"] is not None and 0 < cut["chosen_on_fitting_part"] < 1
    assert (folder / "recalibration_reliability.png").stat().st_size > 1000
    saved = json.loads((folder / "metrics.json").read_text())["recalibration"]
    assert saved["split"] == recal["split"]


def test_the_model_card_reports_the_recalibration_and_its_parts(
    recalibrated: tuple[Path, dict],
) -> None:
    from deeppcos.evaluation.model_card import with_ci

    run, result = recalibrated
    recal = result["recalibration"]
    held = recal["held_out"]
    card = (run / "evaluation" / "model_card.md").read_text()
    section = (Path(result["folder"]) / "model_card.md").read_text()
    assert section in card
    split = recal["split"]
    assert "### Logistic recalibration, fitted on 50% of the scored patients" in section
    assert f"Fitted on {split['fit']['patients']} patients" in section
    assert f"held-out {split['held out']['patients']}" in section
    assert "recalibration_split.csv" in section and f"seed {split['seed']}" in section
    for when in ("before", "after"):
        for entry in (
            held[when]["calibration"]["in_the_large"],
            held[when]["calibration"]["slope"],
            held[when]["brier"],
            held[when]["sensitivity"],
            held[when]["specificity"],
        ):
            assert with_ci(entry) in section
    assert f"ROC AUC on the held-out part {with_ci(held['discrimination']['roc_auc'])}" in section
    assert "unchanged by the recalibration" in section


def test_the_split_is_by_patient_stratified_seeded_and_keeps_linked_patients_together() -> None:
    from deeppcos.evaluation.external import FIT, recalibration_split

    ids = [f"P{i:03d}" for i in range(90)]
    labels = pd.Series([1] * 30 + [0] * 60, index=ids)
    # Images of one woman filed under two ids: patients linked in pairs, and one triple.
    groups = pd.Series({pid: f"g{i // 2}" for i, pid in enumerate(ids)})
    groups[["P000", "P001", "P002"]] = "triple"
    parts = recalibration_split(labels, 0.4, seed=5, groups=groups)
    assert list(parts.index) == ids
    assert (pd.DataFrame({"p": parts, "g": groups}).groupby("g")["p"].nunique() == 1).all()
    assert 10 <= (parts[labels == 1] == FIT).sum() <= 14  # 40% of 30, give or take a pair
    assert 22 <= (parts[labels == 0] == FIT).sum() <= 26
    assert parts.equals(recalibration_split(labels, 0.4, seed=5, groups=groups))
    assert not parts.equals(recalibration_split(labels, 0.4, seed=6, groups=groups))
    alone = recalibration_split(labels, 0.5, seed=5)
    assert (alone[labels == 1] == FIT).sum() == 15 and (alone[labels == 0] == FIT).sum() == 30


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.2])
def test_a_fraction_outside_0_1_is_refused(
    tabular_run: Path, other_cohort: Path, tmp_path: Path, fraction: float
) -> None:
    from deeppcos.exceptions import SplitError

    with pytest.raises(SplitError, match=r"--recalibrate .*strictly between 0 and 1"):
        external_validation(tabular_run, other_cohort, tmp_path / "out", recalibrate=fraction)
    assert not (tmp_path / "out").exists()


def test_too_few_patients_in_a_part_is_refused_before_anything_is_written(
    tabular_run: Path, other_cohort: Path, tmp_path: Path
) -> None:
    from deeppcos.evaluation.external import recalibration_split
    from deeppcos.exceptions import SplitError

    refusal = r"--recalibrate 0.1: the fitting part would hold .* at least 10 of each class"
    with pytest.raises(SplitError, match=refusal):
        external_validation(
            tabular_run, other_cohort, tmp_path / "out", recalibrate=0.1, check_contamination=False
        )
    assert not (tmp_path / "out").exists()
    one_class = pd.Series(1, index=[f"P{i}" for i in range(40)])
    with pytest.raises(SplitError, match="0 negative"):
        recalibration_split(one_class, 0.5, seed=0)


def test_a_report_without_recalibration_drops_an_earlier_one(
    recalibrated: tuple[Path, dict], other_cohort: Path, tmp_path: Path
) -> None:
    run, result = recalibrated
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    folder = copy / "external" / Path(result["folder"]).name
    assert (folder / "recalibration_split.csv").is_file()
    again = external_validation(copy, other_cohort, check_contamination=False)
    assert "recalibration" not in again
    assert not (folder / "recalibration_split.csv").exists()
    assert not (folder / "recalibration_reliability.png").exists()
    card = (copy / "evaluation" / "model_card.md").read_text()
    assert "Logistic recalibration" not in card and card.count("## External validation") == 1


def test_the_cli_recalibrates_and_refuses_nonsense(run_copy: Path, other_cohort: Path) -> None:
    runner = CliRunner()
    command = ["evaluate", str(run_copy), "--cohort", str(other_cohort)]
    result = runner.invoke(app, [*command, "--recalibrate", "0.5"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for words in ("recalibration fitted on", "before", "after", "unchanged by the recalibration"):
        assert words in text
    assert (run_copy / "external" / "older-women" / "recalibration_split.csv").is_file()
    without_cohort = ["evaluate", str(run_copy), "--recalibrate", "0.5"]
    for args in ([*command, "--recalibrate", "1.5"], without_cohort):
        refused = runner.invoke(app, args)
        assert refused.exit_code == 2 and "--recalibrate" in refused.output, refused.output
