"""The dashboard at ``/`` reads without JavaScript: the server renders its tables and cards.

The page as the server sends it already holds the top assets, each source's health and the run
log, on both engines; it loads nothing from outside; and its numbers follow the same rules as
the script that refreshes it (held to them in tests/test_dashboard_browser.py).
"""

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import sqlalchemy as sa

from kasparro.etl.sources import SOURCES
from kasparro.extensions import db
from kasparro.models import EtlRun
from kasparro.routes.dashboard import duration, percent, usd, usd_compact, utc
from tests.coingecko_imitation import make_coin
from tests.test_docs_offline import references

PAGE_ASSETS = {
    "vendor/uplot/uPlot.iife.min.js": "text/javascript",
    "vendor/uplot/uPlot.min.css": "text/css",
    "dashboard/dashboard.js": "text/javascript",
    "dashboard/dashboard.css": "text/css",
    "dashboard/favicon.svg": "image/svg+xml",
}
STATIC = Path(__file__).resolve().parent.parent / "kasparro" / "static"


class PageText(HTMLParser):
    """Read the text of a page's table rows (by their ``tbody`` id) and of its source cards.

    Text is kept as its pieces, stripped, without the whitespace between elements: the script
    builds the same elements without that whitespace.
    """

    def __init__(self):
        super().__init__()
        self.rows: dict[str, list[list[str]]] = defaultdict(list)
        self.cards: dict[str, list[str]] = {}
        self._tbody: str | None = None
        self._cell: list[str] | None = None
        self._card: str | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "tbody":
            self._tbody = attributes.get("id")
        elif tag == "tr" and self._tbody:
            self.rows[self._tbody].append([])
        elif tag == "td" and self._tbody:
            self._cell = []
        elif tag == "article" and "data-source" in attributes:
            self._card = attributes["data-source"]
            self.cards[self._card] = []

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._tbody = None
        elif tag == "td" and self._cell is not None:
            self.rows[self._tbody][-1].append(" ".join(self._cell))
            self._cell = None
        elif tag == "article":
            self._card = None

    def handle_data(self, data):
        text = data.strip()
        if not text:
            return
        if self._cell is not None:
            self._cell.append(text)
        if self._card is not None:
            self.cards[self._card].append(text)


def page_text(html: str) -> PageText:
    """Return the rows and cards of a dashboard page."""
    parser = PageText()
    parser.feed(html)
    return parser


def get_page(client) -> str:
    """Return the dashboard's HTML, checking that it is served as a page."""
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True)


def test_the_page_without_script_holds_the_top_assets_the_sources_and_the_run_log(client, run_etl):
    runs = run_etl("csv1", "csv2", "coingecko_api")

    text = page_text(get_page(client))

    assets = text.rows["asset-rows"]
    # Bitcoin has the largest market cap; its price is the median of csv1's newest price
    # (87501.25) and CoinGecko's (87387): 87444.125, shown to the cent, ties away from zero.
    assert assets[0] == [
        "1",
        "Bitcoin BTC",
        "$87,444.13",
        "—",
        "0.13%",
        "$1.74T",
        "coingecko_api, csv1, csv2",
        "2025-12-27 11:46:20 UTC",
    ]
    assert [row[1] for row in assets[:3]] == ["Bitcoin BTC", "Ethereum ETH", "Tether USDT"]
    assert len(assets) == 10
    logged = {int(row[0]): row for row in text.rows["run-rows"]}
    for run in runs.values():
        row = logged[run.id]
        assert row[1:4] == [run.source, run.status, "cli"]
        assert row[5] == f"{run.duration_ms:,} ms"
        assert row[6:11] == [
            str(n) for n in (run.rows_read, run.inserted, run.updated, run.unchanged, run.rejected)
        ]
    assert list(text.cards) == list(SOURCES)
    for source, run in runs.items():
        card = text.cards[source]
        assert card[:2] == [source, run.status]
        assert card[card.index("Last run") + 1] == utc(run.finished_at)


def test_the_run_log_lists_the_newest_runs_first_as_the_database_holds_them(client, run_etl):
    for _ in range(3):
        run_etl("csv1", "csv2")

    rows = page_text(get_page(client)).rows["run-rows"]

    stored = db.session.execute(
        sa.select(EtlRun.id, EtlRun.source, EtlRun.status).order_by(EtlRun.id.desc())
    ).all()
    assert [(int(row[0]), row[1], row[2]) for row in rows] == [tuple(run) for run in stored]


