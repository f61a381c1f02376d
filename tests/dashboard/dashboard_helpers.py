"""Helpers of the dashboard tests (imported by the tests; fixtures live in conftest.py)."""

from __future__ import annotations

from typing import Any

from tests.conftest import REPO

APP = REPO / "dashboards" / "app.py"
TIMEOUT = 120  # seconds for one script run: the first Patient page loads TensorFlow
PAGES = ("cohort", "performance", "patient", "tuning", "predict", "feedback")


def texts(at: Any) -> str:
    """Every piece of text the app shows (markdown, captions, alerts, metrics), joined."""
    parts: list[str] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "error", "warning",
                 "info", "success", "code"):  # fmt: skip
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [f"{m.label}: {m.value}" for m in at.metric]
    return "\n".join(parts)


def no_exception(at: Any) -> None:
    assert not at.exception, [e.value for e in at.exception]
