"""The command line: fast help, exit codes scripts rely on, messages instead of tracebacks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer.main
from typer.testing import CliRunner

from deeppcos.cli import app
from tests.conftest import REPO

runner = CliRunner()


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys; from deeppcos.cli import app; "
        "heavy = [m for m in ('tensorflow', 'keras', 'shap', 'pandas', 'sklearn', 'cv2', "
        "'xgboost', 'optuna', 'streamlit') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("synth", "validate", "audit", "demo"):
        assert command in result.output


def _tiny_cohort(tmp_path: Path, bad_cell: bool = False) -> Path:
    lh = ["12", "oops" if bad_cell else "5", "6"]
    pd.DataFrame({"patient_id": ["a", "b", "c"], "pcos": [1, 0, 0], "lh_iu_l": lh}).to_csv(
        tmp_path / "patients.csv", index=False
    )
    spec = tmp_path / "cohort.yaml"
    spec.write_text("name: tiny\npatients: {path: patients.csv, label_column: pcos}\n")
    return spec


def test_validate_prints_counts_and_writes_json(tmp_path: Path) -> None:
    spec = _tiny_cohort(tmp_path)
    result = runner.invoke(app, ["validate", str(spec), "--json", str(tmp_path / "v.json")])
    assert result.exit_code == 0, result.output
    assert "patients" in result.output and "0: 2, 1: 1" in result.output
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["summary"]["patients"] == 3


def test_validate_strict_exits_3_on_warnings(tmp_path: Path) -> None:
    spec = _tiny_cohort(tmp_path, bad_cell=True)
    assert runner.invoke(app, ["validate", str(spec)]).exit_code == 0
    result = runner.invoke(app, ["validate", str(spec), "--strict"])
    assert result.exit_code == 3
    assert "row 2, column 'lh_iu_l'" in result.output and "'oops'" in result.output


def test_bad_input_exits_1_with_a_message_not_a_traceback(tmp_path: Path) -> None:
    spec = _tiny_cohort(tmp_path)
    (tmp_path / "patients.csv").write_text("patient_id,pcos\na,1\na,0\n")
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 1
    assert "ids repeat" in result.output and "Traceback" not in result.output
    missing = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "spec file not found" in missing.output


def test_validate_real_kaggle_table(shared_data) -> None:
    result = runner.invoke(app, ["validate", str(REPO / "configs" / "pcos-kaggle-tabular.yaml")])
    assert result.exit_code == 0
    assert "541" in result.output and "0: 364, 1: 177" in result.output


def test_synth_then_audit_writes_reports_and_honours_fail_on(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    result = runner.invoke(app, ["synth", str(out), "-n", "40", "--image-size", "64"])
    assert result.exit_code == 0, result.output
    assert (out / "cohort.yaml").is_file() and (out / "images").is_dir()
    spec = str(out / "cohort.yaml")
    html, js = tmp_path / "a.html", tmp_path / "a.json"
    result = runner.invoke(app, ["audit", spec, "--html", str(html), "--json", str(js)])
    assert result.exit_code == 0, result.output
    assert "Verdicts" in html.read_text() and json.loads(js.read_text())["findings"]
    # Plant an exact duplicate across two patients with the same label: a 'warning' (one person
    # under two ids, or a copied file), so --fail-on warning exits 4.
    label = pd.read_csv(out / "patients.csv").set_index("patient_id")["pcos"]
    images = sorted((out / "images").glob("*.png"))
    first = images[0].name[:9]

    def another(same: bool) -> Path:
        return next(
            i for i in images if i.name[:9] != first and (label[i.name[:9]] == label[first]) == same
        )

    original = another(True).read_bytes()
    another(True).write_bytes(images[0].read_bytes())
    assert runner.invoke(app, ["audit", spec, "--fail-on", "high"]).exit_code == 0
    result = runner.invoke(app, ["audit", spec, "--fail-on", "warning"])
    assert result.exit_code == 4
    assert "byte-identical" in result.output
    # With the opposite label the copies cannot both be right: left out at load, said so, and
    # still 'high' (the labelling itself is in doubt).
    another(True).write_bytes(original)
    another(False).write_bytes(images[0].read_bytes())
    result = runner.invoke(app, ["audit", spec, "--json", "-", "--fail-on", "high"])
    assert result.exit_code == 4
    findings = {f["check"]: f for f in json.loads(result.stdout)["findings"]}
    assert findings["labels.conflicting_copies"]["figures"]["excluded"] == 2


def test_audit_rejects_an_unknown_fail_on(tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", str(_tiny_cohort(tmp_path)), "--fail-on", "always"])
    assert result.exit_code == 2


def test_demo_cohort_and_audit(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--patients", "60", "--skip-training"])
    assert result.exit_code == 0, result.output
    for name in ("audit.html", "audit.json", "cohort/cohort.yaml"):
        assert (out / name).is_file()
    assert not (out / "run").exists()


@pytest.mark.slow
def test_demo_trains_and_evaluates(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--patients", "80"])
    assert result.exit_code == 0, result.output
    assert (out / "run" / "run.json").is_file()
    assert (out / "run" / "evaluation" / "model_card.md").is_file()
    assert "locked test part" in result.output
    # Both fusion methods cross-validated, the higher out-of-fold AUC kept; severity graded.
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    methods = metrics["fusion"]["methods"]
    assert set(methods) == {"late", "intermediate"}
    auc = {m: methods[m]["oof_uncalibrated"]["roc_auc"] for m in methods}
    assert metrics["fusion"]["method"] == max(auc, key=auc.get)
    assert "quadratic_kappa" in metrics["severity"]["oof"]
    assert "severity grade" in result.output


# --- help at narrow widths -------------------------------------------------------------------

COMMANDS = (
    "synth", "validate", "audit", "criteria", "train", "evaluate", "predict", "tune", "studies",
    "serve", "explain", "dashboard", "demo",
)  # fmt: skip


def _option_names(command: Any) -> list[str]:
    return [
        name
        for param in command.params
        for name in (*param.opts, *param.secondary_opts)
        if name.startswith("--")
    ]


@pytest.mark.parametrize("width", [80, 60])
def test_help_shows_every_option_name_whole(width: int) -> None:
    """Rich's help panels cut long names to fit ("--label-correcti…" at 80 columns)."""
    group = typer.main.get_command(app)
    assert set(COMMANDS) <= set(group.commands)  # type: ignore[attr-defined]
    for name, command in [("", group), *group.commands.items()]:  # type: ignore[attr-defined]
        args = [name, "--help"] if name else ["--help"]
        result = runner.invoke(app, args, env={"COLUMNS": str(width)}, terminal_width=width)
        assert result.exit_code == 0, result.output
        for option in _option_names(command):
            whole = re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", result.output)
            assert whole, f"deeppcos {name} --help at {width} columns: {option}\n{result.output}"


