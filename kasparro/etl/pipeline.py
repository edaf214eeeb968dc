"""The two stages of a run, as plain functions: ``ingest``, then ``finish_run``.

``ingest`` reads the source and loads each batch as it reads it: the batch's raw rows, its
unified rows and rejections, and the checkpoint that covers them commit in one transaction, so
a crash anywhere leaves all of them or none, and the next run resumes from the checkpoint.
``finish_run`` closes the run with its status.

A caller that shows progress passes a ``progress`` callback: it gets a ``ReadProgress`` after
each batch, never per row, and once more when the read ends.
"""

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from kasparro.db_types import utcnow
from kasparro.etl import runs
from kasparro.etl.assets import AssetResolver, CurrentResolver, upsert_assets
from kasparro.etl.faults import FailurePlan
from kasparro.etl.load import insert_raw, insert_rejections, upsert_unified
from kasparro.etl.parsing import InvalidValue, check_text, storable
from kasparro.etl.read_ahead import read_ahead
from kasparro.etl.runs import fail_run, heartbeat_or_abandon, start_run
from kasparro.etl.sources import get_source
from kasparro.etl.sources.base import (
    Observation,
    RawRecord,
    RawRow,
    ReadReport,
    Source,
    StoredRaw,
)
from kasparro.etl.versions import record_change
from kasparro.models import Checkpoint, EtlRun, RejectedRecord, RunStatus, UnifiedRecord

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ReadProgress:
    """How far a run's read has got: rows read so far and, reading a file, bytes of its size."""

    source: str
    rows_read: int
    bytes_read: int | None = None  # the offset reached in the file
    bytes_total: int | None = None  # the file's size as it is now
    finished: bool = False  # the read has ended (or failed): nothing follows


ProgressCallback = Callable[[ReadProgress], None]


def _file_position(source: Source, batch: list[RawRow]) -> tuple[int | None, int | None]:
    """Return (offset reached, file size) after ``batch`` of a file source; (None, None) else."""
    offset = batch[-1].columns.get("end_offset")  # only a file's raw rows carry it
    if offset is None:
        return None, None
    return offset, max(offset, os.stat(source.path).st_size)  # the file may grow while read


def ingest(
    session: Session,
    run_id: int,
    settings: dict[str, Any],
    progress: ProgressCallback | None = None,
) -> ReadReport:
    """Read the source past what is stored, loading each batch as it is read; return the report.

    A batch's raw rows, its unified rows and rejections and the checkpoint that covers them
    commit in one transaction, from the rows in memory: nothing is read back. This is the one
    place a run builds its source and its loader.

    Raises LeftOverRows when raw rows an earlier version stored without loading wait: loading
    after them would move the checkpoint past them (``load_left_over`` loads them).
    """
    loader = BatchLoader.for_run(session, run_id, settings)
    run, source = loader.run, loader.source
    if raw_rows_wait(session, source.raw_model, loader.checkpoint.last_raw_id):
        raise LeftOverRows(
            f"raw rows of {run.source} stored by an earlier version wait to be loaded; "
            "load them first with `flask etl load-left-over`"
        )
    shown = ReadProgress(run.source, 0)
    try:
        with read_ahead(
            source.read(session, loader.checkpoint), settings["ETL_BATCH_SIZE"]
        ) as read:
            for batch in read:
                loader.store(batch)
                if progress:
                    position = _file_position(source, batch)
                    shown = ReadProgress(run.source, shown.rows_read + len(batch), *position)
                    progress(shown)
        if shown.bytes_total is not None and not source.report().pending:
            # Read to the end: what follows the last record (blank lines) was read too.
            shown = replace(shown, bytes_read=shown.bytes_total)
    finally:
        if progress:  # before the lines that follow the read, so a display can end its line
            progress(replace(shown, finished=True))
    report = source.report()
    _record_read(session, run, report)
    log.info("etl.ingest.done", run_id=run_id, source=run.source, rows_read=run.rows_read)
    return report


def _record_read(session: Session, run: EtlRun, report: ReadReport) -> None:
    """Put on the run what the read found: schema drift, and a record left waiting."""
    details = dict(run.details or {})
    events = report.fields.events
    for event in events:
        log.warning("etl.schema_drift", run_id=run.id, source=run.source, **event)
    if events:
        details["drift"] = events
    if report.pending:
        pending = asdict(report.pending)
        log.info("etl.ingest.pending", run_id=run.id, source=run.source, **pending)
        details["pending"] = pending
    if details != (run.details or {}):
        run.details = details
        record_change(session, run.source)
        session.commit()


