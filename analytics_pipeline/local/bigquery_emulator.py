"""The local BigQuery stand-in: `bqemulator` (REST + the Storage Write API over gRPC).

It lives in a virtualenv of its own (`.venv-bqemulator` beside the project's `.venv`) because it
needs `duckdb==1.5.5` while the pipeline uses DuckDB 2, and because offline it must find the
spatial extension locally: it loads `spatial` at start-up and would otherwise try to download it
and abort. `install` therefore installs the `duckdb-extension-spatial` wheel and, once, runs
DuckDB's `INSTALL` on the extension file inside that wheel with HOME pointed at a folder inside
the venv, which is also the HOME every emulator process gets.

    python -m analytics_pipeline.local.bigquery_emulator install [--venv DIR]
    python -m analytics_pipeline.local.bigquery_emulator start --rest-port 9050 --grpc-port 9060

`start_bigquery_emulator` runs it as a child in its own session (stopped by process group) and
returns once the REST API answers and the gRPC port accepts connections.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from analytics_pipeline.local.ports import PortTaken, listener_of, port_in_use
from analytics_pipeline.local.processes import ChildProcess, stop_on_signals
from analytics_pipeline.settings import Settings

# The project an emulator serves when none is configured; the warehouse module says the same
# (kept apart so `install` and `dev` on DuckDB need no Google libraries).
EMULATOR_PROJECT = "local-project"

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO_ROOT / ".venv-bqemulator"
# Exact versions: bqemulator translates BigQuery SQL to this DuckDB, and the spatial extension
# must match that DuckDB build. Transitive pins live in the constraints file beside the project.
REQUIREMENTS = (
    "bqemulator==1.4.0",
    "duckdb==1.5.5",
    "duckdb-extension-spatial==1.5.5",
    "numpy",
)
CONSTRAINTS = REPO_ROOT / "constraints-bqemulator.txt"
_STAMP = ".installed"
_HOME = "home"  # inside the venv: DuckDB's extension folder lives under $HOME/.duckdb
_STARTUP_TIMEOUT_SECONDS = 90.0


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def emulator_home(venv: Path) -> Path:
    return venv / _HOME


def is_installed(venv: Path = DEFAULT_VENV) -> bool:
    return (venv / _STAMP).exists()


_INSTALL_SPATIAL = """
import pathlib, duckdb, duckdb_extension_spatial
files = sorted(pathlib.Path(duckdb_extension_spatial.__file__).parent.rglob("*.duckdb_extension"))
if not files:
    raise SystemExit("no spatial.duckdb_extension inside the duckdb-extension-spatial wheel")
connection = duckdb.connect()
connection.execute("SET autoinstall_known_extensions = false")
connection.execute(f"INSTALL '{files[0]}'")
connection.execute("LOAD spatial")
print("spatial extension installed from", files[0])
"""


def install(venv: Path = DEFAULT_VENV, python: str = sys.executable) -> Path:
    """Create the emulator's virtualenv and install the spatial extension from its wheel.

    Idempotent: a venv with its stamp file is left alone. Never downloads the extension.
    """
    venv = venv.absolute()
    if is_installed(venv):
        return venv
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(_venv_python(venv)), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    constraints = ["-c", str(CONSTRAINTS)] if CONSTRAINTS.exists() else []
    subprocess.run([*pip, *constraints, *REQUIREMENTS], check=True)
    home = emulator_home(venv)
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(_venv_python(venv)), "-c", _INSTALL_SPATIAL],
        check=True,
        env=_emulator_env(venv),
    )
    (venv / _STAMP).touch()
    return venv


def _emulator_env(venv: Path) -> dict[str, str]:
    """HOME inside the venv (where the extension was installed); nothing reaches for the net."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GOOGLE_", "BIGQUERY_", "VIRTUAL_ENV", "PYTHON"))
    }
    env["HOME"] = str(emulator_home(venv))
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@dataclass
class BigQueryEmulatorProcess(ChildProcess):
    """bqemulator as a child process, with the endpoints it serves."""

    rest_endpoint: str = ""  # http://127.0.0.1:PORT
    grpc_endpoint: str = ""  # 127.0.0.1:PORT


