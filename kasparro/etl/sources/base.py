"""The small interface every source implements, and the records that cross it."""

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kasparro.etl.drift import FieldMap
from kasparro.models import Checkpoint, RawRecordMixin
from kasparro.setting import Setting, source_run_settings

# Every source, by name (kasparro.etl.sources imports the modules that define them).
SOURCES: dict[str, type["Source"]] = {}


@dataclass(frozen=True)
class Observation:
    """One value of one metric, as a source states it."""

    external_id: str
    metric: str
    value: Decimal
    timestamp: datetime
    name: str | None = None
    symbol: str | None = None
    asset_hint: str | None = None
    currency: str = "USD"


@dataclass(frozen=True)
class KnownAsset:
    """A coin identity a source vouches for (CoinGecko's own id, symbol and name)."""

    id: str
    symbol: str
    name: str


@dataclass(frozen=True)
class Pending:
    """A record whose end is not written yet: it waits for a later run."""

    line: int
    bytes: int
    reason: str


@dataclass
class ReadReport:
    """What a read learned, handed from ``ingest`` to ``finish_run``.

    It crosses the task queue as JSON (``to_json``/``from_json``); in process it stays typed.
    """

    fields: FieldMap = field(default_factory=FieldMap)  # where each expected field was found
    incomplete: str = ""  # why the read stopped before the end; the run is then PARTIAL
    pending: Pending | None = None  # a record left waiting for its end

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready form, for the task queue."""
        return {
            "fields": self.fields.to_dict(),
            "incomplete": self.incomplete,
            "pending": asdict(self.pending) if self.pending else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ReadReport":
        """Rebuild a report that crossed the task queue."""
        pending = data.get("pending")
        return cls(
            fields=FieldMap.from_dict(data.get("fields")),
            incomplete=data.get("incomplete") or "",
            pending=Pending(**pending) if pending else None,
        )


@dataclass
class RawRow:
    """A record as read from the source, ready for its raw table."""

    record_key: str
    payload: Any
    columns: dict[str, Any] = field(default_factory=dict)


class RawRecord(Protocol):
    """A stored raw record, as a source turns it into observations.

    A row of the source's raw table read back (reprocessing), or a batch's record just stored
    (``StoredRaw``); a source reads its own columns (``line_no``, ``end_offset``…) by name.
    """

    id: int
    record_key: str
    payload: Any


@dataclass(frozen=True, slots=True)
class StoredRaw:
    """A record of a batch, as stored in its raw table under ``id``: the raw table's columns."""

    id: int
    record_key: str
    payload: Any
    columns: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, raw_id: int, row: RawRow) -> "StoredRaw":
        """Return ``row`` as stored under ``raw_id``."""
        return cls(raw_id, row.record_key, row.payload, row.columns)

    def __getattr__(self, name: str) -> Any:
        """Return the source's own column ``name`` (``line_no``, ``end_offset``…)."""
        if name == "columns":  # not set yet (while being built): not a column
            raise AttributeError(name)
        try:
            return self.columns[name]
        except KeyError:
            raise AttributeError(name) from None


class Source(ABC):
    """A feed: read records into its raw table, then turn raw records into observations.

    A subclass that names itself is a source: defining it registers it, and the rest of the
    product (the schedule, retention, settings, the API's filters) follows from what it declares.
    """

    name: ClassVar[str]
    raw_model: ClassVar[type[RawRecordMixin]]  # its raw table
    metrics: ClassVar[tuple[str, ...]]  # the metrics its observations carry
    schedule_seconds: ClassVar[int] = 600  # default of SCHEDULE_<NAME>_SECONDS
    raw_retention_days: ClassVar[int] = 0  # default of RETENTION_RAW_DAYS_<NAME>; 0 keeps all
    own_settings: ClassVar[tuple[Setting, ...]] = ()  # the settings only this source reads

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            return  # a shared base, such as CsvSource
        known = SOURCES.get(cls.name)
        if known and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"two sources are called {cls.name!r}")  # a reload is the same one
        SOURCES[cls.name] = cls
        # In name order, whatever order their modules load in.
        ordered = sorted(SOURCES.items())
        SOURCES.clear()
        SOURCES.update(ordered)

    def __init__(self, settings: dict[str, Any]):
        self.settings = settings

    @classmethod
    def declared_settings(cls) -> tuple[Setting, ...]:
        """Return every setting this source reads: its schedule and retention, then its own."""
        return (
            *source_run_settings(
                cls.name,
                schedule_seconds=cls.schedule_seconds,
                raw_retention_days=cls.raw_retention_days,
            ),
            *cls.own_settings,
        )

    @abstractmethod
    def read(self, session: Session, checkpoint: Checkpoint | None) -> Iterator[RawRow]:
        """Yield every record past what is stored already as a raw row, usable or not.

        The session may be used until the first record is yielded, not after: the rest of the
        read runs in another thread while batches load.
        """

    @abstractmethod
    def report(self) -> ReadReport:
        """Return what the transform needs to know about the read that just ended."""

    def stored_report(self, raws: list[RawRecord]) -> ReadReport:
        """Return what transforming stored ``raws`` again needs to know, without a read."""
        return ReadReport()

    @abstractmethod
    def observations(self, raw: RawRecord, report: ReadReport) -> list[Observation]:
        """Turn one raw record into observations; raise InvalidValue to reject it."""

    @abstractmethod
    def advance(self, cursor: dict[str, Any], raws: list[RawRecord], report: ReadReport) -> dict:
        """Return the cursor that covers a batch of ``raws`` (in id order) too."""

    @abstractmethod
    def describe(self, raw: RawRecord) -> tuple[str, str]:
        """Return where the record was (``line 7``) and its text, for a rejection."""

    @classmethod
    def states_anew(
        cls, stored: sa.ColumnElement[int], incoming: sa.ColumnElement[int]
    ) -> sa.ColumnElement[bool]:
        """Return whether raw row ``incoming`` may replace the observation raw row ``stored`` made.

        The order of a source's statements: it stores its raw rows in the order it states them,
        so an observation stands until a raw row stored no earlier restates it. An older
        statement that comes late (a reprocess going over older raw rows, a slower session)
        never writes over a newer one. An unknown raw row (NULL) orders before any other.
        """
        return sa.or_(stored.is_(None), incoming >= stored)

    def prepare(self, session: Session, raws: list[RawRecord]) -> None:
        """Load what turning ``raws`` into observations needs beyond the rows themselves."""
        return None  # most sources need nothing beyond the rows

    def content_keys(self, session: Session, raws: list[RawRecord]) -> dict[int, str]:
        """Return, by raw id, what identifies each record of ``raws`` by its content.

        A record read again has the key of its first reading, so its rejection is stored once.
        Most sources read a record once: its natural key is its content's.
        """
        return {raw.id: raw.record_key for raw in raws}

    def duplicates(self, session: Session, raws: list[RawRecord]) -> dict[int, str]:
        """Return, by raw id, the records in ``raws`` that repeat an earlier record, with why."""
        return {}

    def known_assets(self, raw: RawRecord, report: ReadReport) -> list[KnownAsset]:
        """Return the coin identities this record vouches for (only an authoritative source)."""
        return []
