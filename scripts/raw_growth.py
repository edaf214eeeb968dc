"""Storage growth per day at the default schedule, and the steady state under retention.

On a PostgreSQL database of its own (created here, dropped at the end), against the CoinGecko
imitation serving realistic ``/coins/markets`` objects (every field CoinGecko sends):

1. growth: ``coingecko_api`` runs back to back as beat would run them every
   ``SCHEDULE_COINGECKO_API_SECONDS`` (300 s), the given share of coins moving between runs;
   ``pg_total_relation_size`` (rows, TOAST and indexes) before and after gives bytes per run,
   and so per day. The CSV feeds are measured per appended row, since an unchanged file adds
   nothing.
2. batch cost (``--batch-cost-rows``): a raw table filled with that many rows received over 30
   days; the time of each retention batch at the head of the table and of the pass's last batch.
3. steady state (``--simulate-days``): the same runs on a simulated clock (the time rows are
   stamped with moves 300 s per run), with the retention pass every
   ``SCHEDULE_RETENTION_SECONDS`` and a raw age of ``--age-days``, each pass followed by the
   plain VACUUM that autovacuum would run; prints the raw table's size as the days go by.

    .venv/bin/python scripts/raw_growth.py [--coins 1000] [--runs 12] [--moving 1.0]
        [--batch-cost-rows 3000000] [--simulate-days 2 --age-days 1]
"""

import argparse
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import kasparro.etl.load  # noqa: E402
from kasparro import create_app  # noqa: E402
from kasparro.etl.pipeline import run_source  # noqa: E402
from kasparro.etl.retention import apply_retention, raw_batches  # noqa: E402
from kasparro.extensions import db  # noqa: E402
from kasparro.models import RunStatus  # noqa: E402
from tests.coingecko_imitation import CoinGeckoImitation, iso  # noqa: E402
from tests.conftest import scratch_database  # noqa: E402

INTERVAL = 300  # the default beat interval of coingecko_api, seconds
RETENTION_INTERVAL = 3600  # the default beat interval of the retention pass
DAY = 86400
START = datetime(2025, 12, 27, 10, 46, 21, tzinfo=UTC)
WORDS = ("wrapped", "staked", "bridged", "protocol", "finance", "network", "token", "dao", "ai")


def realistic_coin(rank: int, rng: random.Random, updated: datetime) -> dict:
    """Return a coin with every field ``/coins/markets`` sends, at realistic magnitudes."""
    words = rng.sample(WORDS, rng.randint(1, 3))
    coin_id = "-".join([f"coin{rank}", *words])
    price = 10 ** rng.uniform(-6, 5)
    supply = float(int(10 ** rng.uniform(6, 12)))
    coin = {
        "id": coin_id,
        "symbol": f"c{rank}"[:6],
        "name": " ".join(word.title() for word in [f"Coin{rank}", *words]),
        "image": f"https://coin-images.coingecko.com/coins/images/{rank * 7}/large/{coin_id}.png"
        f"?{1696500000 + rank}",
        "market_cap_rank": rank,
        "circulating_supply": supply,
        "total_supply": supply,
        "max_supply": rng.choice([None, supply * 2]),
        "ath_date": "2025-10-06T18:57:42.558Z",
        "atl": price / rng.uniform(2, 1000),
        "atl_date": "2013-07-06T00:00:00.000Z",
        "roi": None,
    }
    return move(coin, price, rng, updated)


def move(coin: dict, price: float, rng: random.Random, updated: datetime) -> dict:
    """Set a new price and every figure derived from it, as a new tick from CoinGecko would."""
    change = rng.uniform(-0.05, 0.05)
    cap = price * coin["circulating_supply"]
    coin.update(
        {
            "current_price": price,
            "market_cap": int(cap),
            "fully_diluted_valuation": int(cap * rng.uniform(1, 1.5)),
            "total_volume": int(cap * rng.uniform(0.001, 0.2)),
            "high_24h": price * (1 + abs(change)),
            "low_24h": price * (1 - abs(change)),
            "price_change_24h": price * change,
            "price_change_percentage_24h": change * 100,
            "market_cap_change_24h": cap * change,
            "market_cap_change_percentage_24h": change * 100 + rng.uniform(-0.1, 0.1),
            "ath": price * rng.uniform(1, 5),
            "ath_change_percentage": -rng.uniform(0, 90),
            "atl_change_percentage": rng.uniform(100, 200000),
            "last_updated": iso(updated),
            "price_change_percentage_1h_in_currency": rng.uniform(-1, 1),
            "price_change_percentage_24h_in_currency": change * 100,
            "price_change_percentage_7d_in_currency": rng.uniform(-10, 10),
            "price_change_percentage_30d_in_currency": rng.uniform(-30, 30),
        }
    )
    return coin


def tick(imitation: CoinGeckoImitation, share: float, rng: random.Random, now: datetime) -> None:
    """Move ``share`` of the coins to ``now``, with new prices."""
    with imitation.lock:
        for coin in imitation.coins:
            if rng.random() < share:
                move(coin, coin["current_price"] * rng.uniform(0.99, 1.01), rng, now)


