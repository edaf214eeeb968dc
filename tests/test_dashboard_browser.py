"""The dashboard in a real headless browser: Debian's Chromium, driven through its chromedriver.

One browser session serves the module. It loads ``/`` from a real server on loopback (werkzeug,
threaded) over a PostgreSQL database filled by real ETL runs: csv1, csv2, and the CoinGecko
imitation run once, then again after each of five price ticks for bitcoin, with one failed run
among them. The tests check that the charts hold the API's buckets and are drawn, that the run
log and the sources' health show what the database holds, that the script writes the tables as
the server did, that nothing is fetched from elsewhere, and they save screenshots at a laptop's
and a phone's width (also to ``$DASHBOARD_SCREENSHOTS`` when it is set).
"""

import base64
import json
import os
import shutil
import struct
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode
from urllib.request import urlopen

import pytest
import sqlalchemy as sa
from flask import Flask
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import Select, WebDriverWait
from werkzeug.serving import WSGIRequestHandler, make_server

from kasparro import create_app
from kasparro.etl.pipeline import run_source
from kasparro.extensions import db
from kasparro.models import EtlRun
from kasparro.routes.dashboard import count, duration, percent, usd, usd_compact
from tests.coingecko_imitation import CoinGeckoImitation
from tests.conftest import DATA_DIR, FAST_UPSTREAM, TEST_API_KEY, emptied
from tests.test_dashboard import page_text

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTHS = {"laptop": 1366, "phone": 390}
HEIGHT = 900
WAIT_SECONDS = 30  # how long a wait for the page may last before the test fails
# Bitcoin's CoinGecko price, one tick every 20 minutes after the first run (10:46:21 UTC).
BITCOIN_TICKS = (87420, 87480, 87455, 87530, 87510)
TICK_SECONDS = 20 * 60


@dataclass
class DashboardServer:
    """The app and the loopback URL it is served on."""

    app: Flask
    url: str

    def get_json(self, path: str, **query) -> dict:
        """Return the JSON body the server answers ``path`` with."""
        with urlopen(f"{self.url}{path}?{urlencode(query)}" if query else self.url + path) as r:
            return json.load(r)

    def get_text(self, path: str) -> str:
        """Return the text body the server answers ``path`` with."""
        with urlopen(self.url + path) as response:
            return response.read().decode()


class QuietHandler(WSGIRequestHandler):
    """Werkzeug's request handler without its access log: the app logs each request already."""

    def log_request(self, code="-", size="-") -> None:
        """Log nothing."""


def run(app: Flask, source: str) -> EtlRun:
    """Run ``source`` in-process and return its finished run."""
    return run_source(db.session, source, app.config, trigger="cli")


@pytest.fixture(scope="module")
def server(postgres_url, tmp_path_factory):
    """Serve the app on loopback over PostgreSQL, with the data of a few ETL runs."""
    workdir = tmp_path_factory.mktemp("dashboard")
    for name in ("source1.csv", "source2.csv"):
        shutil.copy(DATA_DIR / name, workdir / name)
    with CoinGeckoImitation() as coingecko:
        app = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": emptied(postgres_url),
                "API_SOURCE_URL": coingecko.url,
                "API_KEY": TEST_API_KEY,
                "CSV1_PATH": str(workdir / "source1.csv"),
                "CSV2_PATH": str(workdir / "source2.csv"),
                "REDIS_URL": "",
                "LOG_LEVEL": "WARNING",
                **FAST_UPSTREAM,
            }
        )
        with app.app_context():
            for source in ("csv1", "csv2", "coingecko_api"):
                run(app, source)
            for tick, price in enumerate(BITCOIN_TICKS):
                if tick == 3:  # a failed run among them, for the run log and the health
                    coins, coingecko.coins = coingecko.coins, "not a list of coins"
                    assert run(app, "coingecko_api").status == "FAILED"
                    coingecko.coins = coins
                coingecko.move_price("bitcoin", price, seconds_later=TICK_SECONDS)
                assert run(app, "coingecko_api").status == "SUCCESS"
            db.session.remove()
        http = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        thread = threading.Thread(target=http.serve_forever, daemon=True)
        thread.start()
        try:
            yield DashboardServer(app, f"http://127.0.0.1:{http.server_port}")
        finally:
            http.shutdown()
            thread.join()
            with app.app_context():
                db.engine.dispose()