def test_a_failed_run_shows_as_the_sources_health_with_its_error(client, run_etl, coingecko):
    coingecko.coins = "not a list of coins"  # the imitation serves it; the source refuses it

    failed = run_etl("coingecko_api")["coingecko_api"]

    assert failed.status == "FAILED"
    card = page_text(get_page(client)).cards["coingecko_api"]
    assert card[:2] == ["coingecko_api", "FAILED"]
    assert card[card.index("Last failure") + 1] == utc(failed.finished_at)
    assert card[-1] == failed.error


def test_the_page_of_an_empty_database_says_nothing_was_observed_or_run(client):
    text = page_text(get_page(client))

    assert text.rows["asset-rows"] == [["No asset has been observed yet."]]
    assert text.rows["run-rows"] == [["No run yet."]]
    assert {source: card[:2] for source, card in text.cards.items()} == {
        source: [source, "never run"] for source in SOURCES
    }


def test_names_from_a_source_are_shown_as_text_never_as_markup(client, run_etl, coingecko):
    coingecko.coins = [make_coin("evil", "<b>", "<script>alert(1)</script>", 2.5, 10**15, 1, 1)]
    run_etl("coingecko_api")

    html = get_page(client)

    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert page_text(html).rows["asset-rows"][0][1] == "<script>alert(1)</script> <B>"


def test_a_run_made_after_the_page_was_served_shows_on_the_next_load(client, run_etl):
    before = page_text(get_page(client)).rows["run-rows"]
    run = run_etl("csv1")["csv1"]

    after = page_text(get_page(client)).rows["run-rows"]

    assert before == [["No run yet."]]
    assert [int(row[0]) for row in after] == [run.id]


def test_the_page_loads_every_asset_from_the_app_itself(client):
    response = client.get("/")
    html = response.get_data(as_text=True)

    policy = response.headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'self';")
    assert "script-src" not in policy and "unsafe-inline" not in policy
    urls = references(html)
    assert {urlsplit(url).path.removeprefix("/static/") for url in urls} == set(PAGE_ASSETS)
    for url in urls:
        absolute = urljoin("http://localhost/", url)
        assert urlsplit(absolute).netloc == "localhost", f"the page loads {url} from elsewhere"
        asset = client.get(urlsplit(absolute).path)
        path = urlsplit(absolute).path.removeprefix("/static/")
        assert asset.status_code == 200, url
        assert asset.mimetype == PAGE_ASSETS[path], url
        assert asset.get_data() == (STATIC / path).read_bytes()
        asset.close()


def test_the_page_is_documented_as_html(client):
    operation = client.get("/openapi.json").get_json()["paths"]["/"]["get"]

    assert list(operation["responses"]["200"]["content"]) == ["text/html"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "—"),
        (Decimal("0"), "$0.00"),
        (Decimal("87444.125"), "$87,444.13"),  # a tie: away from zero
        (Decimal("1.005"), "$1.01"),  # the shortest decimal of the double is 1.005: a tie
        (Decimal("1234567.891"), "$1,234,567.89"),
        (Decimal("0.999512"), "$0.9995"),
        (Decimal("0.99995"), "$1.000"),  # four significant digits, the carry included
        (Decimal("0.000012345"), "$0.00001235"),
        ("0.12624", "$0.1262"),
    ],
)
def test_prices_show_cents_from_a_dollar_and_four_significant_digits_below(value, text):
    assert usd(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("1744910741787"), "$1.74T"),
        (Decimal("352547418866"), "$352.55B"),
        (Decimal("999999"), "$1,000.00K"),
        (Decimal("12.5"), "$12.50"),
        (None, "—"),
    ],
)
def test_large_amounts_show_in_thousands_millions_billions_or_trillions(value, text):
    assert usd_compact(value) == text


@pytest.mark.parametrize(
    ("value", "signed", "text"),
    [
        (1.005, True, "+1.01%"),
        (-0.125, True, "-0.13%"),
        (-0.004, True, "0.00%"),
        (0.0, True, "0.00%"),
        (0.13065, False, "0.13%"),
        (1234.5, False, "1,234.50%"),
        (None, False, "—"),
    ],
)
def test_percentages_show_two_decimals_and_a_sign_when_asked(value, signed, text):
    assert percent(value, signed=signed) == text


def test_times_show_in_utc_to_the_second_and_durations_in_milliseconds():
    moment = datetime(2025, 12, 27, 10, 46, 21, 999_000, tzinfo=UTC)

    assert utc(moment) == "2025-12-27 10:46:21 UTC"
    assert utc(None) == "—"
    assert duration(1234) == "1,234 ms"
    assert duration(None) == "—"
