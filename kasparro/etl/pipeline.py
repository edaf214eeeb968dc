"""The two stages of a run, as plain functions: extract into raw, then transform and upsert.

Each stage commits batch by batch. The transform moves the checkpoint in the same transaction as
the unified rows and rejections of its batch, so a crash anywhere leaves the checkpoint at or
behind the data, and the next run resumes from it.
"""

from collections.abc import Iterable, Iterator
from dataclasses import asdict
from itertools import islice
from typing import Any, TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from kasparro.db_types import utcnow
from kasparro.etl.assets import AssetResolver, read_seed, upsert_assets
from kasparro.etl.faults import FailurePlan
from kasparro.etl.load import insert_raw, insert_rejections, upsert_unified
from kasparro.etl.parsing import InvalidValue, check_text, storable
from kasparro.etl.runs import fail_run, finish_run, heartbeat_or_abandon, start_run
from kasparro.etl.sources import get_source
from kasparro.etl.sources.base import Observation, ReadReport, Source
from kasparro.etl.versions import record_change
from kasparro.models import Checkpoint, EtlRun, RejectedRecord, RunStatus, UnifiedRecord

log = structlog.get_logger(__name__)
T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Yield lists of up to ``size`` items, reading ``items`` lazily."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def extract(session: Session, run_id: int, settings: dict[str, Any]) -> ReadReport:
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
        heartbeat_or_abandon(session, run)
        session.commit()
    report = source.report()
    _record_read(session, run, report)
    log.info("etl.extract.done", run_id=run_id, source=run.source, rows_read=run.rows_read)
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
        log.info("etl.extract.pending", run_id=run.id, source=run.source, **pending)
        details["pending"] = pending
    if details != (run.details or {}):
        run.details = details
        record_change(session, run.source)
        session.commit()


def transform_and_upsert(
    session: Session, run_id: int, report: ReadReport, settings: dict[str, Any]
) -> RunStatus:
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
    # Plain rows, not ORM objects: a raw record is only read here, never changed.
    columns = source.raw_columns()
    while raws := session.execute(
        sa.select(*columns)
        .where(model.id > checkpoint.last_raw_id)
        .order_by(model.id)
        .limit(settings["ETL_BATCH_SIZE"])
    ).all():
        if resolver is None:  # an unchanged source never gets here: it costs one query
            upsert_assets(session, read_seed(settings["ASSETS_SEED_PATH"]), origin="seed")
            resolver = AssetResolver.load(session)
        unified, rejections = _transform_batch(session, source, run, raws, report, resolver)
        processed += len(raws)
        if failure:
            failure.check(run.source, "after_rows", processed)
        counts = upsert_unified(session, unified)
        run.inserted += counts.inserted
        run.updated += counts.updated
        run.unchanged += counts.unchanged
        run.rejected += insert_rejections(session, rejections)
        checkpoint.cursor = source.advance(checkpoint.cursor, raws, report)
        checkpoint.last_raw_id = raws[-1].id
        if unified:
            checkpoint.last_external_id = unified[-1]["external_id"]
        checkpoint.run_id = run_id
        checkpoint.updated_at = utcnow()
        session.add(checkpoint)
        heartbeat_or_abandon(session, run)
        if failure:
            failure.check(run.source, "on_commit")
        session.commit()
    heartbeat_or_abandon(session, run)
    status = RunStatus.PARTIAL if run.rejected or report.incomplete else RunStatus.SUCCESS
    return finish_run(session, run, status, checkpoint.cursor, report.incomplete)


def _transform_batch(
    session: Session,
    source: Source,
    run: EtlRun,
    raws: list[Any],
    report: ReadReport,
    resolver: AssetResolver,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    source.prepare(session, raws)
    accepted: list[tuple[Any, list[Observation]]] = []
    rejections: list[dict[str, Any]] = []
    for raw in raws:
        try:
            observations = source.observations(raw, report)
            for observation in observations:
                check_storable(observation)
        except (ValueError, ArithmeticError) as exc:  # InvalidValue, or a parser's own error
            reason = str(exc) if isinstance(exc, InvalidValue) else f"unreadable value: {exc}"
            rejections.append(_rejection(source, run, raw, reason))
            continue
        accepted.append((raw, observations))
    # Only a record that loads vouches for a coin's identity.
    known = [asset for raw, _ in accepted for asset in source.known_assets(raw, report)]
    upsert_assets(session, known, origin=source.name)
    for asset in known:
        resolver.add(asset.id, asset.symbol, asset.name)
    unified: list[dict[str, Any]] = []
    unresolved = 0
    for raw, observations in accepted:
        for observation in observations:
            asset_id = resolver.resolve(observation)
            unresolved += asset_id is None
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
    run.unresolved += unresolved
    return unified, rejections


# The longest text each column holds, read once: a mapped attribute is slow to ask per row.
_TEXT_LIMITS = {
    name: UnifiedRecord.__table__.c[name].type.length for name in ("external_id", "name", "symbol")
}


def check_storable(observation: Observation) -> None:
    """Reject an observation whose text the unified table could not hold as given."""
    check_text("external id", observation.external_id, _TEXT_LIMITS["external_id"])
    check_text("name", observation.name, _TEXT_LIMITS["name"])
    check_text("symbol", observation.symbol, _TEXT_LIMITS["symbol"])


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
        report = extract(session, run_id, settings)
        transform_and_upsert(session, run_id, report, settings)
    except Exception as exc:  # every failure is recorded on the run, never lost
        fail_run(session, run_id, exc)
    return session.get_one(EtlRun, run_id)
