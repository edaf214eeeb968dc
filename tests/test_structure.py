"""The structure holds: the ETL core stands without Flask, and imports point one way."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import has_app_context
from sqlalchemy.orm import Session

from kasparro.config import load_settings
from kasparro.etl.pipeline import run_source
from kasparro.models import Asset, EtlRun, RunStatus, UnifiedRecord

ROOT = Path(__file__).resolve().parent.parent


def imported_names(source: str, package: str) -> set[str]:
    """Return every module (and name) ``source`` imports, relative imports read in ``package``."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def imported_modules(path: Path) -> set[str]:
    """Return every module (and name) the file at ``path`` imports."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    return imported_names(path.read_text(), package)


def modules_under(folder: str) -> list[Path]:
    """Return the Python files of ``folder``, migrations aside (Alembic's own scripts)."""
    return [p for p in (ROOT / folder).rglob("*.py") if "migrations" not in p.parts]


def test_importing_the_etl_core_loads_no_flask_extension_and_no_celery():
    code = (
        "import kasparro.etl.pipeline, sys; "
        "print(sorted(m for m in sys.modules if m.startswith(('flask_', 'celery'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_etl_core_imports_nothing_of_flask_celery_or_the_web_layer():
    forbidden = ("flask", "celery", "kombu", "werkzeug", "tasks", "kasparro.extensions")
    forbidden += ("kasparro.routes", "kasparro.dispatch", "kasparro.cli", "kasparro.celery_app")
    found = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in modules_under("kasparro/etl")
        for name in imported_modules(path)
        if name.split(".")[0] in forbidden or name.startswith(forbidden)
    }
    assert found == set()


def test_the_package_never_imports_the_task_adapters():
    found = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in modules_under("kasparro")
        for name in imported_modules(path)
        if name == "tasks" or name.startswith("tasks.")
    }
    assert found == set()


@pytest.mark.parametrize(
    "line",
    [
        "import tasks.etl",
        "from tasks import etl",
        "from tasks.etl import dispatch_run",
        "def lazily():\n    from tasks.etl import dispatch_run",
        "import kasparro.config, tasks.maintenance as maintenance",
    ],
)
def test_the_import_reader_sees_every_form_of_an_import_of_tasks(line):
    # The import tests above are only as good as this reader.
    names = imported_names(line, "kasparro.etl.sources")
    assert "tasks" in names or any(name.startswith("tasks.") for name in names)


def test_the_core_runs_on_a_plain_session_without_an_app(database_url, csv_paths):
    settings = {**load_settings(), **{key: str(path) for key, path in csv_paths.items()}}
    engine = sa.create_engine(database_url)
    try:
        with Session(engine) as session:
            assert not has_app_context()
            runs = [run_source(session, name, settings) for name in ("csv1", "csv2")]
            assert [run.status for run in runs] == [RunStatus.SUCCESS, RunStatus.PARTIAL]
            loaded = session.scalar(sa.select(sa.func.count()).select_from(UnifiedRecord))
            assert loaded == runs[0].inserted + runs[1].inserted > 0
            assert session.scalar(sa.select(sa.func.count()).select_from(Asset)) > 0
            assert session.scalar(sa.select(sa.func.count()).select_from(EtlRun)) == 2
    finally:
        engine.dispose()
