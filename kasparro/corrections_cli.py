"""``flask assets`` and ``flask etl reprocess``: corrections an operator makes."""

import click
from flask import current_app
from flask.cli import AppGroup

from kasparro.cli import EtlGroup, _counts
from kasparro.etl.aliases import (
    AliasConflict,
    UnknownAsset,
    add_alias,
    list_aliases,
    unresolved_groups,
)
from kasparro.etl.parsing import InvalidValue, parse_timestamp
from kasparro.etl.reprocess import reprocess_source
from kasparro.etl.runs import SourceBusy
from kasparro.etl.sources import SOURCES
from kasparro.extensions import db
from kasparro.models import RunStatus

# Database errors end a command with a short message, as they do the ``etl`` commands.
assets_cli = EtlGroup("assets", help="Assets: aliases, and what did not resolve.")
alias_cli = AppGroup("alias", help="Names and symbols an operator maps to an asset.")
assets_cli.add_command(alias_cli)
LIST_PAGE = 100  # rows the list commands fetch per query


class Timestamp(click.ParamType):
    """A time as the feeds write it (ISO 8601, a date, epoch seconds); without a zone, UTC."""

    name = "timestamp"

    def convert(self, value, param, ctx):
        """Parse ``value`` to an aware UTC datetime, or fail naming the option."""
        try:
            return parse_timestamp(value)
        except InvalidValue as exc:
            self.fail(str(exc), param, ctx)


@alias_cli.command("add")
@click.option("--asset", "asset_id", required=True, help="The canonical id, e.g. bitcoin.")
@click.option("--name", help="A name that means the asset.")
@click.option("--symbol", help="A symbol (ticker) that means the asset.")
def alias_add_command(asset_id, name, symbol):
    """Add an alias and resolve the past observations it matches."""
    if (name is None) == (symbol is None):
        raise click.UsageError("give exactly one of --name and --symbol")
    kind, text = ("name", name) if name is not None else ("symbol", symbol)
    try:
        added = add_alias(db.session, asset_id, kind, text)
    except (UnknownAsset, AliasConflict, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    state = "added" if added.created else "already there"
    click.echo(
        f"{kind} alias {added.alias!r} -> {added.asset_id}: {state}; "
        f"{added.resolved} past observations resolved"
    )


@alias_cli.command("list")
@click.option("--asset", "asset_id", help="Only this asset's aliases.")
def alias_list_command(asset_id):
    """Print every alias, oldest first."""
    page, more = 1, True
    while more:
        aliases, more = list_aliases(db.session, asset_id, page, LIST_PAGE)
        for alias in aliases:
            click.echo(f"{alias.kind:<7} {alias.alias!r:<30} -> {alias.asset_id}")
        page += 1


@assets_cli.command("unresolved")
@click.option("--source", type=click.Choice(SOURCES), help="Only this source.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1), help="Groups.")
def unresolved_command(source, limit):
    """Print what did not resolve, by source, name and symbol, most frequent first."""
    found = unresolved_groups(db.session, source, 1, limit)
    click.echo(f"{found.unresolved} observations did not resolve, in {found.total_groups} groups")
    for group in found.groups:
        click.echo(
            f"{group['observations']:>8}  {group['source']:<14} name={group['name']!r} "
            f"symbol={group['symbol']!r} latest={group['latest']:%Y-%m-%d %H:%M:%S}"
        )


@click.command("reprocess")
@click.option("--source", required=True, type=click.Choice(SOURCES), help="The source.")
@click.option(
    "--since",
    type=Timestamp(),
    help="Only raw rows received at or after this time (when Kasparro stored them).",
)
def reprocess_command(source, since):
    """Re-derive a source's unified rows from its stored raw rows, and retry its rejected rows."""
    try:
        run = reprocess_source(db.session, source, current_app.config, since)
    except SourceBusy as busy:
        raise click.ClickException(
            f"{source} run {busy.skipped_run_id} SKIPPED: {busy}; try again once it ends"
        ) from None
    recovered = (run.details or {}).get("reprocess", {}).get("recovered", 0)
    click.echo(
        f"{source:<14} run {run.id:<5} {run.status:<8} {_counts(run)} "
        f"recovered={recovered} ({run.duration_ms} ms)"
    )
    if run.error:
        click.echo(f"{'':<14} error: {run.error}")
    if run.status == RunStatus.FAILED:
        raise click.ClickException(f"failed: {source}")
