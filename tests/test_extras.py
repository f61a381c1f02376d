"""Optional extras: the base install works on tables alone, and each feature whose extra is
missing says, in one sentence, which extra and which command installs it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from deeppcos.exceptions import DeepPCOSError, MissingExtraError
from deeppcos.extras import EXTRAS, install_command, require
from tests.conftest import REPO

# Every package an extra provides (import names); opencv stays in the base install.
BLOCKED = sorted({module for modules in EXTRAS.values() for module in modules})

# Runs in a fresh interpreter where none of BLOCKED can be imported, as after a plain
# `pip install deeppcos`: a meta-path finder installed first raises ModuleNotFoundError for them
# (and anything under them).
WITHOUT_EXTRAS = r"""
import json, sys
from pathlib import Path

BLOCKED = set(json.loads(sys.argv[1]))


class Missing:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Missing)

import yaml
from typer.testing import CliRunner

from deeppcos.cli import app
from deeppcos.exceptions import MissingExtraError

tmp = Path(sys.argv[2])
runner = CliRunner()
out = {"tmp": str(tmp)}

# A tabular-only cohort: the synthetic one, without its images section.
from deeppcos.data.loaders import load_cohort
from deeppcos.data.synthetic import generate_cohort

spec = yaml.safe_load(generate_cohort(tmp / "cohort", n_patients=60, image_size=32).read_text())
del spec["images"]
tabular = tmp / "cohort" / "tabular.yaml"
tabular.write_text(yaml.safe_dump(spec))
cohort = load_cohort(tabular)
out["patients"], out["images"] = len(cohort.patients), len(cohort.images)

from deeppcos.audit.checks import audit_cohort

out["audit"] = type(audit_cohort(cohort)).__name__

config = {
    "name": "tabular-only",
    "seed": 0,
    "cohort_spec": str(tabular),
    "split": {"n_folds": 2, "test_fraction": 0.2},
    "tabular": {"enabled": True, "params": {"n_estimators": 10, "n_jobs": 1}},
    "image": {"enabled": False},
}
(tmp / "tabular.yaml").write_text(yaml.safe_dump(config))
run = tmp / "run"
trained = runner.invoke(app, ["train", "-c", str(tmp / "tabular.yaml"), "--out", str(run)])
assert trained.exit_code == 0, trained.output
out["run"] = (run / "run.json").is_file()

from deeppcos.explain import explain_patient
from deeppcos.inference.predictor import load_run

predictor = load_run(run)
patient = str(cohort.patients["patient_id"].iloc[0])
explanation = explain_patient(predictor, patient)
out["explained"] = len(explanation.features)
report = runner.invoke(
    app, ["explain", str(run), "--patient", patient, "--out", str(tmp / "report.html")]
)
assert report.exit_code == 0, report.output
out["report"] = (tmp / "report.html").is_file()


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return {"exit_code": result.exit_code, "output": result.output}


def raised(call):
    try:
        call()
    except MissingExtraError as exc:
        return str(exc)
    return None


out["serve"] = cli("serve", run)
out["dashboard"] = cli("dashboard", run)
config["image"] = {"enabled": True, "params": {"image_size": 32}}
(tmp / "image.yaml").write_text(yaml.safe_dump(config))
out["train_image"] = cli("train", "-c", tmp / "image.yaml", "--out", tmp / "image-run")
out["embed"] = cli("embed", "-c", tmp / "image.yaml")
patients = tmp / "cohort" / "patients.csv"
out["predict_dask"] = cli("predict", run, "--patients", patients, "--out", tmp / "p.parquet",
                          "--dask", "local:1")


def image_branch():
    from deeppcos.image.branch import ImageBranch

    ImageBranch()


def serve_module():
    import deeppcos.inference.serve  # noqa: F401


def postgres():
    from deeppcos.tuning.storage import open_storage

    open_storage("postgresql://user:secret@127.0.0.1:9/none")