# --- predict's printed lines -----------------------------------------------------------------


class _FakePredictor:
    threshold = 0.07

    def predict(self, cohort: Any) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "patient_id": ["a", "b", "c", "d"],
                "risk": [0.9, 0.01, 0.5, None],
                "decision": pd.array([True, False, True, None], dtype="boolean"),
                "modalities": ["tabular+image", "tabular+image", "tabular", "none"],
                "severity": ["severe", "none", "mild", None],
                "p_severity_none": [0.1, 0.99, 0.5, None],
                "p_severity_mild": [0.1, 0.0, 0.3, None],
                "p_severity_moderate": [0.1, 0.0, 0.1, None],
                "p_severity_severe": [0.7, 0.01, 0.1, None],
            }
        )


def test_predict_prints_sentences_not_dicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deeppcos.inference.predictor

    spec = _tiny_cohort(tmp_path, bad_cell=True)
    frame = pd.read_csv(tmp_path / "patients.csv")
    frame.assign(site_note="x").to_csv(tmp_path / "patients.csv", index=False)
    spec.write_text(
        "name: tiny\npatients: {path: patients.csv, label_column: pcos, "
        "drop_columns: [site_note]}\n"
    )
    monkeypatch.setattr(deeppcos.inference.predictor, "load_run", lambda run: _FakePredictor())
    out = tmp_path / "p.csv"
    args = ["predict", str(tmp_path), "--spec", str(spec), "--out", str(out)]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == 4
    text = result.output
    assert "{" not in text and "dropped_column" not in text, text
    assert (
        "3 patients scored: 2 with labs and images, 1 with labs only; 1 not scored (neither "
        "labs nor images); 2 flagged (risk ≥ 7.0%); written to " in text
    ), text
    assert "severity grades: 1 none, 1 mild, 0 moderate, 1 severe" in text
    # The load report: counts in words, then each entry with its file, row and column.
    assert "load report (1 warning, 1 info): 1 column dropped, 1 unreadable value" in text
    assert "info: patients.csv, column 'site_note': dropped as the spec asks" in text
    assert "warning: patients.csv, row 2, column 'lh_iu_l': not a number" in text


