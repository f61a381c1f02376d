"""Every benchmark script still imports: a refactor that moves a name they use must move them
too (they run for minutes, outside the suite, so nothing else would notice)."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import REPO

SCRIPTS = sorted((REPO / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_the_benchmark_imports(script) -> None:
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # module level only: main() runs under __main__
    assert callable(getattr(module, "main", None))