out["image_branch"] = raised(image_branch)
out["serve_module"] = raised(serve_module)
out["postgres"] = raised(postgres)
out["loaded"] = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def without_extras(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("without-extras")
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS, json.dumps(BLOCKED), str(tmp)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _one_sentence(message: str, feature: str, extra: str) -> None:
    assert message.startswith(f"{feature} needs the '{extra}' extra"), message
    assert message.strip().endswith(install_command(extra)), message
    assert "pip install" in message and f"[{extra}]" in message
    assert "\n" not in message.strip() and ". " not in message, message


def test_the_tabular_path_needs_no_extra(without_extras: dict) -> None:
    """Load, audit, train and explain a tabular-only cohort with every extra missing."""
    assert without_extras["patients"] == 60 and without_extras["images"] == 0
    assert without_extras["audit"] == "AuditResult"
    assert without_extras["run"] and without_extras["report"]
    assert without_extras["explained"] > 0
    assert without_extras["loaded"] == []


@pytest.mark.parametrize(
    ("command", "feature", "extra"),
    [
        ("serve", "deeppcos serve", "serve"),
        ("dashboard", "deeppcos dashboard", "dashboard"),
        ("embed", "deeppcos embed", "image"),
        ("predict_dask", "deeppcos predict --dask", "dask"),
        ("train_image", "the image branch (image.enabled: true in {tmp}/image.yaml)", "image"),
    ],
)
def test_a_command_without_its_extra_says_what_to_install(
    without_extras: dict, command: str, feature: str, extra: str
) -> None:
    result = without_extras[command]
    assert result["exit_code"] == 1, result["output"]
    assert "Traceback" not in result["output"]
    message = " ".join(result["output"].split()).removeprefix("error: ")  # rich wraps lines
    _one_sentence(message, feature.format(tmp=without_extras["tmp"]), extra)


@pytest.mark.parametrize(
    ("call", "feature", "extra"),
    [
        ("image_branch", "the image branch", "image"),
        ("serve_module", "the prediction service (deeppcos.inference.serve)", "serve"),
        ("postgres", "a postgresql:// tuning storage", "postgres"),
    ],
)
def test_the_library_without_an_extra_raises_missing_extra(
    without_extras: dict, call: str, feature: str, extra: str
) -> None:
    message = without_extras[call]
    assert message is not None, f"{call} did not raise MissingExtraError"
    _one_sentence(message, feature, extra)


def test_require_returns_the_module_or_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    assert require("json", "serve", "deeppcos serve") is json
    with pytest.raises(MissingExtraError) as info:
        require("deeppcos_no_such_module", "serve", "deeppcos serve")
    error = info.value
    assert isinstance(error, DeepPCOSError) and isinstance(error, ImportError)
    assert error.name == "deeppcos_no_such_module"
    assert isinstance(error.__cause__, ModuleNotFoundError)
    _one_sentence(str(error), "deeppcos serve", "serve")
    assert "(deeppcos_no_such_module is not installed)" in str(error)

    # A module that is there but needs one that is not: still the extra's business.
    (tmp_path / "half_installed.py").write_text("import deeppcos_no_such_dependency\n")
    # A module that is there and broken otherwise: its own error, not a missing extra.
    (tmp_path / "broken_binary.py").write_text("raise ImportError('libfoo.so: no such file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError, match=r"\(deeppcos_no_such_dependency is not"):
        require("half_installed", "dask", "deeppcos predict --dask")
    with pytest.raises(ImportError, match="libfoo") as broken:
        require("broken_binary", "image", "the image branch")
    assert not isinstance(broken.value, MissingExtraError)
    with pytest.raises(ValueError, match="unknown extra"):
        require("json", "gpu", "nothing")


def test_the_install_command_fits_this_checkout(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(REPO)
    assert install_command("serve").endswith(" -m pip install -e '.[serve]'")
    monkeypatch.chdir(tmp_path)
    assert install_command("dask").endswith(f" -m pip install -e '{REPO}[dask]'")


def test_the_extras_match_pyproject() -> None:
    """Each extra require() names exists in pyproject.toml, 'all' has them all, and none of
    their packages is still a base dependency."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    assert set(EXTRAS) <= set(optional)
    assert optional["all"] == [f"deeppcos[{','.join(EXTRAS)}]"]
    distributions = {"psycopg2": "psycopg2-binary"}
    base = {re.split(r"[=<>!~;\[ ]", d, maxsplit=1)[0] for d in project["dependencies"]}
    for extra, modules in EXTRAS.items():
        listed = {re.split(r"[=<>!~;\[ ]", d, maxsplit=1)[0] for d in optional[extra]}
        for module in modules:
            name = distributions.get(module, module)
            assert name in listed, (extra, module)
            assert name not in base and f"{name}-cpu" not in base, module
    assert "opencv-python-headless" in base  # loading and auditing a cohort import cv2
