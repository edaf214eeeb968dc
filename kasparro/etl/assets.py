"""Canonical asset identity: map what a source calls a coin to one CoinGecko-style id."""

import csv
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kasparro.db_types import utcnow
from kasparro.etl.load import insert_for, insert_many
from kasparro.etl.sources.base import KnownAsset, Observation
from kasparro.models import Asset, AssetAlias, DataVersion

ANSWERS_KEPT = 10_000
ALIAS_KINDS = ("name", "symbol")
ALIAS_LENGTH = AssetAlias.alias.type.length  # of the stored, lower-cased form
ALIASES_SCOPE = "aliases"  # the data_versions counter every alias commit moves


def alias_text(text: str) -> str:
    """Return a name or symbol as aliases store and compare it: stripped, lower-cased."""
    return text.strip().lower()


def alias_too_long(text: str) -> str | None:
    """Return why ``text`` cannot be stored as an alias once lower-cased, or None if it can."""
    # Lower-casing can lengthen a text: "İ" becomes two characters.
    length = len(alias_text(text))
    if length > ALIAS_LENGTH:
        return f"longer than {ALIAS_LENGTH} characters once lower-cased ({length})"
    return None


def hold_aliases(session: Session, exclusive: bool = False) -> int:
    """Hold the aliases' counter until this transaction ends; return it (0 before any alias).

    It orders what a batch resolves against what an alias back-fills. A batch holds the row
    shared from its view of the aliases to its commit; ``aliases.add_alias`` holds it
    exclusively from its first read to its commit. So an alias commits before a batch looks, and
    the batch sees it, or waits for the batch to commit, and its back-fill sees the batch's
    rows. Batches do not wait for one another. SQLite has one writer at a time: the no-op
    insert begins this transaction's write, and every other writer waits for its commit.
    """
    held = sa.select(DataVersion.version).where(DataVersion.scope == ALIASES_SCOPE)
    there = (
        insert_for(session)(DataVersion)
        .values(scope=ALIASES_SCOPE, version=0)
        .on_conflict_do_nothing(index_elements=["scope"])
    )
    if session.get_bind().dialect.name != "postgresql":
        session.execute(there)
        return session.scalar(held)
    held = held.with_for_update(read=not exclusive)
    version = session.scalar(held)
    if version is None:  # no alias yet: the row to hold is made, or waited for, first
        session.execute(there)
        version = session.scalar(held)
    return version