def rest_answers(rest_endpoint: str, timeout: float = 1.0) -> bool:
    """True when the emulator's REST API answers (any HTTP status counts)."""
    try:
        with urllib.request.urlopen(f"{rest_endpoint}/bigquery/v2/projects", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def grpc_accepts(grpc_endpoint: str, timeout: float = 0.5) -> bool:
    host, _, port = grpc_endpoint.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def start_bigquery_emulator(
    rest_port: int,
    grpc_port: int,
    log_path: Path,
    *,
    venv: Path = DEFAULT_VENV,
    project: str = EMULATOR_PROJECT,
    data_dir: Path | None = None,
    host: str = "127.0.0.1",
) -> BigQueryEmulatorProcess:
    """Start bqemulator in its own session and wait until both of its APIs answer.

    `data_dir` keeps tables across restarts (`--persistent`); without it the emulator is
    ephemeral. Write streams never survive a restart either way.
    """
    venv = venv.absolute()
    if not is_installed(venv):
        raise RuntimeError(
            f"the BigQuery emulator is not installed in {venv}; run "
            "`python -m analytics_pipeline.local.bigquery_emulator install` (or `make test`)"
        )
    command = [
        str(venv / "bin" / "bqemulator"),
        "start",
        *("--rest-host", host, "--rest-port", str(rest_port)),
        *("--grpc-host", host, "--grpc-port", str(grpc_port)),
        *("--project", project, "--log-level", "warning"),
    ]
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        command += ["--persistent", "--data-dir", str(data_dir)]
    emulator = BigQueryEmulatorProcess(
        name="BigQuery emulator",
        command=command,
        log_path=log_path,
        env=_emulator_env(venv),
        cwd=emulator_home(venv),
        grace_seconds=10.0,
        rest_endpoint=f"http://{host}:{rest_port}",
        grpc_endpoint=f"{host}:{grpc_port}",
    ).start()
    emulator.wait_until(
        lambda: rest_answers(emulator.rest_endpoint) and grpc_accepts(emulator.grpc_endpoint),
        _STARTUP_TIMEOUT_SECONDS,
        f"REST answer at {emulator.rest_endpoint} and gRPC at {emulator.grpc_endpoint}",
    )
    return emulator


def check_emulator_ports(settings: Settings) -> None:
    """PortTaken when `dev` would start the emulator but something else holds one of its ports
    (an emulator that answers REST is reused, and then its ports are its own)."""
    if settings.warehouse != "bigquery" or not settings.bigquery_emulator_rest:
        return
    if rest_answers(settings.bigquery_emulator_rest):
        return
    rest = urlsplit(settings.bigquery_emulator_rest)
    grpc_host, _, grpc_port = settings.bigquery_emulator_grpc.rpartition(":")
    for variable, host, port in (
        ("ANALYTICS_BIGQUERY_EMULATOR_REST", rest.hostname or "127.0.0.1", rest.port),
        ("ANALYTICS_BIGQUERY_EMULATOR_GRPC", grpc_host or "127.0.0.1", int(grpc_port)),
    ):
        if port is not None and port_in_use(host, port):
            raise PortTaken(
                f"port {port} on {host}, the BigQuery emulator's ({variable}), is held by "
                f"something that is not a BigQuery emulator{listener_of(port)}; stop it or set "
                f"{variable} to another port"
            )


def ensure_bigquery_emulator(settings: Settings) -> BigQueryEmulatorProcess | None:
    """For `dev`: reuse an emulator answering at the configured endpoints or start one.

    None when the warehouse is not BigQuery, when no emulator endpoint is configured (real
    BigQuery) or when one already answers (not ours to stop). Tables persist under the state
    directory, like the DuckDB file does.
    """
    if settings.warehouse != "bigquery" or not settings.bigquery_emulator_rest:
        return None
    if rest_answers(settings.bigquery_emulator_rest):
        return None
    rest = urlsplit(settings.bigquery_emulator_rest)
    grpc_port = int(settings.bigquery_emulator_grpc.rpartition(":")[2])
    if rest.port is None:
        raise ValueError(f"emulator endpoint needs an explicit port: {rest.geturl()}")
    return start_bigquery_emulator(
        rest.port,
        grpc_port,
        settings.state_dir / "bigquery-emulator.log",
        project=settings.bigquery_project or EMULATOR_PROJECT,
        data_dir=settings.state_dir / "bigquery-emulator",
        host=rest.hostname or "127.0.0.1",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the local BigQuery emulator (bqemulator)")
    commands = parser.add_subparsers(dest="command", required=True)
    install_parser = commands.add_parser("install", help="create its virtualenv (idempotent)")
    install_parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    start_parser = commands.add_parser("start", help="run it in the foreground until Ctrl-C")
    start_parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    start_parser.add_argument("--rest-port", type=int, default=9050)
    start_parser.add_argument("--grpc-port", type=int, default=9060)
    start_parser.add_argument("--project", default=EMULATOR_PROJECT)
    start_parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "install":
        print(f"BigQuery emulator installed in {install(args.venv)}")
        return
    emulator = start_bigquery_emulator(
        args.rest_port,
        args.grpc_port,
        Path(args.venv).absolute() / "emulator.log",
        venv=args.venv,
        project=args.project,
        data_dir=args.data_dir,
    )
    print(f"BigQuery emulator: REST {emulator.rest_endpoint}, gRPC {emulator.grpc_endpoint}")
    try:
        with stop_on_signals() as stop:
            while emulator.alive() and not stop.wait(0.5):
                pass
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
