"""The read API over HTTP: gunicorn with the api role's own flags, measured by wrk.

The flags are read from docker/entrypoint.sh and expanded by the shell as the container would
expand them, so a bench serves exactly what production serves, with no second copy of the
settings. `make bench` (scripts/bench.py) uses this module; run alone, it compares the read API
of two checkouts, each on a fresh SQLite database loaded by one ETL pass of its bundled CSV files
(or on ``--database-url``):

    .venv/bin/python scripts/bench_api.py [--tree CHECKOUT] [--database-url URL]
        [--gunicorn-args "--workers 3 --threads 2"] [--seconds 8] [PATH ...]

wrk is the Debian package ``wrk``.
"""

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.processes import ManagedProcess, answers, free_port  # noqa: E402

ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
BIN = Path(sys.executable).parent
CONNECTIONS = 32
DEFAULT_PATHS = ("/data?page_size=10", "/data?source=csv1&metric=price_usd&page_size=10", "/stats")
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def production_gunicorn_flags(env: Mapping[str, str]) -> list[str]:
    """Return the flags the entrypoint's api role gives gunicorn in ``env``, app module aside."""
    script = ENTRYPOINT.read_text().replace("\\\n", " ")
    command = next(
        line.split("exec gunicorn", 1)[1] for line in script.splitlines() if "exec gunicorn" in line
    )
    expanded = run_or_stop(["sh", "-c", f'printf "%s\\0" {command}'], env=dict(env))
    expanded = expanded.split("\0")[:-1]
    *flags, app_module = expanded
    if app_module != "wsgi:app":
        raise SystemExit(
            f"{ENTRYPOINT}: expected gunicorn's last argument wsgi:app, not {app_module}"
        )
    return flags


def without_bind(flags: list[str]) -> list[str]:
    """Return ``flags`` without the address to listen on: a bench listens on loopback only."""
    return [
        flag for i, flag in enumerate(flags) if flag != "--bind" and flags[i - 1 : i] != ["--bind"]
    ]


@contextmanager
def gunicorn(
    app_module: str, flags: list[str], env: Mapping[str, str], cwd: Path, log: Path, ready: str
) -> Iterator[str]:
    """Serve ``app_module`` with gunicorn and ``flags``; yield its URL once ``ready`` answers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # As the entrypoint's api role: the workers share their metrics in files of their own.
    metrics = tempfile.mkdtemp(prefix="kasparro-bench-metrics-")
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": metrics}
    argv = [
        str(BIN / "gunicorn"),
        "--bind",
        f"127.0.0.1:{port}",
        *without_bind(flags),
        "--chdir",
        str(cwd),
        app_module,
    ]
    server = ManagedProcess(argv, dict(env), log, lambda _: answers(base + ready))
    try:
        server.start(timeout=60)
        yield base
    finally:
        server.stop()
        shutil.rmtree(metrics, ignore_errors=True)


@dataclass(frozen=True)
class WrkResult:
    """What wrk measured on one URL."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    socket_errors: dict[str, int]
    non_2xx: int

    @property
    def errors(self) -> int:
        """Return the failed requests: socket errors (timeouts included) and non-2xx answers."""
        return sum(self.socket_errors.values()) + self.non_2xx

    def describe_errors(self) -> str:
        """Return the error count, with its kinds when there are any."""
        kinds = {**self.socket_errors, "non-2xx": self.non_2xx}
        named = ", ".join(f"{kind} {count}" for kind, count in kinds.items() if count)
        return f"{self.errors} ({named})" if named else "0"


def _milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS_MS[unit]


def parse_wrk(output: str) -> WrkResult:
    """Read requests/s, p50, p99, requests and errors from ``wrk --latency``'s output."""
    socket_errors = re.search(
        r"Socket errors: connect (?P<connect>\d+), read (?P<read>\d+), "
        r"write (?P<write>\d+), timeout (?P<timeout>\d+)",
        output,
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1]),
        p50_ms=_milliseconds(re.search(r"^\s+50%\s+(\S+)", output, re.M)[1]),
        p99_ms=_milliseconds(re.search(r"^\s+99%\s+(\S+)", output, re.M)[1]),
        requests=int(re.search(r"(\d+) requests in", output)[1]),
        socket_errors={
            kind: int(count)
            for kind, count in (socket_errors.groupdict() if socket_errors else {}).items()
        },
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
    )


def require_wrk() -> None:
    """Stop with a message naming the package when wrk is not installed."""
    if shutil.which("wrk") is None:
        raise SystemExit(
            "wrk is not installed: install the Debian package wrk (apt-get install wrk)"
        )


def run_wrk(url: str, seconds: float, connections: int = CONNECTIONS) -> WrkResult:
    """Load ``url`` with wrk for ``seconds`` at ``connections`` connections (2 threads)."""
    return parse_wrk(
        run_or_stop(["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", url])
    )


def run_or_stop(argv: list[str], **kwargs) -> str:
    """Run a command and return its output; stop with that output if it fails.

    The message names the program only: its arguments may hold a database URL.
    """
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        failed = f"{Path(argv[0]).name} exited {done.returncode}"
        raise SystemExit(f"{failed}:\n{done.stdout}{done.stderr}")
    return done.stdout


def load_bundled_data(tree: Path, env: dict[str, str]) -> None:
    """Migrate the database in ``env`` and run one ETL pass of ``tree``'s bundled CSV files."""
    flask = [str(BIN / "flask"), "--app", "wsgi"]
    run_or_stop([*flask, "db", "upgrade"], cwd=tree, env=env)
    # csv2 ends PARTIAL by design (its quirks include rows it rejects); only FAILED exits 1.
    run_or_stop([*flask, "etl", "run", "--source", "csv1", "--source", "csv2"], cwd=tree, env=env)


def main() -> None:
    """Serve one checkout's API and print wrk's figures for each path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=DEFAULT_PATHS)
    parser.add_argument("--tree", type=Path, default=ROOT, help="a checkout of this project")
    parser.add_argument("--database-url", help="default: a fresh SQLite file, loaded first")
    parser.add_argument("--gunicorn-args", help="instead of the entrypoint's flags")
    parser.add_argument("--seconds", type=float, default=8)
    args = parser.parse_args()
    require_wrk()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "LOG_LEVEL": "WARNING"}
        env["DATABASE_URL"] = args.database_url or f"sqlite:///{tmp}/etl.db"
        if not args.database_url:
            load_bundled_data(args.tree, env)
        flags = (
            shlex.split(args.gunicorn_args)
            if args.gunicorn_args
            else production_gunicorn_flags(env)
        )
        log = Path(tmp) / "gunicorn.log"
        with gunicorn("wsgi:app", flags, env, args.tree, log, "/health") as base:
            print(f"gunicorn {shlex.join(without_bind(flags))}, wrk at {CONNECTIONS} connections")
            for path in args.paths:
                result = run_wrk(base + path, args.seconds)
                print(
                    f"{path}  {result.requests_per_second:,.0f} req/s  p50 {result.p50_ms:.1f} ms"
                    f"  p99 {result.p99_ms:.1f} ms  errors {result.describe_errors()}"
                )


if __name__ == "__main__":
    main()
