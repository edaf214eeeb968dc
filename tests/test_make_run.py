"""``make run``, twice on one machine: each instance keeps its metrics in a directory of its own.

Both instances start with the same TMPDIR, as two terminals of one user would, each on its own
port and SQLite file. What one instance counted must survive the other's start, and each
instance's directory must be gone once it stops.
"""

import os
import signal
import sys
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_API_KEY
from tests.processes import ManagedProcess, answers, eventually, free_port, venv_path_env

RUNS_LINE = ("kasparro_http_requests_total", (("endpoint", "/runs"), ("method", "GET"),
                                              ("status", "200")))  # fmt: skip


class MakeRun:
    """One ``make run`` in its own process group, serving on a free port."""

    def __init__(self, name: str, tmp_path: Path, env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**env, "DATABASE_URL": f"sqlite:///{tmp_path / name}.db"}
        # requirements are installed already: make must not reinstall them (-o)
        argv = ["make", "--no-print-directory", "-o", ".venv/.runtime", "run",
                f"PORT={self.port}", f"PYTHON={sys.executable}"]  # fmt: skip
        self.process = ManagedProcess(
            argv, env, tmp_path / f"{name}.log", lambda log: answers(f"{self.url}/health")
        )

    def start(self) -> "MakeRun":
        """Start it and wait until it serves."""
        self.process.start(timeout=120)
        return self

    def interrupt(self) -> None:
        """Send SIGINT to the whole process group, as Ctrl-C in its terminal does, and wait."""
        os.killpg(self.process.process.pid, signal.SIGINT)
        self.process.process.wait(timeout=30)

    def requests_to_runs(self) -> float:
        """Return the ``GET /runs`` answers its /metrics counts (0 when none)."""
        text = requests.get(f"{self.url}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (sample.name, tuple(sorted(sample.labels.items()))) == RUNS_LINE:
                    return sample.value
        return 0


@pytest.fixture
def make_env(tmp_path, coingecko, csv_paths):
    """Return the environment of a `make run` on the imitation and the test's CSV copies."""
    (tmp_path / "tmp").mkdir()
    env = {
        **os.environ,
        "TMPDIR": str(tmp_path / "tmp"),
        "API_SOURCE_URL": coingecko.url,
        "API_KEY": TEST_API_KEY,
        "LOG_LEVEL": "WARNING",
        **{key: str(path) for key, path in csv_paths.items()},
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("MAKEFLAGS", None)
    return venv_path_env(env)


def metrics_directories(tmp_path: Path) -> set[Path]:
    """Return the metrics directories `make run` instances hold under the shared TMPDIR."""
    return set((tmp_path / "tmp").glob("kasparro-metrics.*"))


@pytest.mark.slow
def test_a_second_make_run_leaves_the_first_ones_metrics_and_each_removes_its_own(
    tmp_path, make_env
):
    first = MakeRun("first", tmp_path, make_env).start()
    first_directories = metrics_directories(tmp_path)
    for _ in range(5):
        assert requests.get(f"{first.url}/runs", timeout=5).status_code == 200
    assert first.requests_to_runs() == 5

    second = MakeRun("second", tmp_path, make_env)
    try:
        second.start()
        requests.get(f"{second.url}/runs", timeout=5)

        assert first.requests_to_runs() == 5  # the second start wiped nothing of the first's
        assert second.requests_to_runs() == 1  # and counts apart from it
        assert len(first_directories) == 1
        assert len(metrics_directories(tmp_path)) == 2

        first.interrupt()
        assert metrics_directories(tmp_path).isdisjoint(first_directories)  # removed on Ctrl-C
        assert len(metrics_directories(tmp_path)) == 1
        assert second.requests_to_runs() == 1  # the second still counts its own
    finally:
        second.process.stop()
        first.process.stop()
    eventually(lambda: not metrics_directories(tmp_path), 10, "directories removed on SIGTERM")
