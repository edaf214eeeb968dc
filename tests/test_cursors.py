"""A cursor's decoded contents are checked the way query arguments are: anything this server did
not issue is a 400 naming ``cursor``, with a JSON body, on both engines; never a 500.

A cursor is URL-safe base64 of compact JSON, so a client can forge any JSON inside one: a NUL or
a lone surrogate in a string, a boolean or a fraction for an id, a time without a zone or out of
range, a position of the wrong shape.
"""

import base64
import json
from datetime import UTC, datetime

import pytest

from kasparro.extensions import db
from tests.crafted import Crafted

AT = "2025-03-01T10:00:00+00:00"
LONG_AGO = "2009-01-03T00:00:00+00:00"


def forged(fields) -> str:
    """Return a cursor holding ``fields``, packed as the server packs its own."""
    text = json.dumps(fields, separators=(",", ":"))  # ASCII: "\ud800" stays an escape
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.fixture
def stored(app):
    """Store two assets, each with jumps and a disagreement between two sources."""
    crafted = Crafted()
    for asset in ("bitcoin", "ethereum"):
        crafted.asset(asset, asset[:3].upper(), asset.title())
        for hour, value in enumerate(("100", "300", "90")):
            moment = datetime(2025, 3, 1, 10 + hour, tzinfo=UTC)
            crafted.observe(asset, "csv1", "price_usd", value, moment)
            crafted.observe(asset, "csv2", "price_usd", "120", moment)
    db.session.commit()


# Contents a client may forge, for the fields each route's cursor holds.
TEXTS = ["\x00", "bitcoin\x00", "\ud800", "a\udfffb"]  # NUL, lone surrogates
TIMES = [
    "2025-03-01T10:00:00\x00",
    "\ud800",
    "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
    "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
    12345,
    None,
]
IDS = [True, False, 1.5, -1, 2**63, "1", None]

DATA_CURSORS = [
    *({"t": time, "i": 1} for time in TIMES),
    *({"t": AT, "i": record_id} for record_id in IDS),
    {"t": AT},
    {"t": AT, "i": 1, "x": 1},
]
HISTORY_CURSORS = [{"b": seconds} for seconds in (True, 3600.0, "3600", None, -(2**62), 2**62)]
ANOMALY_CURSORS = [
    *({"k": "source_disagreement", "p": [text, "price_usd"], "s": LONG_AGO} for text in TEXTS),
    *({"k": "source_disagreement", "p": ["bitcoin", text], "s": LONG_AGO} for text in TEXTS),
    {"k": "source_disagreement", "p": "ab", "s": LONG_AGO},  # a string is no position
    {"k": "source_disagreement", "p": ["bitcoin", "price_usd", "x"], "s": LONG_AGO},
    {"k": "source_disagreement", "p": ["b" * 201, "price_usd"], "s": LONG_AGO},
    *({"k": "value_jump", "p": [time, 1], "s": LONG_AGO} for time in TIMES),
    *({"k": "value_jump", "p": [AT, record_id], "s": LONG_AGO} for record_id in IDS),
    *({"k": "run_outlier", "p": [run_id, 0], "s": LONG_AGO} for run_id in IDS),
    {"k": "run_outlier", "p": [1, True], "s": LONG_AGO},
    *({"k": "run_outlier", "p": [1, 0], "s": time} for time in TIMES),
    *({"k": kind, "p": [1, 0], "s": LONG_AGO} for kind in ("\x00", "\ud800", ["run_outlier"])),
    {"p": [1, 0], "s": LONG_AGO},
]


def cases(path: str, cursors: list, **query) -> list:
    """Return a test case per cursor, each named by the request and the cursor's position."""
    label = "&".join(f"{key}={value}" for key, value in query.items())
    return [
        pytest.param(path, cursor, query, id=f"{path}?{label}-{i}")
        for i, cursor in enumerate(cursors)
    ]


@pytest.mark.parametrize(
    ("path", "cursor", "query"),
    [
        *cases("/data", DATA_CURSORS),
        *cases("/data", DATA_CURSORS[:3], asset="bitcoin"),
        *cases("/assets/bitcoin/history", HISTORY_CURSORS, interval="1h"),
        *cases("/anomalies", ANOMALY_CURSORS),
        *cases("/anomalies", ANOMALY_CURSORS[:4], kind="source_disagreement", source="csv1"),
    ],
)
def test_a_forged_cursor_is_a_400_naming_it(client, stored, path, cursor, query):
    response = client.get(path, query_string={**query, "cursor": forged(cursor)})

    assert response.status_code == 400, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert list(body["errors"]["query"]) == ["cursor"]
    assert "cursor" in body["message"]


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/data", {"page_size": 1}),
        ("/assets/bitcoin/history", {"interval": "1h", "limit": 1}),
        ("/anomalies", {"since": LONG_AGO, "page_size": 1}),
        ("/anomalies", {"since": LONG_AGO, "page_size": 1, "kind": "source_disagreement"}),
    ],
)
def test_the_cursors_this_server_issues_are_taken(client, stored, path, query):
    pages, cursor = 0, None
    while True:
        response = client.get(
            path, query_string={**query, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200, response.get_json()
        pages += 1
        body = response.get_json()
        cursor = body.get("next_cursor") or body.get("pagination", {}).get("next_cursor")
        if cursor is None:
            break

    assert pages > 1


@pytest.mark.parametrize(
    "cursor_time", ["2025-03-01T11:00:00", "2025-03-01T11:00:00+00:00", "2025-03-01T13:00:00+02:00"]
)
def test_a_cursor_time_without_a_zone_is_utc_as_in_a_query(client, stored, cursor_time):
    # Newest first, the page after (11:00, id 0) holds the 10:00 observations.
    response = client.get("/data", query_string={"cursor": forged({"t": cursor_time, "i": 0})})

    assert response.status_code == 200
    assert {row["timestamp"] for row in response.get_json()["data"]} == {AT}
    assert len(response.get_json()["data"]) == 4