def test_report_shows_each_kind_and_counts_the_rest_in_words(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from deeppcos.cli import common
    from deeppcos.data.report import LoadReport

    monkeypatch.setattr(common, "console", Console(width=200))
    report = LoadReport()
    for row in range(4):
        report.add("excluded", "excluded_image", "file not found", file="images.csv", row=row)
    report.add("info", "dropped_column", "dropped as the spec asks", file="p.csv", column="x")
    report.add("warning", "out_of_range", "outside 1–15 d; set to missing", file="p.csv", row=7)
    common._print_report(report, 3, "use --report-csv FILE to list them all")
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "load report (4 excluded, 1 warning, 1 info): 4 images left out, 1 column dropped, "
        "1 value outside its plausible range",
        "  excluded: images.csv, row 0: file not found",
        "  warning: p.csv, row 7: outside 1–15 d; set to missing",
        "  info: p.csv, column 'x': dropped as the spec asks",
        "  … 3 more (3 images left out); use --report-csv FILE to list them all",
    ]


# --- command lines printed for the user to copy ----------------------------------------------


@pytest.fixture
def venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake ``project/.venv/bin`` with python and deeppcos; running python is that one."""
    bin_dir = tmp_path / "project" / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "deeppcos"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setenv("PATH", os.pathsep.join([str(tmp_path / "empty"), "/usr/bin", "/bin"]))
    monkeypatch.chdir(tmp_path / "project")
    return bin_dir


def test_deeppcos_command_when_not_on_path(venv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deeppcos.commands import command_line, deeppcos_command, python_command

    assert deeppcos_command() == ".venv/bin/deeppcos"
    assert python_command() == ".venv/bin/python"
    assert command_line("dashboard", "demo/run") == ".venv/bin/deeppcos dashboard demo/run"
    assert command_line("dashboard", "my runs/a") == ".venv/bin/deeppcos dashboard 'my runs/a'"
    monkeypatch.chdir(venv)
    assert deeppcos_command() == "./deeppcos"  # a bare name would be looked up on PATH
    elsewhere = venv.parents[2] / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # outside the project: the absolute path
    assert deeppcos_command() == str(venv / "deeppcos")


def test_deeppcos_command_when_path_finds_it(
    venv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deeppcos.commands import deeppcos_command

    monkeypatch.setenv("PATH", os.pathsep.join([str(venv), "/usr/bin"]))
    assert deeppcos_command() == "deeppcos"
    # PATH reaching the same script through a link still counts as the same.
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "deeppcos").symlink_to(venv / "deeppcos")
    monkeypatch.setenv("PATH", str(linked))
    assert deeppcos_command() == "deeppcos"
    # Another installation first on PATH: typing "deeppcos" would run that one.
    other = tmp_path / "other"
    other.mkdir()
    (other / "deeppcos").write_text("#!/bin/sh\n")
    (other / "deeppcos").chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(other), str(venv)]))
    assert deeppcos_command() == ".venv/bin/deeppcos"


def test_deeppcos_command_without_a_script_runs_the_module(venv: Path) -> None:
    from deeppcos.commands import deeppcos_command

    (venv / "deeppcos").unlink()
    assert deeppcos_command() == ".venv/bin/python -m deeppcos.cli"


def test_demo_prints_a_dashboard_command_that_works_and_evaluates_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's run folder is replaced by training, so its evaluation is the first one:
    ``force`` (recorded as a re-score) is not asked for."""
    import deeppcos.commands
    import deeppcos.pipeline.evaluate
    import deeppcos.pipeline.training
    from deeppcos.cli import demo

    out = tmp_path / "demo"
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fake_train(config: Any, target: Path, **kwargs: Any) -> Path:
        target.mkdir(parents=True)
        return target

    def fake_evaluate(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append((args, kwargs))
        return {}

    monkeypatch.setattr(deeppcos.pipeline.training, "train", fake_train)
    monkeypatch.setattr(deeppcos.pipeline.evaluate, "evaluate_run", fake_evaluate)
    monkeypatch.setattr(demo, "_print_branch_metrics", lambda run: None)
    monkeypatch.setattr(demo, "_print_evaluation", lambda result, run: None)
    monkeypatch.setattr(deeppcos.commands, "deeppcos_command", lambda: ".venv/bin/deeppcos")
    result = runner.invoke(app, ["demo", "--out", str(out), "--patients", "40"])
    assert result.exit_code == 0, result.output
    assert calls == [((out / "run",), {})]
    assert f"open the dashboard: .venv/bin/deeppcos dashboard {out / 'run'}" in result.output
