"""One place names the run folder's files: ``deeppcos.runs.layout``.

The writer and the reader take the names from there; a file name spelled anywhere else in the
package or the dashboards would be a second copy of the layout, free to drift from it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from deeppcos.runs.layout import ReportFiles, RunFiles
from tests.conftest import REPO

SPELLED_HERE = {REPO / "deeppcos" / "runs" / "layout.py"}


def _file_names() -> set[str]:
    """The layout's file names (the folders' names are ordinary words: ``fusion``, ``image``)."""
    names: set[str] = set()
    for holder in (RunFiles, ReportFiles):
        for key, value in vars(holder).items():
            if key.isupper() and isinstance(value, str) and "." in value:
                names.add(value)
                names.add(value.rsplit("/", 1)[-1])
    return names


def _spelled(path: Path, names: set[str], root: Path = REPO) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.strip().lstrip("/")
            if text in names:
                found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value!r}")
    return found


def test_only_the_layout_spells_a_run_file_name() -> None:
    names = _file_names()
    assert {"metrics.json", "run.json", "oof_predictions.csv", "model_card.md"} <= names
    files = [*(REPO / "deeppcos").rglob("*.py"), *(REPO / "dashboards").rglob("*.py")]
    found = [hit for f in files if f not in SPELLED_HERE for hit in _spelled(f, names)]
    assert not found, "run file names outside deeppcos/runs/layout.py:\n" + "\n".join(found)


def test_the_check_sees_a_spelled_name(tmp_path: Path) -> None:
    module = tmp_path / "reader.py"
    module.write_text('METRICS = "metrics.json"\nPATH = f"{run}/fusion/decision.json"\n')
    hits = _spelled(module, _file_names(), root=tmp_path)
    assert len(hits) == 2 and "'metrics.json'" in hits[0] and "decision.json" in hits[1]
