"""Canonical asset identity: map what a source calls a coin to one CoinGecko-style id."""

import csv
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kasparro.db_types import utcnow
from kasparro.etl.load import insert_many
from kasparro.etl.sources.base import KnownAsset, Observation
from kasparro.models import Asset

ANSWERS_KEPT = 10_000


class AssetResolver:
    """Resolve by an id the source gives, then an exact name, then a symbol only one coin has.

    Names and symbols are compared case-insensitively. A name shared by several coins is narrowed
    by the symbol; a symbol shared by several coins (two coins on one ticker) resolves to nothing.
    """

    def __init__(self, assets: Iterable[tuple[str, str, str]]):
        self._symbols: dict[str, str] = {}
        self._by_name: dict[str, set[str]] = defaultdict(set)
        self._by_symbol: dict[str, set[str]] = defaultdict(set)
        # A feed names the same few coins again and again: each answer is kept until an add.
        self._answers: dict[tuple[str | None, str | None, str | None], str | None] = {}
        for asset_id, symbol, name in assets:
            self.add(asset_id, symbol, name)

    @classmethod
    def load(cls, session: Session) -> "AssetResolver":
        """Build a resolver from every row of the assets table, in one query."""
        return cls(session.execute(sa.select(Asset.id, Asset.symbol, Asset.name)).tuples())

    def add(self, asset_id: str, symbol: str, name: str) -> None:
        """Learn one asset."""
        self._answers.clear()
        self._symbols[asset_id] = symbol.strip().upper()
        self._by_name[name.strip().lower()].add(asset_id)
        self._by_symbol[symbol.strip().lower()].add(asset_id)

    def resolve(self, observation: Observation) -> str | None:
        """Return the canonical id of the observed coin, or None when it is unknown or ambiguous."""
        key = (observation.asset_hint, observation.symbol, observation.name)
        if key not in self._answers:
            if len(self._answers) >= ANSWERS_KEPT:  # memory stays bounded whatever the feed
                self._answers.clear()
            self._answers[key] = self._resolve(observation)
        return self._answers[key]

    def _resolve(self, observation: Observation) -> str | None:
        if observation.asset_hint in self._symbols:
            return observation.asset_hint
        symbol = (observation.symbol or "").strip().lower()
        by_symbol = self._by_symbol.get(symbol, set()) if symbol else set()
        by_name = self._by_name.get((observation.name or "").strip().lower(), set())
        if by_name:
            if len(by_name) > 1 and by_symbol:
                by_name = by_name & by_symbol
            return _only(by_name)
        return _only(by_symbol)

    def symbol_of(self, asset_id: str | None) -> str | None:
        """Return the ticker of a known asset, upper-case."""
        return self._symbols.get(asset_id) if asset_id else None


def _only(candidates: set[str]) -> str | None:
    return next(iter(candidates)) if len(candidates) == 1 else None


def upsert_assets(session: Session, assets: Iterable[KnownAsset], origin: str) -> None:
    """Insert or refresh assets in one statement; seed rows never overwrite a source's."""
    rows = {
        a.id: {
            "id": a.id,
            "symbol": a.symbol,
            "name": a.name,
            "origin": origin,
            "updated_at": utcnow(),
        }
        for a in assets
    }
    if not rows:
        return

    def on_conflict(insert):
        if origin == "seed":
            return insert.on_conflict_do_nothing(index_elements=["id"])
        refreshed = ("symbol", "name", "origin", "updated_at")
        return insert.on_conflict_do_update(
            index_elements=["id"], set_={col: insert.excluded[col] for col in refreshed}
        )

    insert_many(session, Asset, list(rows.values()), on_conflict)


def read_seed(path: str | Path) -> list[KnownAsset]:
    """Read the bundled ``id,symbol,name`` seed file used when CoinGecko is out of reach."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [
            KnownAsset(id=row["id"].strip(), symbol=row["symbol"].strip(), name=row["name"].strip())
            for row in csv.DictReader(handle)
            if row.get("id")
        ]
