"""The ``deeppcos`` command line. Thin: it parses, calls the library, prints.

Heavy libraries are imported inside the commands, so ``deeppcos --help`` answers at once.

Exit codes scripts can rely on: 0 success; 1 a deeppcos error (bad spec, bad data; the message
says which file, row and column); 2 wrong usage; 3 ``validate --strict`` found exclusions or
warnings; 4 ``audit --fail-on`` found a finding at or above that severity; 130 interrupted.

One module per command group (``cohort``, ``training``, ``evaluation``, ``scoring``, ``tuning``,
``service``, ``demo``); each registers its commands on the one Typer ``app`` of
:mod:`deeppcos.cli.common` when this package is imported.
"""

from __future__ import annotations

# Imported in the order the flow runs: the help lists the commands in this order.
# isort: off
from deeppcos.cli import cohort, training, evaluation, scoring, tuning, service, demo  # noqa: F401
# isort: on
from deeppcos.cli.common import app, console
from deeppcos.cli.service import dashboard_app, dashboard_command, start_dashboard

__all__ = [
    "app",
    "console",
    "dashboard_app",
    "dashboard_command",
    "main",
    "start_dashboard",
]


def main() -> None:
    app()
