"""A relative SQLite path means the working directory, where ``make run`` and ``make clean`` run.

Flask-SQLAlchemy would put a relative SQLite path under the app's instance folder instead, so
``make run`` wrote ``instance/etl.db`` and ``make clean`` (which removes ``etl.db``) left it.
"""

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from kasparro.config import database_url

ROOT = Path(__file__).resolve().parent.parent
FLASK = str(Path(sys.executable).parent / "flask")


@pytest.fixture
def project_dir(tmp_path):
    """Return a scratch directory holding a copy of the Makefile, to run make targets in."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    return tmp_path


def upgrade_in(directory: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``flask --app wsgi db upgrade`` as ``make run`` does, from ``directory``."""
    return subprocess.run(
        [FLASK, "--app", "wsgi", "db", "upgrade"],
        cwd=directory,
        env={**env, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}


@pytest.mark.parametrize(
    "setting",
    [None, "sqlite:///./etl.db", "sqlite:///etl.db"],
    ids=["default", "dot-relative", "bare-relative"],
)
def test_make_run_writes_etl_db_where_make_clean_removes_it(project_dir, setting):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if setting is not None:
        env["DATABASE_URL"] = setting

    migrated = upgrade_in(project_dir, env)

    assert migrated.returncode == 0, migrated.stderr
    database = project_dir / "etl.db"
    assert database.is_file(), sorted(
        str(p.relative_to(project_dir)) for p in project_dir.rglob("*")
    )
    assert {"etl_runs", "unified_records", "checkpoints"} <= tables(database)

    cleaned = subprocess.run(
        ["make", "clean"], cwd=project_dir, capture_output=True, text=True, timeout=60
    )

    assert cleaned.returncode == 0, cleaned.stderr
    assert not database.exists()


@pytest.mark.parametrize(
    ("raw", "relative"),
    [
        ("sqlite:///./etl.db", "etl.db"),
        ("sqlite:///etl.db", "etl.db"),
        ("sqlite:///data/local.db", "data/local.db"),
        ("sqlite+pysqlite:///./etl.db?timeout=30", "etl.db"),
    ],
)
def test_a_relative_sqlite_path_is_made_absolute_in_the_working_directory(
    monkeypatch, tmp_path, raw, relative
):
    monkeypatch.chdir(tmp_path)

    url = database_url(raw)

    scheme, _, rest = url.partition(":///")
    assert scheme == raw.partition(":///")[0]
    path, _, query = rest.partition("?")
    assert Path(path) == tmp_path / relative
    assert query == raw.partition("?")[2]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sqlite://", "sqlite://"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("sqlite:////var/lib/kasparro/etl.db", "sqlite:////var/lib/kasparro/etl.db"),
        ("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgresql://u:p%40ss@h:5432/db", "postgresql+psycopg://u:p%40ss@h:5432/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_other_database_urls_are_kept_as_given(monkeypatch, tmp_path, raw, expected):
    monkeypatch.chdir(tmp_path)

    assert database_url(raw) == expected
