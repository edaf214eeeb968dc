"""API fuzzing: schemathesis generates requests for every operation of the app's OpenAPI document.

The app runs in-process (WSGI) on a SQLite file holding the CSV feeds and the CoinGecko imitation's
coins. Valid and invalid requests alike must get no server error, and every answer must be what
the document declares: a declared status code, the declared content type, a body that matches the
declared schema and the declared headers; invalid input must be rejected. POST /etl/run cases carry
the admin token, so the valid ones really run the sources (eagerly, in-process).
"""

import shutil
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from kasparro import create_app
from kasparro.etl.pipeline import run_source
from kasparro.extensions import db
from tests.coingecko_imitation import CoinGeckoImitation
from tests.conftest import ADMIN_TOKEN, DATA_DIR, FAST_UPSTREAM, TEST_API_KEY

MAX_EXAMPLES = 200  # per operation, for the generated (random) phase; coverage cases come on top
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    missing_required_header,
]
# Invalid input may also be refused by the request limits (414, 431).
REJECTIONS = "400 401 403 404 405 406 409 414 415 422 428 429 431".split()
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# The embedded mode whatever the environment says: tasks in-process, no Redis, no request limit.
EMBEDDED = {
    "CELERY": {"broker_url": "memory://", "result_backend": None, "task_always_eager": True},
    "REDIS_URL": "",
    "PUBLIC_RATE_LIMIT": "",
    "LOG_LEVEL": "WARNING",
}
CASES: Counter = Counter()  # generated cases per operation, reported by the last test


def load_schema():
    """Load the app's own /openapi.json (the document does not depend on the data).

    ``schemathesis.pytest.from_fixture`` cannot be used: it sets ``Function._nodeid``, which
    pytest 9.2 no longer has. So the document is read at import from an app of its own, and the
    cases are sent to ``fuzz_app``.
    """
    spec_app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", **EMBEDDED})
    document = spec_app.test_client().get("/openapi.json").get_json()
    # flask-smorest adds a catch-all "default" response to every operation, which would let any
    # status code pass; without it, every code the API answers with must be declared.
    for operations in document["paths"].values():
        for operation in operations.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("default", None)
    config = schemathesis.Config.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}
    )
    return schemathesis.openapi.from_dict(document, config=config)


schema = load_schema()


@pytest.fixture(scope="module")
def fuzz_app(sqlite_template, tmp_path_factory):
    """Yield an embedded-mode app on its own SQLite file, loaded from every source once."""
    workdir = tmp_path_factory.mktemp("fuzz")
    shutil.copy(sqlite_template, workdir / "etl.db")
    for name in ("source1.csv", "source2.csv"):
        shutil.copy(DATA_DIR / name, workdir / name)
    with CoinGeckoImitation() as coingecko:
        app = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{workdir / 'etl.db'}",
                "API_SOURCE_URL": coingecko.url,
                "API_KEY": TEST_API_KEY,
                "CSV1_PATH": str(workdir / "source1.csv"),
                "CSV2_PATH": str(workdir / "source2.csv"),
                "ETL_ADMIN_TOKEN": ADMIN_TOKEN,
                **EMBEDDED,
                **FAST_UPSTREAM,
            }
        )
        with app.app_context():
            for source in ("csv1", "csv2", "coingecko_api"):
                run_source(db.session, source, app.config, trigger="cli")
            db.session.remove()
        yield app
        with app.app_context():
            db.engine.dispose()


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_conforms_to_the_document(case, fuzz_app):
    """No 5xx; status code, content type, headers and body as declared; bad input refused."""
    CASES[f"{case.method.upper()} {case.path}"] += 1
    case.call_and_validate(app=fuzz_app, headers=AUTH, checks=CHECKS)


@pytest.mark.parametrize("path", ["/data", "/health", "/stats", "/runs", "/runs/1", "/etl/run"])
def test_undeclared_method_answers_405_json_with_allow(fuzz_app, path):
    """A method a path does not have gets 405 in JSON, with the Allow header RFC 9110 requires."""
    response = fuzz_app.test_client().delete(path, headers=AUTH)
    assert response.status_code == 405
    assert response.mimetype == "application/json"
    assert response.get_json()["code"] == 405
    assert "Allow" in response.headers, dict(response.headers)
    assert "DELETE" not in response.headers["Allow"]


def test_generated_enough_cases():
    """Report how many cases were generated (run with -s to see it) and that there were many."""
    total = sum(CASES.values())
    print(f"\nschemathesis generated {total} cases: {dict(sorted(CASES.items()))}")
    if not CASES:
        pytest.skip("the fuzzing test did not run (deselected)")
    for operation in ("GET /data", "GET /runs", "GET /runs/{run_id}", "POST /etl/run"):
        if operation in CASES:  # (absent when deselected with -k)
            assert CASES[operation] >= MAX_EXAMPLES // 2, operation