class AssetResolver:
    """Resolve by an id the source gives, then a name, then a symbol; aliases fill the gaps.

    1. An id the source gives that is a known asset's id.
    2. The name: the assets of that name, narrowed by the symbol when several coins share it
       (still several, or none left: no answer).
    3. The symbol, when no asset has the name: the one asset with that symbol (two coins on one
       ticker: no answer).
    4. Only when those give no single answer (unknown, or ambiguous), the operator's aliases: an
       alias of the name, or an alias of the symbol (when the name is not an asset's, or names
       the symbol alias's asset among others). When both apply, the older alias decides.

    So an alias never changes the answer for an observation that resolves without it: not one
    the assets settle, nor one an older alias settled. Names, symbols and aliases are compared
    stripped and case-insensitively.
    """

    def __init__(
        self,
        assets: Iterable[tuple[str, str, str]],
        aliases: Iterable[tuple[str, str, str]] = (),
    ):
        self._symbols: dict[str, str] = {}
        self._by_name: dict[str, set[str]] = defaultdict(set)
        self._by_symbol: dict[str, set[str]] = defaultdict(set)
        # kind -> alias -> (age rank, asset id): aliases are given, and added, oldest first.
        self._aliases: dict[str, dict[str, tuple[int, str]]] = {kind: {} for kind in ALIAS_KINDS}
        self._aliases_learnt = 0
        # A feed names the same few coins again and again: each answer is kept until an add.
        self._answers: dict[tuple[str | None, str | None, str | None], str | None] = {}
        for asset_id, symbol, name in assets:
            self.add(asset_id, symbol, name)
        for kind, alias, asset_id in aliases:
            self.add_alias(kind, alias, asset_id)

    @classmethod
    def load(cls, session: Session) -> "AssetResolver":
        """Build a resolver from every asset and every alias (oldest first), in two queries."""
        assets = session.execute(sa.select(Asset.id, Asset.symbol, Asset.name)).tuples()
        aliases = session.execute(
            sa.select(AssetAlias.kind, AssetAlias.alias, AssetAlias.asset_id).order_by(
                AssetAlias.id
            )
        ).tuples()
        return cls(assets, aliases)

    def add(self, asset_id: str, symbol: str, name: str) -> None:
        """Learn one asset."""
        self._answers.clear()
        self._symbols[asset_id] = symbol.strip().upper()
        self._by_name[alias_text(name)].add(asset_id)
        self._by_symbol[alias_text(symbol)].add(asset_id)

    def add_alias(self, kind: str, alias: str, asset_id: str) -> None:
        """Learn that the name or symbol ``alias`` (``kind``) means ``asset_id``; it is newest."""
        self._answers.clear()
        self._aliases_learnt += 1
        self._aliases[kind][alias_text(alias)] = (self._aliases_learnt, asset_id)

    def holders(self, kind: str, text: str) -> set[str]:
        """Return the assets whose own name or symbol (``kind``) is ``text``, aliases aside."""
        held = self._by_name if kind == "name" else self._by_symbol
        return set(held.get(alias_text(text), ()))

    def resolve(self, observation: Observation) -> str | None:
        """Return the canonical id of the observed coin, or None when it is unknown or ambiguous."""
        return self.identify(observation.name, observation.symbol, observation.asset_hint)

    def identify(
        self, name: str | None, symbol: str | None, asset_hint: str | None = None
    ) -> str | None:
        """Return the canonical id of the coin a source calls so, or None (unknown, ambiguous)."""
        key = (asset_hint, symbol, name)
        if key not in self._answers:
            if len(self._answers) >= ANSWERS_KEPT:  # memory stays bounded whatever the feed
                self._answers.clear()
            self._answers[key] = self._identify(name, symbol, asset_hint)
        return self._answers[key]

    def _identify(self, name: str | None, symbol: str | None, asset_hint: str | None) -> str | None:
        if asset_hint in self._symbols:
            return asset_hint
        named = self.holders("name", name or "")
        ticked = self.holders("symbol", symbol) if symbol else set()
        if named:
            found = named & ticked if len(named) > 1 and ticked else named
        else:
            found = ticked
        if len(found) == 1:
            return next(iter(found))
        settling = []
        if name and (by_name := self._aliases["name"].get(alias_text(name))):
            settling.append(by_name)
        by_symbol = self._aliases["symbol"].get(alias_text(symbol)) if symbol else None
        if by_symbol and (not named or by_symbol[1] in named):
            settling.append(by_symbol)
        return min(settling)[1] if settling else None

    def symbol_of(self, asset_id: str | None) -> str | None:
        """Return the ticker of a known asset, upper-case."""
        return self._symbols.get(asset_id) if asset_id else None


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


def seeded_resolver(session: Session, seed_path: str | Path) -> AssetResolver:
    """Make sure the bundled seed assets are stored, then build a resolver from the tables."""
    upsert_assets(session, read_seed(seed_path), origin="seed")
    return AssetResolver.load(session)


class CurrentResolver:
    """A run's resolver: seeded on first use, rebuilt whenever an alias has been added since.

    Asking costs one primary-key read, which holds the aliases' counter until the batch commits
    (``hold_aliases``): an alias added while a run loads resolves the batches that asked before
    it through its back-fill, and the later ones through this resolver.
    """

    def __init__(self, seed_path: str | Path):
        self.seed_path = seed_path
        self._resolver: AssetResolver | None = None
        self._aliases = 0  # the version of the aliases the resolver knows

    def get(self, session: Session) -> AssetResolver:
        """Return a resolver that knows every alias, held unchanged until the batch commits."""
        aliases = hold_aliases(session)
        if self._resolver is None:
            self._resolver = seeded_resolver(session, self.seed_path)
        elif aliases != self._aliases:
            self._resolver = AssetResolver.load(session)
        self._aliases = aliases
        return self._resolver
