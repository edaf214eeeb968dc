"""The two stages of a run, as plain functions: extract into raw, then transform and upsert.

Each stage commits batch by batch. The transform moves the checkpoint in the same transaction as
the unified rows and rejections of its batch, so a crash anywhere leaves the checkpoint at or
behind the data, and the next run resumes from it.
"""

from collections.abc import Iterable, Iterator
from datetime import timedelta
from itertools import islice
from typing import Any, TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from kasparro.db_types import utcnow
from kasparro.etl.assets import AssetResolver, read_seed, upsert_assets
from kasparro.etl.drift import FieldMap
from kasparro.etl.faults import FailurePlan
from kasparro.etl.load import insert_raw, insert_rejections, upsert_unified
from kasparro.etl.parsing import InvalidValue, check_text, storable
from kasparro.etl.sources import get_source
from kasparro.etl.sources.base import Observation, Source
from kasparro.models import Checkpoint, EtlRun, RejectedRecord, UnifiedRecord

log = structlog.get_logger(__name__)
T = TypeVar("T")
ERROR_TEXT_LIMIT = 2000


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Yield lists of up to ``size`` items, reading ``items`` lazily."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class SourceBusy(RuntimeError):
    """The source already has a RUNNING run; this attempt was recorded as SKIPPED."""

    def __init__(self, source: str, running_run_id: int, skipped_run_id: int):
        super().__init__(f"{source} is already running as run {running_run_id}")
        self.source = source
        self.running_run_id = running_run_id
        self.skipped_run_id = skipped_run_id


def start_run(
    session: Session,
    source: str,
    trigger: str,
    settings: dict[str, Any],
    task_id: str | None = None,
) -> int:
    """Record a RUNNING run of ``source`` and return its id; raise SourceBusy if one is running.

    A unique index allows one RUNNING run per source, so two simultaneous starts cannot both
    win. A RUNNING run whose heartbeat is older than ``ETL_STALE_AFTER_SECONDS`` belongs to a
    process that died; it is closed as FAILED so that its lock does not outlive it.
    """
    get_source(source, {})  # an unknown source fails here, before a run is recorded
    _close_abandoned_run(session, source, settings["ETL_STALE_AFTER_SECONDS"])
    checkpoint = session.get(Checkpoint, source)
    now = utcnow()
    run = EtlRun(
        source=source,
        status="RUNNING",
        trigger=trigger,
        task_id=task_id,
        started_at=now,
        heartbeat_at=now,
        checkpoint_before=checkpoint.cursor if checkpoint else None,
    )
    session.add(run)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise _record_skipped(session, source, trigger, task_id) from None
    log.info("etl.run.started", run_id=run.id, source=source, trigger=trigger, task_id=task_id)
    return run.id


class RunAbandoned(RuntimeError):
    """A later run closed this one as abandoned; its work in flight must not be committed."""