def sizes(session) -> dict[str, tuple[int, int]]:
    """Return (rows, bytes with TOAST and indexes) of each raw table and of unified_records."""
    tables = ("raw_api_records", "raw_csv_records", "raw_csv2_records", "unified_records")
    return {
        table: (
            session.scalar(sa.text(f"SELECT count(*) FROM {table}")),
            session.scalar(sa.text(f"SELECT pg_total_relation_size('{table}')")),
        )
        for table in tables
    }


def mib(size: float) -> str:
    """Format bytes as MiB (or GiB above 10 GiB)."""
    return f"{size / 2**30:.1f} GiB" if size >= 10 * 2**30 else f"{size / 2**20:,.1f} MiB"


class SimulatedClock:
    """The time rows are stamped with (received_at, ingested_at), moved by hand."""

    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def measure_api_growth(app, imitation, args, rng) -> float:
    """Run coingecko_api ``args.runs`` times after a first load; print and return bytes/day."""
    now = START
    run_source(db.session, "coingecko_api", app.config)  # the first load: every coin is new
    before = sizes(db.session)
    started = time.perf_counter()
    for _ in range(args.runs):
        now += timedelta(seconds=INTERVAL)
        tick(imitation, args.moving, rng, now)
        run = run_source(db.session, "coingecko_api", app.config)
        assert run.status == RunStatus.SUCCESS, (run.status, run.error)
    seconds = time.perf_counter() - started
    after = sizes(db.session)
    runs_per_day = DAY / INTERVAL
    print(f"\ncoingecko_api: {args.coins} coins, {args.moving:.0%} moving between runs, "
          f"{args.runs} runs in {seconds:.1f} s ({seconds / args.runs:.2f} s a run)")  # fmt: skip
    print(f"{'table':<18} {'rows/run':>9} {'bytes/row':>10} {'rows/day':>10} {'per day':>12}")
    per_day = {}
    for table in ("raw_api_records", "unified_records"):
        rows = (after[table][0] - before[table][0]) / args.runs
        size = (after[table][1] - before[table][1]) / args.runs
        per_day[table] = size * runs_per_day
        print(f"{table:<18} {rows:>9,.0f} {size / rows:>10,.0f} {rows * runs_per_day:>10,.0f} "
              f"{mib(per_day[table]):>12}")  # fmt: skip
    return per_day["raw_api_records"]


