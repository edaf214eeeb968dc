"""``flask etl run``, ``status``, ``retention`` and ``load-left-over``."""

import json
import sys
import time
from contextlib import nullcontext

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy.exc import SQLAlchemyError

from kasparro.dispatch import BrokerUnavailable, dispatch_run
from kasparro.etl.http_client import UpstreamUnreachable, connect_attempts
from kasparro.etl.left_over import fingerprint_checkpoint, load_left_over
from kasparro.etl.pipeline import ReadProgress, run_source
from kasparro.etl.retention import apply_retention
from kasparro.etl.runs import SourceBusy, describe_error
from kasparro.etl.sources import SOURCES
from kasparro.etl.sources.csv_feed import CsvSource
from kasparro.extensions import db
from kasparro.models import Checkpoint, RunStatus
from kasparro.read.sources import source_health
from kasparro.setting import raw_retention_setting

# Tries of a remote source that cannot connect at all, in the run the app starts with.
START_CONNECT_ATTEMPTS = 1


class EtlGroup(AppGroup):
    """The ``etl`` commands; a database error ends one with a short message, not a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SQLAlchemyError as exc:
            raise click.ClickException(describe_error(exc)) from None


etl_cli = EtlGroup("etl", help="Run and inspect the ETL pipeline.")


def _counts(run) -> str:
    return (
        f"read={run.rows_read} inserted={run.inserted} updated={run.updated} "
        f"unchanged={run.unchanged} rejected={run.rejected} unresolved={run.unresolved}"
    )


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02}:{minutes:02}:{seconds:02}"


class ReadProgressBar:
    """A source's read drawn on the terminal, as the pipeline reports it after each batch.

    It shows the rows read and the rows per second and, for a file, the share done and the
    time left; the pipeline's last report, when the read ends, ends its line.
    """

    def __init__(self, source: str):
        self.label = f"{source:<14}"
        self.started = time.monotonic()
        self.bar = None  # drawn from the first batch on: an unchanged source shows nothing
        self.first_batch: tuple[float, int] | None = None  # when, and to which byte, for a file

    def __call__(self, progress: ReadProgress) -> None:
        """Draw ``progress``; end the line when the read has ended."""
        in_file = progress.bytes_total is not None
        if self.bar is None:
            if progress.finished:
                return
            self.bar = click.progressbar(
                length=progress.bytes_total or 0,
                label=self.label,
                bar_template="%(label)s [%(bar)s] %(info)s" if in_file else "%(label)s %(info)s",
                show_percent=in_file,
                show_eta=False,  # click's estimate waits a second; this one is there from batch two
                item_show_func=lambda text: text,
            )
        if in_file:
            self.bar.length = progress.bytes_total  # the file may have grown
        done = progress.bytes_read if in_file else progress.rows_read
        self.bar.update(done - self.bar.pos, self._describe(progress))
        if progress.finished:
            self.bar.render_progress()  # the last line without a time left, even with no step
            self.bar.render_finish()

    def _describe(self, progress: ReadProgress) -> str:
        now = time.monotonic()
        rate = progress.rows_read / max(now - self.started, 1e-9)
        text = f"{progress.rows_read:,} rows  {rate:,.0f} rows/s"
        if progress.bytes_read is None or progress.finished:
            return text
        if self.first_batch is None:
            self.first_batch = (now, progress.bytes_read)
            return f"{text}  --:--:-- left"
        # The pace since the first batch: the run's start-up is not part of it.
        began, offset = self.first_batch
        pace = (progress.bytes_read - offset) / max(now - began, 1e-9)
        left = (progress.bytes_total - progress.bytes_read) / max(pace, 1e-9)
        return f"{text}  {_duration(left)} left"


@etl_cli.command("run")
@click.option(
    "--source",
    "sources",
    multiple=True,
    type=click.Choice(SOURCES),
    help="Source to run; repeat for several. Default: all.",
)
@click.option(
    "--enqueue",
    is_flag=True,
    help="Queue the runs for the Celery workers and return at once (in-process without a broker).",
)
@click.option(
    "--at-start",
    is_flag=True,
    help="The run the app starts with (`make run`): local sources first, and a remote source "
    "that cannot connect is tried once and does not fail the command.",
)
def run_command(sources, enqueue, at_start):
    """Run the ETL for each source and print a summary; exit 1 if any source failed.

    On a terminal each source's read shows its progress as it goes. With ``--at-start`` the
    server waits for this command, so it waits only for what is at hand: an upstream that
    cannot be reached (no network, say) is said so in one line, and the next run tries again
    with the full retry policy.
    """
    if enqueue:
        _enqueue(sources or SOURCES)
        return
    names = list(sources or SOURCES)
    if at_start:
        names.sort(key=lambda name: not issubclass(SOURCES[name], CsvSource))  # local first
    failed = []
    with connect_attempts(START_CONNECT_ATTEMPTS) if at_start else nullcontext():
        for name in names:
            if not _run_one(name, at_start):
                failed.append(name)
    if failed:
        raise click.ClickException(f"failed: {', '.join(failed)}")


def _run_one(name: str, at_start: bool) -> bool:
    """Run one source and print its summary; return False if it failed (and counts as such)."""
    progress = ReadProgressBar(name) if sys.stdout.isatty() else None
    try:
        run = run_source(db.session, name, current_app.config, trigger="cli", progress=progress)
    except SourceBusy as busy:
        click.echo(f"{name:<14} run {busy.skipped_run_id:<5} SKIPPED  {busy}")
        return True
    unreachable = f"{UpstreamUnreachable.__name__}: "
    if at_start and (run.error or "").startswith(unreachable):
        detail = run.error.removeprefix(unreachable)
        click.echo(
            f"{name:<14} run {run.id:<5} {run.status:<8} {detail} at start; "
            "the next run tries again"
        )
        return True
    click.echo(f"{name:<14} run {run.id:<5} {run.status:<8} {_counts(run)} ({run.duration_ms} ms)")
    if run.error:
        click.echo(f"{'':<14} error: {run.error}")
    if pending := (run.details or {}).get("pending"):
        click.echo(f"{'':<14} waiting: line {pending['line']}: {pending['reason']}")
    return run.status != RunStatus.FAILED


def _enqueue(sources) -> None:
    for name in sources:
        try:
            run_id, task_id = dispatch_run(name, "cli")
        except BrokerUnavailable as exc:
            raise click.ClickException(str(exc)) from None
        except SourceBusy as busy:
            click.echo(f"{name:<14} run {busy.skipped_run_id:<5} SKIPPED  {busy}")
            continue
        click.echo(f"{name:<14} run {run_id:<5} queued as task {task_id}")


@etl_cli.command("status")
def status_command():
    """Print each source's last run and checkpoint."""
    _, last_runs = source_health(db.session)
    for name in SOURCES:
        run = last_runs.get(name)
        checkpoint = db.session.get(Checkpoint, name)
        state = (
            f"run {run.id} {run.status} at {run.finished_at or run.started_at:%Y-%m-%d %H:%M:%S}"
            if run
            else "never run"
        )
        click.echo(f"{name:<14} {state}")
        if run and run.status != RunStatus.RUNNING:
            click.echo(f"{'':<14} {_counts(run)}")
        if run and run.error:
            click.echo(f"{'':<14} error: {run.error}")
        cursor = json.dumps(checkpoint.cursor, sort_keys=True) if checkpoint else "none"
        click.echo(f"{'':<14} checkpoint: {cursor}")


