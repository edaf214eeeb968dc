"""Aliases an operator adds: stored, checked against the assets' own names and symbols, and
back-filled into past observations in the same transaction; and the unresolved groups they are
added for. The resolving itself is kasparro/etl/assets.py's.
"""

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kasparro.db_types import utcnow
from kasparro.etl.assets import (
    ALIAS_KINDS,
    ALIASES_SCOPE,
    AssetResolver,
    alias_text,
    alias_too_long,
    hold_aliases,
)
from kasparro.etl.versions import record_change
from kasparro.models import Asset, AssetAlias, UnifiedRecord, UnifiedTotal


class UnknownAsset(LookupError):
    """An alias was given for an asset id the assets table does not hold."""


class AliasConflict(ValueError):
    """An alias would take a name or symbol that already means another asset."""


@dataclass(frozen=True)
class AliasAdded:
    """An alias as stored, whether this call stored it, and how many observations it resolved."""

    id: int
    kind: str
    alias: str
    asset_id: str
    created_at: datetime
    created: bool
    resolved: int


def add_alias(session: Session, asset_id: str, kind: str, text: str) -> AliasAdded:
    """Store an alias and resolve the past observations it matches, in one transaction.

    Refused (AliasConflict) when the name or symbol is another asset's alias, or is one other
    asset's own name or symbol. An alias only decides for observations that resolve to no single
    asset without it (see AssetResolver), so it never re-routes a coin. Adding an alias that
    exists already changes nothing but resolves again what it matches (rows restored from a
    backup, say). Batches that load meanwhile are ordered against it (see hold_aliases).
    """
    if kind not in ALIAS_KINDS:
        raise ValueError(f"an alias is a name or a symbol, not {kind!r}")
    key, asset_id = alias_text(text), asset_id.strip().lower()
    if not key:
        raise ValueError(f"the {kind} is empty")
    if too_long := alias_too_long(text):
        raise ValueError(f"the {kind} is {too_long}")
    hold_aliases(session, exclusive=True)  # until the commit: see hold_aliases
    try:
        added = _store_and_back_fill(session, asset_id, kind, key)
    except Exception:
        session.rollback()  # and let the batches waiting for the aliases go on
        raise
    session.commit()
    return added


def _store_and_back_fill(session: Session, asset_id: str, kind: str, key: str) -> AliasAdded:
    if session.get(Asset, asset_id) is None:
        raise UnknownAsset(f"no asset has the id {asset_id!r}")
    resolver = AssetResolver.load(session)
    stored = session.scalar(
        sa.select(AssetAlias).where(AssetAlias.kind == kind, AssetAlias.alias == key)
    )
    if stored is None:
        _refuse_a_resolving_alias(resolver, kind, key, asset_id)
        stored = AssetAlias(kind=kind, alias=key, asset_id=asset_id, created_at=utcnow())
        session.add(stored)
        try:
            session.flush()  # the unique (kind, alias) refuses one added meanwhile
        except IntegrityError:
            raise AliasConflict(f"the {kind} alias {key!r} was added meanwhile") from None
        resolver.add_alias(kind, key, asset_id)  # the newest alias: older ones keep their rows
        created = True
    elif stored.asset_id != asset_id:
        raise AliasConflict(f"the {kind} alias {key!r} already means {stored.asset_id!r}")
    else:
        created = False
    resolved = back_fill(session, resolver, kind, key, asset_id)
    # Kept answers that show these rows are out of date; runs under way reload their resolver.
    record_change(session, ALIASES_SCOPE)
    return AliasAdded(
        stored.id, kind, key, asset_id, stored.created_at, created=created, resolved=resolved
    )


def _refuse_a_resolving_alias(resolver: AssetResolver, kind: str, key: str, asset_id: str) -> None:
    holders = resolver.holders(kind, key)
    if len(holders) == 1 and asset_id not in holders:
        raise AliasConflict(f"the {kind} {key!r} already means {next(iter(holders))!r}")


