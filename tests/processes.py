"""Real processes for tests and the smoke run: started, awaited, killed and stopped."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = str(ROOT / "docker" / "entrypoint.sh")


def worker_argv() -> list[str]:
    """Return the command of a Celery worker with a prefork pool of one."""
    return [
        sys.executable, "-m", "celery", "-A", "wsgi.celery_app", "worker", "--loglevel=INFO",
        "--concurrency=1", "--without-gossip", "--without-mingle",
        "--hostname", f"test-{os.getpid()}-{time.monotonic_ns()}@%h",
    ]  # fmt: skip


def venv_path_env(env: dict[str, str]) -> dict[str, str]:
    """Return ``env`` with this interpreter's bin directory first on PATH, as in the image."""
    return {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}


class ManagedProcess:
    """A command in its own process group, with its output in a log file."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        ready: Callable[[str], bool] = lambda log: True,
    ):
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.ready = ready
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "ManagedProcess":
        """Start the command and wait until ``ready`` holds for what it has printed."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.argv[:3]} exited at start:\n{self.log()}")
            if self.ready(self.log()[offset:]):
                return self
            time.sleep(0.2)
        self.kill()
        raise TimeoutError(f"{self.argv[:3]} not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        """Return everything the process has printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """Kill the whole process group with SIGKILL: no cleanup, no acknowledgement."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def kill_main(self) -> None:
        """Kill only the main process with SIGKILL, as a lost node or the OOM killer would.

        A Celery worker's pool processes die with it (they ask the kernel for SIGKILL when their
        parent dies), and nothing is acknowledged.
        """
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the process group with SIGTERM, or kill it after fifteen seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()


@contextmanager
def entrypoint_roles(log_dir: Path) -> Iterator[Callable[..., ManagedProcess]]:
    """Yield a function that starts an entrypoint role as a container would; stop all at exit.

    Unless told otherwise, a role keeps its metrics under ``log_dir`` and a worker serves them on
    a free port: roles started by concurrent tests never share a directory or a port.
    """
    started: list[ManagedProcess] = []

    def start(role: str, env: dict[str, str], ready=lambda log: True) -> ManagedProcess:
        env = {
            "PROMETHEUS_MULTIPROC_DIR": str(log_dir / "metrics"),
            "WORKER_METRICS_PORT": str(free_port()),
            **env,
        }
        process = ManagedProcess(
            [ENTRYPOINT, role], venv_path_env(env), log_dir / f"{role}.log", ready
        )
        started.append(process)
        return process.start(timeout=90)

    try:
        yield start
    finally:
        for process in started:
            process.stop()


def worker_ready(log: str) -> bool:
    """Return whether a Celery worker's output says it is ready."""
    return " ready." in log


def free_port() -> int:
    """Return a TCP port that is free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def eventually(condition: Callable[[], object], timeout: float, what: str = "", interval=0.2):
    """Return the first truthy ``condition()`` within ``timeout`` seconds, or raise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(interval)
    raise TimeoutError(f"{what or condition}: not within {timeout:g}s")


def answers(url: str, **kwargs) -> bool:
    """Return whether ``url`` answers 200 within two seconds."""
    try:
        return requests.get(url, timeout=2, **kwargs).status_code == 200
    except requests.RequestException:
        return False