def _hold(session: Session, run: EtlRun) -> None:
    """Move the run's heartbeat in the batch's transaction, or raise if it is no longer RUNNING.

    The conditional update takes the run's row lock, so it serialises with a later run that
    closes this one as abandoned: either this batch commits first, or it is rolled back.
    """
    beat = utcnow()
    held = session.execute(
        sa.update(EtlRun)
        .where(EtlRun.id == run.id, EtlRun.status == "RUNNING")
        .values(heartbeat_at=beat)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not held:
        raise RunAbandoned(f"run {run.id} was closed by a later run; this batch is discarded")
    run.heartbeat_at = beat


def _running_run(session: Session, source: str) -> EtlRun | None:
    return session.scalar(
        sa.select(EtlRun).where(EtlRun.source == source, EtlRun.status == "RUNNING")
    )


def _close_abandoned_run(session: Session, source: str, stale_after_seconds: int) -> None:
    running = _running_run(session, source)
    if running is None:
        return
    cutoff = utcnow() - timedelta(seconds=stale_after_seconds)
    last_sign = running.heartbeat_at or running.started_at
    if last_sign >= cutoff:
        return
    checkpoint = session.get(Checkpoint, source)
    # Only if it is still RUNNING and still silent: a run that finished or moved meanwhile
    # keeps its own account.
    closed = _finish(
        session,
        running,
        "FAILED",
        checkpoint.cursor if checkpoint else None,
        f"abandoned: no progress since {last_sign.isoformat()}",
        sa.func.coalesce(EtlRun.heartbeat_at, EtlRun.started_at) < cutoff,
    )
    if closed == "FAILED":
        log.warning("etl.run.abandoned", run_id=running.id, source=source)


def _record_skipped(session: Session, source: str, trigger: str, task_id: str | None):
    running = _running_run(session, source)
    running_id = running.id if running else 0  # 0: it finished between our insert and now
    now = utcnow()
    skipped = EtlRun(
        source=source,
        status="SKIPPED",
        trigger=trigger,
        task_id=task_id,
        started_at=now,
        finished_at=now,
        duration_ms=0,
        error=f"{source} is already running as run {running_id}",
    )
    session.add(skipped)
    session.commit()
    log.info("etl.run.skipped", run_id=skipped.id, source=source, running_run_id=running_id)
    return SourceBusy(source, running_id, skipped.id)


def extract(session: Session, run_id: int, settings: dict[str, Any]) -> dict[str, Any]:
    """Read the source past its checkpoint into its raw table; return what the transform needs."""
    run = session.get_one(EtlRun, run_id)
    source = get_source(run.source, settings)
    checkpoint = session.get(Checkpoint, run.source)
    transformed_up_to = checkpoint.last_raw_id if checkpoint else 0
    model = source.raw_model
    for batch in batched(source.read(session, checkpoint), settings["ETL_BATCH_SIZE"]):
        new_keys = insert_raw(session, model, batch, run_id)
        stored_keys = {row.record_key for row in batch} - new_keys
        if stored_keys:
            # Already stored and already transformed means the record has not changed.
            run.unchanged += session.scalar(
                sa.select(sa.func.count())
                .select_from(model)
                .where(model.record_key.in_(stored_keys), model.id <= transformed_up_to)
            )
        run.rows_read += len(batch)
        _hold(session, run)
        session.commit()
    context = source.context()
    _record_read(session, run, context)
    log.info("etl.extract.done", run_id=run_id, source=run.source, rows_read=run.rows_read)
    return {"run_id": run_id, "context": context}


def _record_read(session: Session, run: EtlRun, context: dict[str, Any]) -> None:
    """Put on the run what the read found: schema drift, and a record left waiting."""
    details = dict(run.details or {})
    events = FieldMap.from_dict(context.get("fields")).events
    for event in events:
        log.warning("etl.schema_drift", run_id=run.id, source=run.source, **event)
    if events:
        details["drift"] = events
    if pending := context.get("pending"):
        log.info("etl.extract.pending", run_id=run.id, source=run.source, **pending)
        details["pending"] = pending
    if details != (run.details or {}):
        run.details = details
        session.commit()


def transform_and_upsert(
    session: Session, run_id: int, context: dict[str, Any], settings: dict[str, Any]
) -> str:
    """Turn raw rows past the checkpoint into unified rows, batch by batch; finish the run."""
    run = session.get_one(EtlRun, run_id)
    source = get_source(run.source, settings)
    failure = FailurePlan.parse(settings["ETL_INJECT_FAILURE"])
    if failure:
        failure.check(run.source, "before_load")
        failure.check(run.source, "crash")
    checkpoint = session.get(Checkpoint, run.source) or Checkpoint(
        source=run.source, cursor={}, last_raw_id=0
    )
    model = source.raw_model
    resolver = None
    processed = 0
    while raws := session.scalars(
        sa.select(model)
        .where(model.id > checkpoint.last_raw_id)
        .order_by(model.id)
        .limit(settings["ETL_BATCH_SIZE"])
    ).all():
        if resolver is None:  # an unchanged source never gets here: it costs one query
            upsert_assets(session, read_seed(settings["ASSETS_SEED_PATH"]), origin="seed")
            resolver = AssetResolver.load(session)
        unified, rejections = _transform_batch(session, source, run, raws, context, resolver)
        processed += len(raws)
        if failure:
            failure.check(run.source, "after_rows", processed)
        counts = upsert_unified(session, unified)
        run.inserted += counts.inserted
        run.updated += counts.updated
        run.unchanged += counts.unchanged
        run.rejected += insert_rejections(session, rejections)
        for raw in raws:
            checkpoint.cursor = source.advance(checkpoint.cursor, raw, context)
        checkpoint.last_raw_id = raws[-1].id
        if unified:
            checkpoint.last_external_id = unified[-1]["external_id"]
        checkpoint.run_id = run_id
        checkpoint.updated_at = utcnow()
        session.add(checkpoint)
        _hold(session, run)
        if failure:
            failure.check(run.source, "on_commit")
        session.commit()
    _hold(session, run)
    incomplete = context.get("incomplete")
    status = "PARTIAL" if run.rejected or incomplete else "SUCCESS"
    return _finish(session, run, status, checkpoint.cursor, incomplete or "")


def _transform_batch(session, source: Source, run: EtlRun, raws, context, resolver):
    source.prepare(session, raws)
    duplicates = source.duplicates(session, raws)
    accepted: list[tuple[Any, list[Observation]]] = []
    rejections: list[dict[str, Any]] = []
    for raw in raws:
        try:
            if raw.id in duplicates:
                raise InvalidValue(duplicates[raw.id])
            observations = source.observations(raw, context)
            for observation in observations:
                check_storable(observation)
        except (ValueError, ArithmeticError) as exc:  # InvalidValue, or a parser's own error
            reason = str(exc) if isinstance(exc, InvalidValue) else f"unreadable value: {exc}"
            rejections.append(_rejection(source, run, raw, reason))
            continue
        accepted.append((raw, observations))
    # Only a record that loads vouches for a coin's identity.
    known = [asset for raw, _ in accepted for asset in source.known_assets(raw, context)]
    upsert_assets(session, known, origin="coingecko")
    for asset in known:
        resolver.add(asset.id, asset.symbol, asset.name)
    unified: list[dict[str, Any]] = []
    for raw, observations in accepted:
        for observation in observations:
            asset_id = resolver.resolve(observation)
            run.unresolved += asset_id is None
            unified.append(
                {
                    "source": run.source,
                    "external_id": observation.external_id,
                    "asset_id": asset_id,
                    "symbol": observation.symbol or resolver.symbol_of(asset_id),
                    "name": observation.name,
                    "metric": observation.metric,
                    "value": observation.value,
                    "currency": observation.currency,
                    "timestamp": observation.timestamp,
                    "run_id": run.id,
                    "raw_id": raw.id,
                }
            )
    return unified, rejections


def check_storable(observation: Observation) -> None:
    """Reject an observation whose text the unified table could not hold as given."""
    for label, value, column in (
        ("external id", observation.external_id, UnifiedRecord.external_id),
        ("name", observation.name, UnifiedRecord.name),
        ("symbol", observation.symbol, UnifiedRecord.symbol),
    ):
        check_text(label, value, column.type.length)


def _rejection(source: Source, run: EtlRun, raw, reason: str) -> dict[str, Any]:
    reference, text = source.describe(raw)
    return {
        "run_id": run.id,
        "source": run.source,
        "record_key": raw.record_key,
        "reference": storable(reference)[: RejectedRecord.reference.type.length],
        "raw_text": storable(text),
        "reason": storable(reason),
        "rejected_at": utcnow(),
    }


def _finish(
    session: Session,
    run: EtlRun,
    status: str,
    cursor: dict | None,
    error: str = "",
    *still: sa.ColumnElement[bool],
) -> str:
    """Close a RUNNING run and return its final status; a run already closed keeps its own.

    The update is conditional, so whoever closes a run second changes nothing: a run that
    finished while it was being closed as abandoned keeps its real status.
    """
    finished_at = utcnow()
    closed = session.execute(
        sa.update(EtlRun)
        .where(EtlRun.id == run.id, EtlRun.status == "RUNNING", *still)
        .values(
            status=status,
            error=error or None,
            finished_at=finished_at,
            duration_ms=int((finished_at - run.started_at).total_seconds() * 1000),
            checkpoint_after=cursor,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    if not closed:
        return run.status
    log.info(
        "etl.run.finished",
        run_id=run.id,
        source=run.source,
        status=status,
        rows_read=run.rows_read,
        inserted=run.inserted,
        updated=run.updated,
        unchanged=run.unchanged,
        rejected=run.rejected,
        unresolved=run.unresolved,
        duration_ms=run.duration_ms,
        error=run.error,
    )
    return status


def describe_error(exc: BaseException) -> str:
    """Return a short, secret-free account of why a run failed (no SQL, no traceback)."""
    if isinstance(exc, SQLAlchemyError):
        original = getattr(exc, "orig", None) or exc
        first_line = str(original).strip().splitlines()[0] if str(original).strip() else ""
        text = f"database error: {type(original).__name__}: {first_line}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:ERROR_TEXT_LIMIT]


def fail_run(session: Session, run_id: int, exc: BaseException) -> str:
    """Roll back the batch in flight and record the run as FAILED with the error."""
    session.rollback()
    run = session.get_one(EtlRun, run_id)
    if run.status != "RUNNING":  # already closed (as abandoned, say): keep that account
        return run.status
    checkpoint = session.get(Checkpoint, run.source)
    return _finish(
        session, run, "FAILED", checkpoint.cursor if checkpoint else None, describe_error(exc)
    )


def run_source(
    session: Session,
    source: str,
    settings: dict[str, Any],
    trigger: str = "cli",
    task_id: str | None = None,
) -> EtlRun:
    """Run one source end to end in this process and return its finished run.

    Raises SourceBusy, after recording a SKIPPED run, when the source is already running.
    """
    run_id = start_run(session, source, trigger, settings, task_id)
    try:
        extracted = extract(session, run_id, settings)
        transform_and_upsert(session, run_id, extracted["context"], settings)
    except Exception as exc:  # every failure is recorded on the run, never lost
        fail_run(session, run_id, exc)
    return session.get_one(EtlRun, run_id)