@pytest.fixture(scope="module")
def browser():
    """Start one headless Chromium for the module, from the Debian packages, downloading nothing."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--hide-scrollbars",
        f"--window-size={WIDTHS['laptop']},{HEIGHT}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A driver path of our own: Selenium Manager is never asked to find or fetch one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def set_width(driver, width: int, height: int = HEIGHT) -> None:
    """Make the page's viewport ``width`` CSS pixels wide, one device pixel each."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
    )


def wait_for(driver, script: str, *args):
    """Wait until ``script`` returns something true, and return it."""
    return WebDriverWait(driver, WAIT_SECONDS).until(lambda d: d.execute_script(script, *args))


def load(driver, url: str) -> None:
    """Load the dashboard and wait for its first refresh to end."""
    driver.get(url)
    wait_for(driver, "return window.kasparroDashboard && window.kasparroDashboard.refreshes > 0")


@pytest.fixture(scope="module")
def dashboard(browser, server):
    """Return the browser with the dashboard loaded at a laptop's width."""
    set_width(browser, WIDTHS["laptop"])
    load(browser, f"{server.url}/")
    return browser


@pytest.fixture
def laptop(dashboard):
    """Return the loaded dashboard at a laptop's width, showing the top few assets by the hour."""
    set_width(dashboard, WIDTHS["laptop"])
    choose(dashboard, asset="", interval="1h")
    assert dashboard.execute_script("return window.kasparroDashboard.failures") == 0
    return dashboard


def choose(driver, *, asset: str, interval: str) -> None:
    """Choose what the charts show, and wait until they are drawn again when that changed."""
    drawings = driver.execute_script("return window.kasparroDashboard.drawings")
    changed = False
    for select_id, value in (("chart-asset", asset), ("chart-interval", interval)):
        select = Select(driver.find_element("id", select_id))
        if select.first_selected_option.get_attribute("value") != value:
            select.select_by_value(value)
            drawings += 1
            changed = True
    if changed:
        wait_for(driver, f"return window.kasparroDashboard.drawings >= {drawings}")


def charted_assets(driver) -> list[str]:
    """Return the ids of the charted assets, in the order of their charts on the page."""
    return driver.execute_script(
        "return [...document.querySelectorAll('.chart-card')].map((card) => card.dataset.asset)"
    )


def chart_state(driver, asset_id: str) -> dict:
    """Return what a drawn chart holds: its series, data, request and canvas colours."""
    return driver.execute_script(
        """
        const chart = window.kasparroDashboard.charts.get(arguments[0]);
        const plot = chart.plot;
        const stroke = (series, index) =>
          typeof series.stroke === "function" ? series.stroke(plot, index) : series.stroke;
        const canvas = plot.ctx.canvas;
        const pixels = plot.ctx.getImageData(0, 0, canvas.width, canvas.height).data;
        const painted = (hex) => {
          const [r, g, b] = [1, 3, 5].map((at) => parseInt(hex.slice(at, at + 2), 16));
          let found = 0;
          for (let i = 0; i < pixels.length; i += 4) {
            const distance =
              Math.abs(pixels[i] - r) + Math.abs(pixels[i + 1] - g) + Math.abs(pixels[i + 2] - b);
            if (pixels[i + 3] > 200 && distance < 40) found += 1;
          }
          return found;
        };
        return {
          labels: plot.series.map((series) => series.label),
          data: plot.data.map((column) => Array.from(column)),
          interval: chart.interval,
          since: chart.since,
          painted: plot.series.slice(1).map((series, index) => painted(stroke(series, index + 1))),
          width: plot.width,
          boxWidth: chart.body.clientWidth,
        };
        """,
        asset_id,
    )


def api_buckets(server, asset_id: str, source: str, interval: str, since: str) -> list[dict]:
    """Return every bucket of an asset's price history from one source, following the cursor."""
    buckets, cursor = [], None
    while True:
        query = {"metric": "price_usd", "source": source, "interval": interval, "since": since}
        page = server.get_json(
            f"/assets/{asset_id}/history", **query, **({"cursor": cursor} if cursor else {})
        )
        buckets += page["buckets"]
        cursor = page["next_cursor"]
        if cursor is None:
            return buckets


