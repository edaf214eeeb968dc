"""The tables: raw inputs, unified observations, assets, checkpoints, the run log, rejects."""

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kasparro.db_types import BigId, ExactDecimal, UTCDateTime, utcnow


class RunStatus(StrEnum):
    """Where a run stands; only a RUNNING run may change, and at most one per source."""

    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    PARTIAL = "PARTIAL"  # finished, with rejected rows or a read that stopped early
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"  # not started: the source was already running


RUN_TRIGGERS = ("schedule", "api", "cli", "reprocess")


class Base(DeclarativeBase):
    """The declarative base of every model; Flask-SQLAlchemy's ``db.Model`` is built on it."""


class EtlRun(Base):
    """One run of one source: its status, trigger, counts, checkpoints and error."""

    __tablename__ = "etl_runs"
    __table_args__ = (
        sa.Index("ix_etl_runs_source_id", "source", "id"),
        sa.Index("ix_etl_runs_status_id", "status", "id"),
        # At most one RUNNING run per source: the database refuses a second one atomically.
        sa.Index(
            "uq_etl_runs_one_running_per_source",
            "source",
            unique=True,
            postgresql_where=sa.text(f"status = '{RunStatus.RUNNING}'"),
            sqlite_where=sa.text(f"status = '{RunStatus.RUNNING}'"),
        ),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    source: Mapped[str] = mapped_column(sa.String(32))
    status: Mapped[str] = mapped_column(sa.String(16))
    trigger: Mapped[str] = mapped_column(sa.String(16))
    task_id: Mapped[str | None] = mapped_column(sa.String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int | None] = mapped_column(sa.Integer)
    rows_read: Mapped[int] = mapped_column(sa.Integer, default=0)
    inserted: Mapped[int] = mapped_column(sa.Integer, default=0)
    updated: Mapped[int] = mapped_column(sa.Integer, default=0)
    unchanged: Mapped[int] = mapped_column(sa.Integer, default=0)
    rejected: Mapped[int] = mapped_column(sa.Integer, default=0)
    unresolved: Mapped[int] = mapped_column(sa.Integer, default=0)
    checkpoint_before: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    checkpoint_after: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    error: Mapped[str | None] = mapped_column(sa.Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)


class Asset(Base):
    """A canonical coin identity, keyed by its CoinGecko-style id (``bitcoin``)."""

    __tablename__ = "assets"

    id: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    symbol: Mapped[str] = mapped_column(sa.String(50), index=True)
    name: Mapped[str] = mapped_column(sa.String(200), index=True)
    origin: Mapped[str] = mapped_column(sa.String(32))  # the source that vouched for it, or "seed"
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AssetAlias(Base):
    """A name or symbol an operator maps to an asset, so that observations using it resolve."""

    __tablename__ = "asset_aliases"
    __table_args__ = (sa.UniqueConstraint("kind", "alias", name="uq_asset_alias"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))  # "name" or "symbol"
    alias: Mapped[str] = mapped_column(sa.String(200))  # stripped and lower-cased
    asset_id: Mapped[str] = mapped_column(sa.ForeignKey("assets.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RawRecordMixin:
    """Columns every raw table shares: the run that first read it and a natural key."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("etl_runs.id"))
    record_key: Mapped[str] = mapped_column(sa.String(255), unique=True)
    payload: Mapped[Any] = mapped_column(sa.JSON)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RawApiRecord(RawRecordMixin, Base):
    """A coin object from /coins/markets, as received; keyed by coin id and last_updated."""

    __tablename__ = "raw_api_records"

    external_id: Mapped[str] = mapped_column(sa.String(200))
    source_updated_at: Mapped[str] = mapped_column(sa.String(64))


class CsvGeneration(Base):
    """One reading of a CSV file from its top: the header and field map its rows are read with.

    A file that is replaced or edited above the checkpoint is read again as a new generation;
    each generation number is used once per source, whatever happened in between.
    """

    __tablename__ = "csv_generations"

    source: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    generation: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    header: Mapped[list[str]] = mapped_column(sa.JSON)
    header_hash: Mapped[str] = mapped_column(sa.String(64))
    fields: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    encoding: Mapped[str] = mapped_column(sa.String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RawCsvRecordMixin(RawRecordMixin):
    """A CSV record exactly as read, with where it was in the file; keyed by generation and line.

    ``raw_text`` holds the record decoded in the generation's encoding, without its line ending.
    A record that cannot be text (not valid in that encoding, or holding a NUL byte) is kept in
    ``raw_bytes`` instead, byte for byte; a line over the length limit keeps only its first
    bytes there and is marked ``truncated``. ``prefix_hash`` fingerprints the file from its
    first byte to this record's end, so an edit above the checkpoint is noticed.
    """

    generation: Mapped[int] = mapped_column(sa.Integer)
    content_hash: Mapped[str] = mapped_column(sa.String(64), index=True)
    line_no: Mapped[int] = mapped_column(sa.Integer)
    start_offset: Mapped[int] = mapped_column(sa.BigInteger)
    end_offset: Mapped[int] = mapped_column(sa.BigInteger)
    raw_text: Mapped[str | None] = mapped_column(sa.Text)
    raw_bytes: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    truncated: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    prefix_hash: Mapped[str | None] = mapped_column(sa.String(64))


class RawCsvRecord(RawCsvRecordMixin, Base):
    """A row of the csv1 price feed."""

    __tablename__ = "raw_csv_records"


class RawCsv2Record(RawCsvRecordMixin, Base):
    """A row of the csv2 market feed."""

    __tablename__ = "raw_csv2_records"


class UnifiedRecord(Base):
    """One observation of one metric of one asset, from any source."""

    __tablename__ = "unified_records"
    __table_args__ = (
        sa.UniqueConstraint(
            "source", "external_id", "metric", "timestamp", name="uq_unified_observation"
        ),
        sa.Index("ix_unified_timestamp_id", "timestamp", "id"),
        sa.Index("ix_unified_source_timestamp_id", "source", "timestamp", "id"),
        sa.Index("ix_unified_asset_timestamp_id", "asset_id", "timestamp", "id"),
        sa.Index("ix_unified_symbol_timestamp_id", "symbol", "timestamp", "id"),
        sa.Index("ix_unified_metric_timestamp_id", "metric", "timestamp", "id"),
        # An asset's history and its latest value per metric and source.
        sa.Index("ix_unified_asset_metric_timestamp_id", "asset_id", "metric", "timestamp", "id"),
        # What did not resolve, grouped by what the source called it: only those rows are kept.
        sa.Index(
            "ix_unified_unresolved",
            "name",
            "symbol",
            sqlite_where=sa.text("asset_id IS NULL"),
            postgresql_where=sa.text("asset_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[str] = mapped_column(sa.String(32))
    external_id: Mapped[str] = mapped_column(sa.String(200))
    asset_id: Mapped[str | None] = mapped_column(sa.String(200))
    symbol: Mapped[str | None] = mapped_column(sa.String(50))
    name: Mapped[str | None] = mapped_column(sa.String(200))
    metric: Mapped[str] = mapped_column(sa.String(50))
    value: Mapped[Decimal] = mapped_column(ExactDecimal)
    currency: Mapped[str] = mapped_column(sa.String(10))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    ingested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("etl_runs.id"))
    raw_id: Mapped[int | None] = mapped_column(sa.BigInteger)


class Checkpoint(Base):
    """Where each source's next run starts; moved in the transaction of the rows it covers."""

    __tablename__ = "checkpoints"

    source: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    cursor: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    last_raw_id: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    last_external_id: Mapped[str | None] = mapped_column(sa.String(200))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    run_id: Mapped[int | None] = mapped_column(sa.ForeignKey("etl_runs.id"))


class RejectedRecord(Base):
    """An input row that failed validation, with its text and the reason.

    A rejection is about the record's content: ``content_key`` (``Source.content_keys``) is the
    same for the same record read again, in a later generation of its file, so it is recorded
    once; ``record_key`` is the raw record it was first rejected as.
    """

    __tablename__ = "rejected_records"
    __table_args__ = (
        sa.UniqueConstraint("source", "record_key", name="uq_rejected_source_key"),
        sa.UniqueConstraint("source", "content_key", name="uq_rejected_source_content"),
        sa.Index("ix_rejected_run_id", "run_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("etl_runs.id"))
    source: Mapped[str] = mapped_column(sa.String(32))
    record_key: Mapped[str] = mapped_column(sa.String(255))
    content_key: Mapped[str] = mapped_column(sa.String(255))
    reference: Mapped[str] = mapped_column(sa.String(255))
    raw_text: Mapped[str] = mapped_column(sa.Text)
    reason: Mapped[str] = mapped_column(sa.Text)
    rejected_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DataVersion(Base):
    """A counter per writer (a source's runs, retention), moved by every commit that writes.

    Their sum changes whenever anything the API serves may have: a response computed at one sum
    stays right until it moves (kasparro.routes.kept_answers).
    """

    __tablename__ = "data_versions"

    scope: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    version: Mapped[int] = mapped_column(sa.BigInteger, default=0)


# Maintained aggregates: kept exact by database triggers (migration 0006) in the statement that
# writes the rows they count, whoever writes them, so that no read has to count a whole table.


class UnifiedTotal(Base):
    """How many observations each source has of each metric, and how many of them are unresolved.

    Kept by triggers on ``unified_records``, in the statement that writes the rows.
    """

    __tablename__ = "unified_totals"

    source: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    metric: Mapped[str] = mapped_column(sa.String(50), primary_key=True)
    records: Mapped[int] = mapped_column(sa.BigInteger)
    unresolved: Mapped[int] = mapped_column(sa.BigInteger)


class UnifiedCount(Base):
    """How many observations of each asset each source has of each metric (resolved ones only).

    Kept by triggers on ``unified_records``, in the statement that writes the rows; keyed by asset
    first, so that the totals of one asset are one index range.
    """

    __tablename__ = "unified_counts"

    asset_id: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    source: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    metric: Mapped[str] = mapped_column(sa.String(50), primary_key=True)
    records: Mapped[int] = mapped_column(sa.BigInteger)


class RejectedCount(Base):
    """How many rejected records each source has; kept by triggers on ``rejected_records``."""

    __tablename__ = "rejected_counts"

    source: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    records: Mapped[int] = mapped_column(sa.BigInteger)


class RunSummary(Base):
    """Each source's run history in one row; kept by triggers on ``etl_runs``.

    ``last_run_id`` is the newest run that is not SKIPPED (a skipped attempt did no work: the run
    it collided with tells the state); a success is a SUCCESS or PARTIAL run.
    """

    __tablename__ = "run_summaries"

    source: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    records_processed: Mapped[int] = mapped_column(sa.BigInteger)
    last_run_id: Mapped[int | None] = mapped_column(sa.Integer)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    runs_running: Mapped[int] = mapped_column(sa.Integer)
    runs_success: Mapped[int] = mapped_column(sa.Integer)
    runs_partial: Mapped[int] = mapped_column(sa.Integer)
    runs_failed: Mapped[int] = mapped_column(sa.Integer)
    runs_skipped: Mapped[int] = mapped_column(sa.Integer)

    def run_counts(self) -> dict[str, int]:
        """Return how many runs the source has had in each status it has had."""
        counts = {status.value: getattr(self, f"runs_{status.lower()}") for status in RunStatus}
        return {status: count for status, count in counts.items() if count}


# The run summary's newest success and failure are found through this index, whatever the length
# of the run log.
sa.Index("ix_etl_runs_source_status_finished", EtlRun.source, EtlRun.status, EtlRun.finished_at)
