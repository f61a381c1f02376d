"""How the user should type a command the CLI prints for them to copy.

After ``make demo`` the ``deeppcos`` script lives in ``.venv/bin``, which is usually not on
``PATH``: a printed ``deeppcos dashboard demo/run`` would fail with "command not found" in a
new shell. :func:`deeppcos_command` gives the spelling that works there. Standard library only:
``deeppcos --help`` must stay fast.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

__all__ = ["command_line", "deeppcos_command", "python_command"]

SCRIPT = "deeppcos"


def _script_beside_python() -> Path:
    """The ``deeppcos`` console script installed with the running interpreter.

    ``sys.executable`` is not resolved first: in a virtual environment it is a link to the base
    interpreter, and the script sits beside the link (``.venv/bin``), not beside its target.
    """
    folder = Path(os.path.abspath(sys.executable)).parent
    name = f"{SCRIPT}.exe" if os.name == "nt" else SCRIPT
    return folder / name


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _as_typed(path: Path) -> str:
    """``path`` relative to the current folder when inside it (``./`` first if it has no
    folder part, so the shell does not search PATH), else absolute; quoted for a shell."""
    absolute = Path(os.path.abspath(path))
    cwd = Path(os.path.abspath(os.getcwd()))
    typed = str(absolute)
    for inner, base in ((absolute, cwd), (absolute.resolve(), cwd.resolve())):
        try:
            relative = inner.relative_to(base)
        except ValueError:
            continue
        typed = str(relative) if len(relative.parts) > 1 else os.path.join(".", str(relative))
        break
    return shlex.quote(typed)


def deeppcos_command() -> str:
    """How to type ``deeppcos`` in a new shell so that it runs this installation.

    Plain ``deeppcos`` when ``PATH`` finds this very script; else the script's path, relative
    to the current folder when it is inside it (``.venv/bin/deeppcos``), else absolute. Where
    the interpreter has no ``deeppcos`` script beside it, ``python -m deeppcos.cli`` with this
    interpreter.
    """
    script = _script_beside_python()
    if not script.is_file():
        return f"{python_command()} -m deeppcos.cli"
    found = shutil.which(SCRIPT)
    if found is not None and _same_file(found, script):
        return SCRIPT
    return _as_typed(script)


def python_command() -> str:
    """How to type the running interpreter: ``sys.executable``, relative when inside the
    current folder (``.venv/bin/python``)."""
    return _as_typed(Path(sys.executable))


def command_line(*args: str | os.PathLike[str]) -> str:
    """A ``deeppcos`` command line to print for the user: ``command_line("dashboard", run)``
    → ``.venv/bin/deeppcos dashboard demo/run`` (arguments quoted for a POSIX shell)."""
    return " ".join([deeppcos_command(), *(shlex.quote(str(a)) for a in args)])
