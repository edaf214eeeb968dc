"""Alembic environment: migrate the database of the current Flask app."""

import sqlalchemy as sa
import structlog
from alembic import context
from flask import current_app

config = context.config
log = structlog.get_logger("alembic.env")
target_db = current_app.extensions["migrate"].db
MIGRATION_LOCK = 7_301_123_001  # an arbitrary, fixed advisory-lock key for schema migrations


def run_migrations_offline():
    """Emit the migration SQL for the app's database URL, without connecting."""
    url = target_db.engine.url.render_as_string(hide_password=False)
    context.configure(url=url, target_metadata=target_db.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    """Apply migrations over a connection from the app's engine."""

    def skip_empty_revisions(context, revision, directives):
        # An autogenerate run that finds no change must not write an empty script.
        if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
            directives[:] = []
            log.info("migrations.no_changes")

    conf_args = current_app.extensions["migrate"].configure_args
    conf_args.setdefault("process_revision_directives", skip_empty_revisions)
    with target_db.engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_db.metadata, **conf_args)
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Every container migrates at start: one at a time; the later ones find no work.
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
