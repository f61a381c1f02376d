from pathlib import Path

import numpy as np
import pandas as pd

from deeppcos.evaluation.metrics import (
    binary_metrics,
    classification_metrics,
    subgroup_metrics,
    threshold_for_sensitivity,
)
from deeppcos.evaluation.model_card import write_model_card

SECTIONS = (
    "## Model details",
    "## Intended use",
    "## Data and provenance",
    "## Metrics",
    "## Subgroups",
    "## Leakage/shortcut audit findings",
    "## Limitations and caveats",
)


def card(tmp_path: Path, **overrides) -> str:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1)
    threshold = threshold_for_sensitivity(y, p, 0.95)
    frame = pd.DataFrame(
        {"y": y, "p": p, "site": rng.choice(["A", "B", "C"], 200, p=[0.5, 0.45, 0.05])}
    )
    arguments = {
        "run_name": "synthetic-demo",
        "cohort_summary": {
            "patients": 200,
            "labels": {"0": int((y == 0).sum()), "1": int(y.sum())},
        },
        "provenance": "Synthetic cohort (deeppcos synth, seed 0).",
        "intended_use": "Research on multimodal PCOS models.",
        "metrics": {
            "fusion": classification_metrics(y, p, threshold, n_boot=100),
            "tabular": binary_metrics(y, p, n_boot=100),
        },
        "subgroups": subgroup_metrics(frame, ["site"], "y", "p", threshold, n_boot=100),
        "audit_findings": [
            {"severity": "warning", "check": "tabular.ultrasound", "title": "scan-derived columns"},
            {"severity": "high", "check": "duplicates.exact", "title": "copies | across splits"},
        ],
        "limits": ["Synthetic data: says nothing about real patients."],
    }
    arguments.update(overrides)
    path = write_model_card(tmp_path / "card" / "MODEL_CARD.md", **arguments)
    return path.read_text(encoding="utf-8")


def test_card_has_every_section_and_the_caveat(tmp_path: Path) -> None:
    text = card(tmp_path)
    positions = [text.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert "decision support, not a diagnosis" in text
    assert "Research on multimodal PCOS models." in text
    assert "Synthetic data: says nothing about real patients." in text


def test_card_tables_carry_intervals_gaps_and_sorted_findings(tmp_path: Path) -> None:
    text = card(tmp_path)
    metrics = text.split("## Metrics")[1].split("## Subgroups")[0]
    assert "| Metric | fusion | tabular |" in metrics
    sensitivity = next(line for line in metrics.splitlines() if line.startswith("| Sensitivity"))
    assert "(" in sensitivity and "–" in sensitivity  # value (low–high)
    subgroups = text.split("## Subgroups")[1].split("## Leakage")[0]
    assert "| site | C |" in subgroups and "point estimates only" in subgroups
    audit = text.split("## Leakage/shortcut audit findings")[1]
    assert audit.index("high") < audit.index("warning")
    assert "copies \\| across splits" in audit  # a pipe cannot break the table
    assert "> **Warning:**" in text.split("## Model details")[0]


def test_card_without_findings_says_so(tmp_path: Path) -> None:
    text = card(tmp_path, audit_findings=[], subgroups=[])
    assert "No audit findings were supplied" in text
    assert "No subgroup analysis was supplied" in text
    assert "> **Warning:**" not in text
