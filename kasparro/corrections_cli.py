"""``flask assets`` and ``flask etl reprocess``: corrections an operator makes."""

import click
from flask.cli import AppGroup

assets_cli = AppGroup("assets", help="Assets: aliases, and what did not resolve.")


@click.command("reprocess")
def reprocess_command():
    """Re-derive unified rows from stored raw rows."""
    raise click.ClickException("not built yet")