def epoch(text: str) -> int:
    """Return the Unix time of an ISO 8601 moment."""
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def aligned(server, asset_id: str, sources: list[str], interval: str, since: str) -> list[list]:
    """Return the API's closes per source, aligned on every source's bucket starts."""
    closes = {
        source: {
            epoch(b["start"]): float(b["close"])
            for b in api_buckets(server, asset_id, source, interval, since)
        }
        for source in sources
    }
    starts = sorted({start for by_start in closes.values() for start in by_start})
    return [starts] + [[closes[source].get(start) for start in starts] for source in sources]


def test_each_chart_holds_the_api_buckets_of_each_source_and_is_drawn(laptop, server):
    top = server.get_json("/assets", sort="market_cap", page_size=4)["assets"]
    assert charted_assets(laptop) == [asset["id"] for asset in top]

    for asset in top:
        chart = chart_state(laptop, asset["id"])
        sources = chart["labels"][1:]
        detail = server.get_json(f"/assets/{asset['id']}")
        assert sources == sorted(
            v["source"] for v in detail["latest"] if v["metric"] == "price_usd"
        )
        assert chart["data"] == aligned(server, asset["id"], sources, "1h", chart["since"])
        # Every source shows, where sources agree too (as a ring around a later source's point).
        assert all(painted > 10 for painted in chart["painted"]), chart["painted"]

    # Bitcoin's closes, hour by hour, as the runs made them.
    bitcoin = chart_state(laptop, "bitcoin")
    hours = [datetime(2025, 12, 27, hour, tzinfo=UTC) for hour in (10, 11, 12)]
    assert bitcoin["labels"] == ["Bucket (UTC)", "coingecko_api", "csv1"]
    assert all(painted > 200 for painted in bitcoin["painted"]), bitcoin["painted"]  # lines
    assert bitcoin["data"] == [
        [int(hour.timestamp()) for hour in hours],
        [87387, 87455, 87510],
        [87387, 87501.25, None],
    ]


def test_a_chosen_asset_is_charted_alone_in_the_chosen_buckets(dashboard, server):
    choose(dashboard, asset="bitcoin", interval="5m")

    charted = charted_assets(dashboard)
    chart = chart_state(dashboard, "bitcoin")
    address = dashboard.execute_script("return window.location.hash")
    choose(dashboard, asset="", interval="1h")

    assert charted == ["bitcoin"]
    assert address == "#chart=bitcoin"
    assert chart["interval"] == "5m"
    assert chart["data"] == aligned(
        server, "bitcoin", ["coingecko_api", "csv1"], "5m", chart["since"]
    )
    # One CoinGecko price per 5 minutes; csv1's two fall in two of those buckets.
    assert len(chart["data"][0]) == 1 + len(BITCOIN_TICKS)
    assert chart["data"][2].count(None) == len(BITCOIN_TICKS) - 1


def test_the_run_log_and_the_sources_health_show_what_the_database_holds(laptop, server):
    rows = laptop.execute_script(
        """return [...document.querySelectorAll("#run-rows tr")].map(
             (row) => [...row.cells].slice(0, 3).map((cell) => cell.textContent.trim()));"""
    )
    with server.app.app_context():
        runs = db.session.execute(
            sa.select(EtlRun.id, EtlRun.source, EtlRun.status).order_by(EtlRun.id.desc())
        ).all()
        db.session.remove()
    assert [(int(run_id), source, status) for run_id, source, status in rows] == [
        tuple(run) for run in runs
    ]
    assert "FAILED" in {status for _, _, status in rows}

    cards = laptop.execute_script(
        """return Object.fromEntries([...document.querySelectorAll(".source-card")].map(
             (card) => [card.dataset.source, card.querySelector(".status").textContent]));"""
    )
    stats = server.get_json("/stats")["sources"]
    assert cards == {name: source["last_status"] for name, source in stats.items()}
    assert cards == {"coingecko_api": "SUCCESS", "csv1": "SUCCESS", "csv2": "PARTIAL"}
    status = laptop.find_element("id", "service-status").text
    assert status.startswith(server.get_json("/health")["status"])


