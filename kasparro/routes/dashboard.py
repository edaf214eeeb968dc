"""``GET /``: the dashboard, rendered by the server and kept current by its script.

The server renders the top assets, each source's health and the run log into the page, so it
reads without JavaScript. The script (kasparro/static/dashboard/dashboard.js) then draws the
price charts and refreshes everything from the same JSON API the page links to. Every asset the
page loads is served from kasparro/static/, and its Content-Security-Policy (the app's own,
kasparro/middleware.py) lets the browser fetch nothing from anywhere else.

The numbers are formatted here and by the script with the same rules, so that a refresh changes
no text that the data did not change. Both round the shortest decimal that reads back as the same
double (what ``repr`` prints, and what the browser's ``Intl.NumberFormat`` rounds), ties away from
zero, and group thousands with commas.
"""

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

import sqlalchemy as sa
from flask import current_app, render_template
from flask_smorest import Blueprint
from sqlalchemy.orm import Session

from kasparro.extensions import db
from kasparro.models import EtlRun
from kasparro.read.assets import list_assets
from kasparro.read.sources import source_stats
from kasparro.read.values import DEFAULT_PRECISION
from kasparro.routes.kept_answers import kept_value

blp = Blueprint("dashboard", __name__, description="The dashboard page")

TOP_ASSETS = 10
CHARTED_ASSETS = 4  # the top few get a price chart; any other of the table can be chosen
RUN_LOG_LENGTH = 20
REFRESH_SECONDS = 60
MISSING = "—"
COMPACT_UNITS = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"))


@blp.route("/")
@blp.response(
    200, {"type": "string"}, content_type="text/html", description="The dashboard, an HTML page"
)
def show_dashboard():
    """Show the top assets, their price charts, each source's health and the run log."""
    # Kept like the API's answers until the next ETL commit: every figure on it is data.
    html = kept_value(lambda: render_template("dashboard.html", **dashboard_content(db.session)))
    return current_app.response_class(html, mimetype="text/html")


def dashboard_content(session: Session) -> dict[str, Any]:
    """Return what the page shows before its script runs: assets, sources and recent runs."""
    runs = session.scalars(sa.select(EtlRun).order_by(EtlRun.id.desc()).limit(RUN_LOG_LENGTH))
    return {
        "assets": list_assets(session, sort="market_cap", page=1, page_size=TOP_ASSETS)["assets"],
        "sources": source_stats(session),
        "runs": list(runs),
        "limits": {
            "top_assets": TOP_ASSETS,
            "charted_assets": CHARTED_ASSETS,
            "run_log_length": RUN_LOG_LENGTH,
            "refresh_seconds": REFRESH_SECONDS,
        },
    }


def rounded(value: float, exponent: int) -> Decimal:
    """Round ``value`` to a multiple of 10**exponent as the browser does, ties away from zero.

    The precision spans every digit from the value's first to 10**exponent: a stored price may
    have 30 digits before the point, and a percentage of it more, beyond the default 28.
    """
    shortest = Decimal(repr(value))
    digits = max(shortest.adjusted(), exponent) - exponent + 2  # one more for a carry
    return shortest.quantize(
        Decimal(1).scaleb(exponent),
        rounding=ROUND_HALF_UP,
        context=Context(prec=max(DEFAULT_PRECISION, digits)),
    )


def significant(value: float, digits: int) -> Decimal:
    """Round ``value`` to ``digits`` significant digits, ties away from zero."""
    exponent = Decimal(repr(value)).adjusted() - digits + 1
    result = rounded(value, exponent)
    # Rounding up may carry into one more digit (0.99995 -> 1.0000): drop the extra zero.
    return result if result.adjusted() - exponent < digits else rounded(value, exponent + 1)


@blp.app_template_filter("usd")
def usd(value: Decimal | str | None) -> str:
    """Format a price: cents from one dollar up, four significant digits below."""
    if value is None:
        return MISSING
    number = float(value)
    if number == 0 or abs(number) >= 1:
        return f"${rounded(number, -2):,}"
    return f"${significant(number, 4):f}"


@blp.app_template_filter("usd_compact")
def usd_compact(value: Decimal | str | None) -> str:
    """Format a large amount in thousands, millions, billions or trillions (``$1.74T``)."""
    if value is None:
        return MISSING
    number = float(value)
    for size, unit in COMPACT_UNITS:
        if abs(number) >= size:
            return f"${rounded(number / size, -2):,}{unit}"
    return usd(value)


@blp.app_template_filter("percent")
def percent(value: float | None, signed: bool = False) -> str:
    """Format a percentage to two decimals, with its sign when ``signed`` and not zero."""
    if value is None:
        return MISSING
    result = rounded(value, -2)
    if result == 0:
        return "0.00%"
    return f"{result:+,}%" if signed else f"{result:,}%"


@blp.app_template_filter("count")
def count(value: int | None) -> str:
    """Format a whole number with thousands grouped."""
    return MISSING if value is None else f"{value:,}"


@blp.app_template_filter("duration")
def duration(milliseconds: int | None) -> str:
    """Format a duration in milliseconds."""
    return MISSING if milliseconds is None else f"{milliseconds:,} ms"


@blp.app_template_filter("utc")
def utc(moment: datetime | None) -> str:
    """Format a moment in UTC to the second."""
    return MISSING if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