def measure_csv_growth(app, tmp: Path, rows: int) -> None:
    """Append ``rows`` rows to each CSV feed and print the raw bytes each row costs."""
    feeds = {
        "csv1": ("CSV1_PATH", "raw_csv_records", "id,name,value,timestamp\n",
                 "coin-{i},Coin {i},{price:.2f},2025-12-27T10:{m:02d}:{s:02d}Z\n"),
        "csv2": ("CSV2_PATH", "raw_csv2_records", "record_id,full_name,score,created_at\n",
                 "mc-{i},Coin {i} (C{i}),${cap:.2f}B,2025-12-27 10:{m:02d}\n"),
    }  # fmt: skip
    print(f"\nCSV feeds: {rows:,} appended rows each")
    for source, (setting, table, header, line) in feeds.items():
        path = tmp / f"{source}.csv"
        path.write_text(header)
        app.config[setting] = str(path)
        run_source(db.session, source, app.config)
        before = sizes(db.session)[table]
        with open(path, "a") as feed:
            for i in range(rows):
                feed.write(line.format(i=i, price=1 + i / 7, cap=i / 3, m=i % 60, s=i // 60 % 60))
        run_source(db.session, source, app.config)
        after = sizes(db.session)[table]
        per_row = (after[1] - before[1]) / (after[0] - before[0])
        print(f"{source}: {per_row:,.0f} bytes per raw row ({table}); "
              f"an unchanged file adds nothing")  # fmt: skip


def measure_batch_cost(app, rows: int) -> None:
    """Fill raw_api_records with ``rows`` rows over 30 days and time retention's batches."""
    db.session.execute(sa.text("TRUNCATE raw_api_records"))
    run_id = db.session.scalar(sa.text("SELECT max(id) FROM etl_runs"))
    db.session.execute(
        sa.text(
            "INSERT INTO raw_api_records (run_id, record_key, payload, received_at, external_id,"
            " source_updated_at) SELECT :run, 'coin-' || n, '{}'::json,"
            " now() - interval '30 days' + n * (interval '30 days' / :rows), 'coin', ''"
            " FROM generate_series(1, :rows) AS n"
        ),
        {"run": run_id, "rows": rows},
    )
    db.session.execute(
        sa.text("UPDATE checkpoints SET last_raw_id = (SELECT max(id) FROM raw_api_records)"
                " WHERE source = 'coingecko_api'")
    )  # fmt: skip
    db.session.commit()
    db.session.execute(sa.text("ANALYZE raw_api_records"))
    db.session.commit()
    cutoff = datetime.now(UTC) - timedelta(days=7)
    batch = app.config["RETENTION_BATCH_SIZE"]
    timings = []
    batches = raw_batches(db.session, "coingecko_api", cutoff, batch)
    started = time.perf_counter()
    deleted = 0
    for count in batches:
        timings.append((time.perf_counter() - started) * 1000)
        deleted += count
        started = time.perf_counter()
    print(f"\nbatch cost: raw_api_records with {rows:,} rows over 30 days, deleting the oldest "
          f"23 days ({deleted:,} rows) in {len(timings):,} batches of {batch}")  # fmt: skip
    print(f"first batch {timings[0]:.1f} ms, median {sorted(timings)[len(timings) // 2]:.1f} ms, "
          f"slowest {max(timings):.1f} ms, last {timings[-1]:.1f} ms "
          f"(pauses between batches not counted)")  # fmt: skip
    db.session.execute(sa.text("TRUNCATE raw_api_records"))
    db.session.execute(
        sa.text("UPDATE checkpoints SET last_raw_id = 0 WHERE source = 'coingecko_api'")
    )
    db.session.commit()


def simulate_steady_state(app, imitation, args, rng) -> None:
    """Run beat's schedule on a simulated clock with retention; print the raw table's size."""
    # From now on: rows stamped earlier by the real clock are older than every simulated one.
    clock = SimulatedClock(datetime.now(UTC))
    kasparro.etl.load.utcnow = clock  # rows are stamped with the simulated time
    settings = {**app.config, "RETENTION_RAW_DAYS_COINGECKO_API": args.age_days}
    runs = int(args.simulate_days * DAY / INTERVAL)
    every = RETENTION_INTERVAL // INTERVAL
    print(f"\nsteady state: raw age {args.age_days} day(s), {args.simulate_days} simulated days, "
          f"{runs} runs, retention every {RETENTION_INTERVAL} s")  # fmt: skip
    print(f"{'simulated':>10} {'raw rows':>10} {'raw size':>12} {'last pass':>28}")
    last = ""
    for number in range(1, runs + 1):
        clock.now += timedelta(seconds=INTERVAL)
        tick(imitation, args.moving, rng, clock.now)
        run = run_source(db.session, "coingecko_api", app.config)
        assert run.status == RunStatus.SUCCESS, (run.status, run.error)
        if number % every == 0:
            report = apply_retention(db.session, settings, now=clock.now)
            # Autovacuum makes the deleted rows' space reusable within minutes of real time;
            # the simulated clock outruns it, so the simulation vacuums (never FULL) itself.
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM raw_api_records"))
            last = f"-{report.raw['coingecko_api']:,} rows, {report.batches} batches, " \
                   f"{report.duration_ms} ms"  # fmt: skip
        if number % (6 * 3600 // INTERVAL) == 0:
            rows, size = sizes(db.session)["raw_api_records"]
            hours = number * INTERVAL / 3600
            print(f"{hours:>9.0f}h {rows:>10,} {mib(size):>12} {last:>28}")


def main() -> None:
    """Create the database, measure, print the figures, drop the database."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coins", type=int, default=1000, help="4 pages of 250 by default")
    parser.add_argument("--runs", type=int, default=12, help="runs measured (12 = one hour)")
    parser.add_argument("--moving", type=float, default=1.0, help="share of coins that move")
    parser.add_argument("--csv-rows", type=int, default=10_000)
    parser.add_argument("--batch-cost-rows", type=int, default=0)
    parser.add_argument("--simulate-days", type=float, default=0)
    parser.add_argument("--age-days", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(7)
    coins = [realistic_coin(rank, rng, START) for rank in range(1, args.coins + 1)]
    with (
        scratch_database("kasparro_growth") as url,
        tempfile.TemporaryDirectory() as tmp,
        CoinGeckoImitation(coins) as imitation,
    ):
        app = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": url,
                "API_SOURCE_URL": imitation.url,
                "API_CALLS_PER_MINUTE": 600_000.0,
                "REDIS_URL": "",
                "LOG_LEVEL": "WARNING",
            }
        )
        with app.app_context():
            per_day = measure_api_growth(app, imitation, args, rng)
            days = app.config["RETENTION_RAW_DAYS_COINGECKO_API"]
            steady = per_day * (days + RETENTION_INTERVAL / DAY)
            print(f"raw_api_records at the default age ({days} days, pass every "
                  f"{RETENTION_INTERVAL} s): about {mib(steady)} once steady")  # fmt: skip
            measure_csv_growth(app, Path(tmp), args.csv_rows)
            if args.batch_cost_rows:
                measure_batch_cost(app, args.batch_cost_rows)
            if args.simulate_days:
                simulate_steady_state(app, imitation, args, rng)
            db.session.remove()
            db.engine.dispose()


if __name__ == "__main__":
    main()