def dom_text(driver) -> dict:
    """Return the page's table rows and source cards as the script left them, piece by piece."""
    return driver.execute_script(
        """
        const pieces = (node) => {
          const walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
          const found = [];
          while (walker.nextNode()) {
            const text = walker.currentNode.textContent.trim();
            if (text) found.push(text);
          }
          return found;
        };
        const rows = (id) => [...document.querySelectorAll(`#${id} tr`)].map(
          (row) => [...row.cells].map((cell) => pieces(cell).join(" ")));
        return {
          rows: {"asset-rows": rows("asset-rows"), "run-rows": rows("run-rows")},
          cards: Object.fromEntries([...document.querySelectorAll(".source-card")].map(
            (card) => [card.dataset.source, pieces(card)])),
        };
        """
    )


def test_the_script_writes_the_tables_and_cards_as_the_server_rendered_them(laptop, server):
    served = page_text(server.get_text("/"))

    refreshed = dom_text(laptop)

    assert refreshed["rows"] == {name: served.rows[name] for name in ("asset-rows", "run-rows")}
    assert refreshed["cards"] == served.cards
    assert refreshed["rows"]["asset-rows"][0][:3] == ["1", "Bitcoin BTC", "$87,505.63"]


NUMBERS = ["0", "87505.625", "1.005", "0.125", "0.99995", "0.000012345", "1744910741787", "999999"]
PERCENTS = [0.0, 1.005, -0.125, -0.004, 0.0099998, 12345.675]
FORMAT_CASES = (  # (the script's formatter, its arguments, what the server writes)
    [("usd", [n], usd(Decimal(n))) for n in NUMBERS]
    + [("usdCompact", [n], usd_compact(Decimal(n))) for n in NUMBERS]
    + [("percent", [p, s], percent(p, signed=s)) for p in PERCENTS for s in (False, True)]
    + [("count", [n], count(n)) for n in (0, 7, 1234567)]
    + [("duration", [n], duration(n)) for n in (0, 1234)]
    + [(name, [None], "—") for name in ("usd", "usdCompact", "percent", "count", "duration")]
)


def test_the_script_formats_numbers_exactly_as_the_server_does(laptop):
    written = laptop.execute_script(
        "const format = window.kasparroDashboard.format;"
        "return arguments[0].map(([name, args]) => format[name](...args));",
        [[name, args] for name, args, _ in FORMAT_CASES],
    )

    assert written == [text for _, _, text in FORMAT_CASES]


def test_the_page_fetches_nothing_from_elsewhere_and_logs_no_error(laptop, server):
    fetched = laptop.execute_script(
        "return performance.getEntriesByType('resource').map((entry) => entry.name)"
    )
    errors = [entry for entry in laptop.get_log("browser") if entry["level"] == "SEVERE"]

    assert fetched, "the page fetched nothing at all"
    assert [url for url in fetched if not url.startswith(f"{server.url}/")] == []
    assert errors == []


def png_size(image: bytes) -> tuple[int, int]:
    """Return the width and height written in a PNG's header."""
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    return struct.unpack(">II", image[16:24])


def full_page_screenshot(driver, width: int) -> bytes:
    """Return a PNG of the whole page, its full height, at ``width`` CSS pixels."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    set_width(driver, width, height)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    set_width(driver, width)
    return base64.b64decode(shot["data"])


@pytest.mark.parametrize("device", WIDTHS)
def test_the_page_fits_the_width_and_is_saved_as_a_screenshot(laptop, device, tmp_path):
    width = WIDTHS[device]
    set_width(laptop, width)
    # The charts follow their boxes' width (a ResizeObserver resizes them).
    wait_for(
        laptop,
        """return [...window.kasparroDashboard.charts.values()].every(
             (chart) => chart.plot.width === Math.max(chart.body.clientWidth, 200));""",
    )

    overflow = laptop.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    stacked = laptop.execute_script(
        "return getComputedStyle(document.querySelector('#asset-rows tr')).display"
    )
    image = full_page_screenshot(laptop, width)

    assert overflow == 0  # nothing sticks out sideways: the run log scrolls inside its box
    assert stacked == ("grid" if device == "phone" else "table-row")
    assert png_size(image)[0] == width
    assert len(image) > 20_000  # drawn, not blank
    name = f"dashboard-{device}-{width}px.png"
    (tmp_path / name).write_bytes(image)
    if os.environ.get("DASHBOARD_SCREENSHOTS"):
        folder = Path(os.environ["DASHBOARD_SCREENSHOTS"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(image)
