"""`deeppcos tune` and `deeppcos studies` from the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from deeppcos.cli import app
from tests.tuning.conftest import write_config, write_settings

runner = CliRunner()


def test_tune_then_studies(tmp_path: Path, tiny_cohort: Path) -> None:
    config = write_config(tmp_path, tiny_cohort)
    storage = str(tmp_path / "journal.log")
    args = ["tune", "--config", str(config), "--space", str(write_settings(tmp_path)),
            "--trials", "3", "--storage", storage, "--study", "cli-study"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "decision" in result.output and "tuned.yaml" in result.output
    assert (tmp_path / "cli-study" / "tuned.yaml").is_file()

    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "--resume" in again.output

    listing = runner.invoke(app, ["studies", "--storage", storage])
    assert listing.exit_code == 0, listing.output
    assert "cli-study" in listing.output and "tabular" in listing.output


def test_tune_usage_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["tune", "--config", "x.yaml", "--target", "everything"])
    assert result.exit_code == 2
    missing = runner.invoke(app, ["tune", "--config", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 1 and "config file not found" in missing.output
    bad = runner.invoke(app, ["studies", "--storage", "redis://localhost"])
    assert bad.exit_code == 1 and "unknown scheme 'redis'" in bad.output


def test_help_lists_tune_without_importing_optuna() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from deeppcos.cli import app; "
        "out = CliRunner().invoke(app, ['tune', '--help']).output; "
        "assert '--workers' in out and '--resume' in out, out; "
        "print([m for m in ('optuna', 'xgboost', 'pandas') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