def finish_run(
    session: Session, run_id: int, report: ReadReport, settings: dict[str, Any]
) -> RunStatus:
    """Close the run with its status: PARTIAL when it rejected records or stopped early."""
    run = session.get_one(EtlRun, run_id)
    checkpoint = session.get(Checkpoint, run.source)
    heartbeat_or_abandon(session, run)
    status = RunStatus.PARTIAL if run.rejected or report.incomplete else RunStatus.SUCCESS
    cursor = checkpoint.cursor if checkpoint else {}
    return runs.finish_run(session, run, status, cursor, report.incomplete)


class LeftOverRows(RuntimeError):
    """Raw rows an earlier version stored without loading wait to be loaded first."""


def raw_rows_wait(session: Session, model: type, covered: int) -> bool:
    """Return whether raw rows of ``model`` past the checkpoint's ``covered`` id are stored."""
    return session.scalar(sa.select(model.id).where(model.id > covered).limit(1)) is not None


class BatchLoader:
    """Loads batches of stored raw rows of one run: unified rows, rejections and checkpoint."""

    def __init__(self, session: Session, run: EtlRun, source: Source, settings: dict[str, Any]):
        self.session, self.run, self.source, self.settings = session, run, source, settings
        self.failure = FailurePlan.parse(settings["ETL_INJECT_FAILURE"])
        self.checkpoint = session.get(Checkpoint, run.source) or Checkpoint(
            source=run.source, cursor={}, last_raw_id=0
        )
        self.resolvers = CurrentResolver(settings["ASSETS_SEED_PATH"])
        self.processed = 0
        self.loaded_up_to = self.checkpoint.last_raw_id  # when the run began

    @classmethod
    def for_run(cls, session: Session, run_id: int, settings: dict[str, Any]) -> "BatchLoader":
        """Build the loader of run ``run_id``, and the source it reads."""
        run = session.get_one(EtlRun, run_id)
        return cls(session, run, get_source(run.source, settings), settings)

    def store(self, batch: list[RawRow]) -> None:
        """Store a batch as read and load its new records, in one transaction."""
        session, run, model = self.session, self.run, self.source.raw_model
        self.check_failure("before_load")
        new = insert_raw(session, model, batch, run.id)
        stored_keys = {row.record_key for row in batch} - set(new)
        if stored_keys:
            # Already stored and already loaded means the record has not changed.
            run.unchanged += session.scalar(
                sa.select(sa.func.count())
                .select_from(model)
                .where(model.record_key.in_(stored_keys), model.id <= self.loaded_up_to)
            )
        run.rows_read += len(batch)
        raws = sorted(
            (
                StoredRaw.of(raw_id, row)
                for row in batch
                if (raw_id := new.get(row.record_key)) is not None
            ),
            key=lambda raw: raw.id,
        )
        if raws:
            self.load(raws, self.source.report())
        else:
            heartbeat_or_abandon(session, run)
            session.commit()

    def check_failure(self, point: str) -> None:
        """Fail here if the run's failure plan says so (before anything is loaded: crash too)."""
        if self.failure and not self.processed:
            self.failure.check(self.run.source, point)
            self.failure.check(self.run.source, "crash")

    def load(self, raws: list[RawRecord], report: ReadReport) -> None:
        """Transform and upsert ``raws`` (in id order), move the checkpoint past them, commit."""
        session, run, source = self.session, self.run, self.source
        resolver = self.resolvers.get(session)  # an unchanged source never gets here
        unified, rejections = transform_batch(session, source, run, raws, report, resolver)
        self.processed += len(raws)
        if self.failure:
            self.failure.check(run.source, "after_rows", self.processed)
        counts = upsert_unified(session, unified)
        run.inserted += counts.inserted
        run.updated += counts.updated
        run.unchanged += counts.unchanged
        # Every record this run rejected counts, known already or not: the run's counts add up
        # to the rows it read. Only the new ones are stored, and counted by the database.
        insert_rejections(session, rejections)
        run.rejected += len(rejections)
        checkpoint = self.checkpoint
        checkpoint.cursor = source.advance(checkpoint.cursor, raws, report)
        checkpoint.last_raw_id = raws[-1].id
        if unified:
            checkpoint.last_external_id = unified[-1]["external_id"]
        checkpoint.run_id = run.id
        checkpoint.updated_at = utcnow()
        session.add(checkpoint)
        heartbeat_or_abandon(session, run)
        if self.failure:
            self.failure.check(run.source, "on_commit")
        session.commit()


