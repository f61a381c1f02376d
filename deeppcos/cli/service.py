"""Service commands: serve (the HTTP prediction service) and dashboard (the Streamlit dashboard)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from deeppcos.cli.common import _errors_as_messages, _fail, app, console, err_console


@app.command()
def serve(
    run: Annotated[Path, typer.Argument(help="a run folder written by 'deeppcos train'")],
    host: Annotated[str, typer.Option(help="address to bind; beyond loopback needs a key")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port")] = 8000,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            help="environment variable holding the API key clients send as X-API-Key "
            "(default: DEEPPCOS_API_KEY, used when set)"
        ),
    ] = None,
    max_request_mb: Annotated[
        float, typer.Option(min=0.001, help="largest request body accepted (413 beyond)")
    ] = 32.0,
    workers: Annotated[
        int,
        typer.Option(
            min=1, help="worker processes, each with its own copy of the model (about one per core)"
        ),
    ] = 1,
    max_explained_patients: Annotated[
        int, typer.Option(min=1, help="patients one explain: true request may ask for")
    ] = 20,
) -> None:
    """Serve a run over HTTP (FastAPI): /health, /model, /predict; OpenAPI at /docs.

    Concurrent requests are scored together (micro-batching); explanations run on their own
    copy of the model, so a long one does not hold up predictions.
    """
    from deeppcos.extras import require

    with _errors_as_messages():
        for module in ("fastapi", "uvicorn"):
            require(module, "serve", "deeppcos serve")
    from deeppcos.exceptions import ConfigError
    from deeppcos.inference.serve import (
        SERVE_SETTINGS_ENV,
        ServiceLimits,
        create_app,
        resolve_api_key,
        serve_settings,
    )

    try:
        key = resolve_api_key(host, api_key_env)
    except ConfigError as exc:  # refused to start: a usage error, exit 2
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    with _errors_as_messages():
        limits = ServiceLimits(
            max_request_bytes=int(max_request_mb * (1 << 20)),
            max_explained_patients=max_explained_patients,
        )
        # Built here even with several workers: a broken run fails now, not in each worker.
        application = create_app(run, api_key=key, limits=limits)
    import uvicorn

    auth = "an API key (X-API-Key, also for /docs)" if key else "no API key (loopback only)"
    processes = f" in {workers} worker processes" if workers > 1 else ""
    err_console.print(
        f"serving {run} on http://{host}:{port}{processes} with {auth}; docs at /docs"
    )
    options: dict[str, Any] = {"host": host, "port": port, "log_level": "warning"}
    if workers == 1:
        uvicorn.run(application, access_log=False, **options)
        return
    del application
    os.environ[SERVE_SETTINGS_ENV] = serve_settings(run, host, api_key_env, limits)
    _serve_in_workers(workers, options)


def _serve_in_workers(workers: int, options: dict[str, Any]) -> None:
    """uvicorn's multi-process mode, with TCP_NODELAY on the shared listening socket.

    uvicorn binds that socket itself with protocol 0, so asyncio does not turn Nagle's algorithm
    off on the connections it accepts (it does only for IPPROTO_TCP sockets), and every small
    response then waits ~40 ms for the client's delayed ACK (measured: /health 1 ms with one
    process, 44 ms with two). Linux copies the option from the listening socket to each
    accepted one.
    """
    import socket

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(
        "deeppcos.inference.serve:app_from_environment",
        factory=True,
        workers=workers,
        access_log=False,
        **options,
    )
    sock = config.bind_socket()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops the workers: not an error
        Multiprocess(config, sockets=[sock]).run()


# --- explain ---------------------------------------------------------------------------------



DASHBOARD_PORT = 8501


def dashboard_app() -> Path:
    """``dashboards/app.py``: installed beside the ``deeppcos`` package (or in the checkout)."""
    # The package folder is this file's: no import of the package root needed for it.
    return Path(__file__).resolve().parents[2] / "dashboards" / "app.py"


def dashboard_command(port: int, address: str) -> list[str]:
    """The ``streamlit run`` command line: headless, no file watcher, no usage statistics."""
    return [
        sys.executable, "-m", "streamlit", "run", str(dashboard_app()),
        "--server.port", str(port), "--server.address", address,
        "--server.headless", "true", "--server.fileWatcherType", "none",
        "--server.runOnSave", "false", "--server.maxUploadSize", "25",
        "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
        # A full garbage collection after every rerun costs ~0.5 s once TensorFlow is loaded.
        "--runner.postScriptGC", "false",
    ]  # fmt: skip


def start_dashboard(
    run: Path | None, port: int = DASHBOARD_PORT, address: str = "127.0.0.1"
) -> int:
    """Serve the dashboard (``streamlit run``, run folder in ``$DEEPPCOS_RUN``) until Ctrl-C."""
    import subprocess

    from deeppcos.extras import require

    with _errors_as_messages():
        for module in ("streamlit", "plotly"):
            require(module, "dashboard", "deeppcos dashboard")
    if not dashboard_app().is_file():
        raise _fail(RuntimeError(f"{dashboard_app()}: the dashboard app is not installed"))
    env = dict(os.environ)
    if run is not None:
        env["DEEPPCOS_RUN"] = str(run.resolve())
        from deeppcos.runs.reader import Run

        if not Run(run).is_complete:
            err_console.print(f"[yellow]warning:[/] {run}: not a complete run (the page says why)")
    console.print(f"dashboard: http://{address}:{port}  (Ctrl-C stops it)")
    try:
        return subprocess.call(dashboard_command(port, address), env=env)
    except KeyboardInterrupt:
        return 0


@app.command()
def dashboard(
    run: Annotated[
        Path | None, typer.Argument(help="run folder to show (default: demo/run if present)")
    ] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to serve on")] = DASHBOARD_PORT,
    address: Annotated[
        str, typer.Option(help="address to bind; 0.0.0.0 exposes it to the network")
    ] = "127.0.0.1",
) -> None:
    """Open the Streamlit dashboard on a run: cohort, performance, patients, tuning, predict."""
    raise typer.Exit(start_dashboard(run, port, address))


# --- demo ------------------------------------------------------------------------------------