@etl_cli.command("load-left-over")
def load_left_over_command():
    """Take up what an earlier version left (once, after upgrading).

    Raw rows it stored without loading are loaded; a file's checkpoint from before fingerprints
    gets its fingerprint.
    """
    failed = False
    for source in SOURCES:
        if fingerprint_checkpoint(db.session, source, current_app.config):
            click.echo(f"{source:<14} checkpoint fingerprinted")
        run = load_left_over(db.session, source, current_app.config)
        if run is None:
            click.echo(f"{source:<14} nothing left over")
            continue
        click.echo(f"{source:<14} {run.status}: {_counts(run)}")
        if run.error:
            click.echo(f"{'':<14} error: {run.error}")
        failed |= run.status == RunStatus.FAILED
    if failed:
        sys.exit(1)


@etl_cli.command("retention")
def retention_command():
    """Delete covered raw rows (and observations, if configured) past their age; print counts."""
    report = apply_retention(db.session, current_app.config)
    for source in SOURCES:
        if source in report.raw:
            click.echo(f"{source:<14} raw rows deleted: {report.raw[source]}")
        else:
            click.echo(f"{source:<14} raw rows kept: {raw_retention_setting(source)} is 0")
    if current_app.config["RETENTION_UNIFIED_DAYS"] > 0:
        click.echo(f"{'unified':<14} observations deleted: {report.unified}")
    for table, reason in report.deferred.items():
        click.echo(f"{table:<14} left for the next pass: {reason}")