def transform_batch(
    session: Session,
    source: Source,
    run: EtlRun,
    raws: list[RawRecord],
    report: ReadReport,
    resolver: AssetResolver,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Turn ``raws`` into unified rows and rejections; record the coins the accepted vouch for."""
    accepted, refused = _observe(session, source, raws, report)
    rejections = _rejections(session, source, run, refused)
    # Only a record that loads vouches for a coin's identity.
    known = [asset for raw, _ in accepted for asset in source.known_assets(raw, report)]
    upsert_assets(session, known, origin=source.name)
    for asset in known:
        resolver.add(asset.id, asset.symbol, asset.name)
    return _unified_rows(run, accepted, resolver), rejections


def _observe(
    session: Session, source: Source, raws: list[RawRecord], report: ReadReport
) -> tuple[list[tuple[RawRecord, list[Observation]]], list[tuple[RawRecord, str]]]:
    """Split ``raws`` into (raw, its observations) accepted and (raw, why) refused."""
    source.prepare(session, raws)
    duplicates = source.duplicates(session, raws)
    accepted: list[tuple[RawRecord, list[Observation]]] = []
    refused: list[tuple[RawRecord, str]] = []
    for raw in raws:
        try:
            if raw.id in duplicates:
                raise InvalidValue(duplicates[raw.id])
            observations = source.observations(raw, report)
            for observation in observations:
                check_storable(observation)
        except (ValueError, ArithmeticError) as exc:  # InvalidValue, or a parser's own error
            reason = str(exc) if isinstance(exc, InvalidValue) else f"unreadable value: {exc}"
            refused.append((raw, reason))
            continue
        accepted.append((raw, observations))
    return accepted, refused


def _unified_rows(
    run: EtlRun,
    accepted: list[tuple[RawRecord, list[Observation]]],
    resolver: AssetResolver,
) -> list[dict[str, Any]]:
    """Return the unified rows of the accepted observations; count those with no known coin."""
    unified: list[dict[str, Any]] = []
    unresolved = 0
    run_id, source_name = run.id, run.source  # a mapped attribute is slow to ask per row
    for raw, observations in accepted:
        for observation in observations:
            asset_id = resolver.resolve(observation)
            unresolved += asset_id is None
            unified.append(
                {
                    "source": source_name,
                    "external_id": observation.external_id,
                    "asset_id": asset_id,
                    "symbol": observation.symbol or resolver.symbol_of(asset_id),
                    "name": observation.name,
                    "metric": observation.metric,
                    "value": observation.value,
                    "currency": observation.currency,
                    "timestamp": observation.timestamp,
                    "run_id": run_id,
                    "raw_id": raw.id,
                }
            )
    run.unresolved += unresolved
    return unified


# The longest text each column holds, read once: a mapped attribute is slow to ask per row.
_TEXT_LIMITS = {
    name: UnifiedRecord.__table__.c[name].type.length for name in ("external_id", "name", "symbol")
}


def check_storable(observation: Observation) -> None:
    """Reject an observation whose text the unified table could not hold as given."""
    check_text("external id", observation.external_id, _TEXT_LIMITS["external_id"])
    check_text("name", observation.name, _TEXT_LIMITS["name"])
    check_text("symbol", observation.symbol, _TEXT_LIMITS["symbol"])


def _rejections(
    session: Session, source: Source, run: EtlRun, refused: list[tuple[RawRecord, str]]
) -> list[dict[str, Any]]:
    """Return the rejected_records rows of ``refused`` (raw, reason) records.

    Each carries its content key: a record read again, in a later generation of its file, has
    the key of its first reading, and its rejection is recorded once.
    """
    if not refused:
        return []
    keys = source.content_keys(session, [raw for raw, _ in refused])
    rejected_at = utcnow()
    rows = []
    for raw, reason in refused:
        reference, text = source.describe(raw)
        rows.append(
            {
                "run_id": run.id,
                "source": run.source,
                "record_key": raw.record_key,
                "content_key": keys[raw.id],
                "reference": storable(reference)[: RejectedRecord.reference.type.length],
                "raw_text": storable(text),
                "reason": storable(reason),
                "rejected_at": rejected_at,
            }
        )
    return rows


def run_source(
    session: Session,
    source: str,
    settings: dict[str, Any],
    trigger: str = "cli",
    task_id: str | None = None,
    progress: ProgressCallback | None = None,
) -> EtlRun:
    """Run one source end to end in this process and return its finished run.

    Every line logged meanwhile, by the pipeline or a library, carries the run id and source.
    Raises SourceBusy, after recording a SKIPPED run, when the source is already running.
    """
    run_id = start_run(session, source, trigger, settings, task_id)
    with structlog.contextvars.bound_contextvars(run_id=run_id, source=source):
        try:
            report = ingest(session, run_id, settings, progress)
            finish_run(session, run_id, report, settings)
        except Exception as exc:  # every failure is recorded on the run, never lost
            fail_run(session, run_id, exc)
    return session.get_one(EtlRun, run_id)
