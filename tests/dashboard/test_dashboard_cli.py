"""``deeppcos dashboard`` and ``deeppcos demo``'s dashboard hand-off, without a server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deeppcos import cli
from deeppcos.cli import app

runner = CliRunner()


def test_dashboard_command_serves_the_app_headless_on_loopback() -> None:
    command = cli.dashboard_command(8600, "127.0.0.1")
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert Path(command[4]) == cli.dashboard_app() and cli.dashboard_app().is_file()
    options = dict(zip(command[5::2], command[6::2], strict=True))
    assert options["--server.port"] == "8600"
    assert options["--server.address"] == "127.0.0.1"
    assert options["--server.headless"] == "true"
    help_text = runner.invoke(app, ["dashboard", "--help"]).output
    assert "--port" in help_text and "127.0.0.1" in help_text


def test_dashboard_passes_the_run_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def fake_call(command: list[str], env: dict[str, str]) -> int:
        seen.update(command=command, env=env)
        return 0

    monkeypatch.setattr(subprocess, "call", fake_call)
    result = runner.invoke(app, ["dashboard", str(tmp_path / "run"), "--port", "8610"])
    assert result.exit_code == 0, result.output
    assert seen["env"]["DEEPPCOS_RUN"] == str((tmp_path / "run").resolve())
    assert "8610" in seen["command"]
    assert "not a complete run" in " ".join(result.output.split())
    assert "http://127.0.0.1:8610" in result.output


def _fake_training(monkeypatch: pytest.MonkeyPatch, run: Path) -> None:
    """The demo's training and evaluation replaced by a run trained once for these tests; its
    audit (real) computed once for the two invocations, which write the same cohort."""
    import json

    import deeppcos.audit.checks
    import deeppcos.pipeline.evaluate
    import deeppcos.pipeline.training

    monkeypatch.setattr(deeppcos.pipeline.training, "train", lambda *a, **k: run)
    stored = json.loads((run / "evaluation" / "metrics.json").read_text())
    monkeypatch.setattr(deeppcos.pipeline.evaluate, "evaluate_run", lambda *a, **k: stored)
    audit, memo = deeppcos.audit.checks.audit_cohort, {}

    def audit_once(cohort: Any, **kw: Any) -> Any:
        key = cohort.fingerprint()
        if key not in memo:
            memo[key] = audit(cohort, **kw)
        return memo[key]

    monkeypatch.setattr(deeppcos.audit.checks, "audit_cohort", audit_once)


def test_demo_ends_by_printing_the_dashboard_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dashboard_run: Path
) -> None:
    _fake_training(monkeypatch, dashboard_run)
    started: list[Any] = []
    monkeypatch.setattr(cli.demo, "start_dashboard", lambda run, *a: started.append(run) or 0)
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--patients", "12"])
    assert result.exit_code == 0, result.output
    assert f"deeppcos dashboard {out / 'run'}" in result.output
    assert started == [], "without --dashboard the demo ends; it starts no server"
    result = runner.invoke(app, ["demo", "--out", str(out), "--patients", "12", "--dashboard"])
    assert result.exit_code == 0, result.output
    assert started == [out / "run"]
