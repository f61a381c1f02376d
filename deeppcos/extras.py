"""Optional extras: the heavy packages only some features need.

A plain ``pip install deeppcos`` loads a cohort, audits it, trains and explains the tabular
branch, tunes it (journal or SQLite storage) and scores patients. The rest comes with an extra
(``pyproject.toml``, ``[project.optional-dependencies]``):

==============  ===================================  ===========================================
extra           packages                             features
==============  ===================================  ===========================================
``image``       tensorflow(-cpu), keras              the image branch, ``deeppcos embed``, demo
``serve``       fastapi, uvicorn                     ``deeppcos serve``
``dashboard``   streamlit, plotly                    ``deeppcos dashboard``
``dask``        dask, distributed                    ``--dask`` (predict, embed)
``postgres``    psycopg2-binary                      a ``postgresql://`` tuning storage
``all``         every one of the above               (``make install`` installs ``.[all,dev]``)
==============  ===================================  ===========================================

:func:`require` imports one of those packages where a feature first needs it, or raises
:class:`~deeppcos.exceptions.MissingExtraError` (a ``DeepPCOSError``, so the CLI prints its one
sentence without a traceback) naming the feature and the command that installs the extra.
Standard library only: the CLI imports this module before anything heavy.
"""

from __future__ import annotations

import importlib
import os
import shlex
from pathlib import Path
from types import ModuleType

from deeppcos.commands import python_command
from deeppcos.exceptions import MissingExtraError

__all__ = ["EXTRAS", "install_command", "require"]

# Extra -> the modules it provides (import names). tests/test_extras.py checks these against
# pyproject.toml.
EXTRAS: dict[str, tuple[str, ...]] = {
    "image": ("tensorflow", "keras"),
    "serve": ("fastapi", "uvicorn"),
    "dashboard": ("streamlit", "plotly"),
    "dask": ("dask", "distributed"),
    "postgres": ("psycopg2",),
}


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import and return ``module``, which the ``extra`` provides; ``feature`` (what needs it,
    e.g. ``"deeppcos serve"``) starts the error's sentence when it is not installed.

    Only a missing module (``ModuleNotFoundError``, the module itself or one it imports) becomes
    a :class:`MissingExtraError`; any other import failure (a broken binary) propagates as is.
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; expected one of {sorted(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or module
        raise MissingExtraError(
            f"{feature} needs the {extra!r} extra ({missing} is not installed): "
            f"{install_command(extra)}",
            name=missing,
        ) from exc


def install_command(extra: str) -> str:
    """The command that installs ``extra`` into the running interpreter's environment:
    ``.venv/bin/python -m pip install -e '.[serve]'`` for a source checkout (``make install``'s
    editable install), ``python -m pip install 'deeppcos[serve]'`` otherwise."""
    pip = f"{python_command()} -m pip install"
    checkout = _checkout()
    if checkout is None:
        return f"{pip} {shlex.quote(f'deeppcos[{extra}]')}"
    return f"{pip} -e {shlex.quote(f'{checkout}[{extra}]')}"


def _checkout() -> str | None:
    """The source checkout this package runs from (``pyproject.toml`` beside the package), as
    typed from the current folder (``.`` there, relative inside it, else absolute); None for an
    installed wheel."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        return None
    try:
        cwd = Path(os.getcwd()).resolve()
        return str(root.relative_to(cwd))  # "." when they are the same folder
    except (OSError, ValueError):
        return str(root)
