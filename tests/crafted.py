"""Assets and observations a test chooses, stored one by one on either engine.

Not a test module: the asset tests import ``Crafted``.
"""

from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa

from kasparro.extensions import db
from kasparro.models import Asset, EtlRun, UnifiedRecord


class Crafted:
    """Stores assets and observations chosen by a test, each observation with the next id."""

    def __init__(self) -> None:
        run = EtlRun(source="csv1", status="SUCCESS", trigger="cli")
        db.session.add(run)
        db.session.flush()
        self.run_id = run.id

    def asset(self, asset_id: str, symbol: str, name: str) -> None:
        """Store an asset as CoinGecko names it (lower-case symbol)."""
        db.session.add(Asset(id=asset_id, symbol=symbol.lower(), name=name, origin="seed"))
        db.session.flush()

    def observe(
        self,
        asset_id: str | None,
        source: str,
        metric: str,
        value: str,
        timestamp: datetime,
        *,
        name: str | None = None,
        symbol: str | None = None,
    ) -> int:
        """Store one observation; return its id."""
        return db.session.scalar(
            sa.insert(UnifiedRecord)
            .values(
                source=source,
                external_id=f"{asset_id}-{name}-{symbol}",
                asset_id=asset_id,
                name=name,
                symbol=symbol,
                metric=metric,
                value=Decimal(value),
                currency="USD",
                timestamp=timestamp,
                run_id=self.run_id,
            )
            .returning(UnifiedRecord.id)
        )