def back_fill(session: Session, resolver: AssetResolver, kind: str, key: str, asset_id: str) -> int:
    """Give unresolved observations the alias resolves the asset id, in one UPDATE; count them.

    Only rows still unresolved change: their key does not, so nothing is duplicated. The rows
    are those the resolver, alias included, now gives ``asset_id``, found among the distinct
    names and symbols of unresolved rows, which the partial index ``ix_unified_unresolved``
    holds: the spellings of the aliased name or symbol, with the symbols (or names) beside which
    the resolver now answers ``asset_id``. Spellings of one text compare equal, so every
    unresolved row of a chosen name and a chosen symbol is one the resolver gives ``asset_id``.
    A row without a symbol takes the asset's ticker, as a run would have given it.
    """
    unresolved = UnifiedRecord.asset_id.is_(None)
    pairs = session.execute(
        sa.select(UnifiedRecord.name, UnifiedRecord.symbol).where(unresolved).distinct()
    ).all()
    chosen = [
        (name, symbol)
        for name, symbol in pairs
        if alias_text((name if kind == "name" else symbol) or "") == key
        and resolver.identify(name, symbol) == asset_id
    ]
    if not chosen:
        return 0
    names = {name for name, _ in chosen}
    symbols = {symbol for _, symbol in chosen}
    symbol = UnifiedRecord.symbol
    return session.execute(
        sa.update(UnifiedRecord)
        .where(unresolved, _one_of(UnifiedRecord.name, names), _one_of(symbol, symbols))
        .values(
            asset_id=asset_id,
            symbol=sa.case(
                (sa.func.coalesce(symbol, "") == "", resolver.symbol_of(asset_id)), else_=symbol
            ),
        )
        .execution_options(synchronize_session=False)
    ).rowcount


def _one_of(column: sa.ColumnElement, values: set[str | None]) -> sa.ColumnElement[bool]:
    """Return ``column IN values``, true for NULL too when None is among them."""
    known = sorted(value for value in values if value is not None)
    listed = column.in_(known)
    return sa.or_(listed, column.is_(None)) if None in values else listed


def list_aliases(
    session: Session, asset_id: str | None, page: int, page_size: int
) -> tuple[list[AssetAlias], bool]:
    """Return a page of aliases, oldest first (of one asset, if given), and whether more follow."""
    query = sa.select(AssetAlias).order_by(AssetAlias.id)
    if asset_id is not None:
        query = query.where(AssetAlias.asset_id == asset_id)
    # One row past the page says whether another follows, without counting them all.
    rows = session.scalars(query.limit(page_size + 1).offset((page - 1) * page_size)).all()
    return list(rows[:page_size]), len(rows) > page_size


@dataclass(frozen=True)
class UnresolvedPage:
    """A page of what did not resolve: groups of (source, name, symbol) with their counts."""

    groups: list[dict]
    total_groups: int
    unresolved: int  # observations without an asset, in every group


def unresolved_groups(
    session: Session, source: str | None, page: int, page_size: int
) -> UnresolvedPage:
    """Group the observations that did not resolve by source, name and symbol, most first.

    Only unresolved rows are read, through the partial index ``ix_unified_unresolved``: the cost
    follows how much did not resolve, not the table's size. The order is total (the group's
    columns break ties), and the number of groups comes with the page from the same query.
    """
    observations = sa.func.count().label("observations")
    query = (
        sa.select(
            UnifiedRecord.source,
            UnifiedRecord.name,
            UnifiedRecord.symbol,
            observations,
            sa.func.max(UnifiedRecord.timestamp).label("latest"),
            sa.func.count().over().label("total_groups"),
        )
        .where(UnifiedRecord.asset_id.is_(None))
        .group_by(UnifiedRecord.source, UnifiedRecord.name, UnifiedRecord.symbol)
        .order_by(
            observations.desc(), UnifiedRecord.source, UnifiedRecord.name, UnifiedRecord.symbol
        )
        .limit(page_size)
        .offset((page - 1) * page_size)
    )
    totals = sa.select(sa.func.coalesce(sa.func.sum(UnifiedTotal.unresolved), 0))
    if source:
        query = query.where(UnifiedRecord.source == source)
        totals = totals.where(UnifiedTotal.source == source)
    rows = session.execute(query).mappings().all()
    if rows:
        total_groups = rows[0]["total_groups"]
    else:  # past the last page, or nothing at all: count the groups on their own
        grouped = query.limit(None).offset(None).order_by(None).subquery()
        total_groups = session.scalar(sa.select(sa.func.count()).select_from(grouped))
    return UnresolvedPage(
        groups=[{k: v for k, v in row.items() if k != "total_groups"} for row in rows],
        total_groups=total_groups,
        unresolved=session.scalar(totals),
    )
